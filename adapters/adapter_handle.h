// AdapterHandle: the public face of an adapter whose work lives in a shared implementation, so handlers
// still in flight keep it alive after stop(). Impl provides device_id(), start(), stop() and status().
#pragma once

#include <memory>
#include <string>

#include "adapters/adapter.h"

namespace cpd::adapters {

template <class Impl>
class AdapterHandle final : public Adapter {
 public:
  template <class Config>
  AdapterHandle(const Config& config, AdapterContext& ctx) : impl_(std::make_shared<Impl>(config, ctx)) {}
  ~AdapterHandle() override { impl_->stop(); }
  AdapterHandle(const AdapterHandle&) = delete;
  AdapterHandle& operator=(const AdapterHandle&) = delete;

  const std::string& device_id() const override { return impl_->device_id(); }
  void start() override { impl_->start(); }
  void stop() override { impl_->stop(); }
  nlohmann::json status() const override { return impl_->status(); }

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace cpd::adapters
