// Owning handles for the libcrypto objects the core uses (internal to daemon/core).
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>

#include <memory>

namespace cpd::ossl {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

}  // namespace cpd::ossl
