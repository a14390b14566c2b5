// The download transport (dock_download.h): resolve, connect, GET, header checks, and the body streamed to
// the partial file. Every completion checks finished_ first: abort() ends the attempt for good.
#include "adapters/recorder/dock_download.h"

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <limits>
#include <utility>

#include "adapters/recorder/dock_protocol.h"

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

constexpr std::size_t kChunkBytes = 512 * 1024;     // one download's body buffer
constexpr std::size_t kRawPieceBytes = 256 * 1024;  // one socket read completion in raw body mode

std::string str(boost::beast::string_view s) {
  return std::string(s.data(), s.size());
}

}  // namespace

DockDownload::DockDownload(Strand& strand, asio::thread_pool& blocking, MediaSink& media,
                           std::shared_ptr<PartialFile> partial, std::int64_t length, Timeouts timeouts)
    : strand_(strand),
      blocking_(blocking),
      media_(media),
      partial_(std::move(partial)),
      length_(length),
      timeouts_(timeouts),
      resolver_(strand),
      socket_(strand),
      timer_(strand),
      received_(partial_->bytes()) {}

void DockDownload::abort() {
  finished_ = true;
  done_ = nullptr;  // it holds the adapter
  error_code ignored;
  resolver_.cancel();
  socket_.close(ignored);
  timer_.cancel();
}

void DockDownload::end(DockDownloadEnd e) {
  const Done done = std::move(done_);
  done_ = nullptr;
  if (e.kind != DockDownloadEnd::Kind::kComplete) {
    abort();
  }
  e.status = status_;
  e.got_bytes = got_bytes_;
  done(std::move(e));
}

void DockDownload::fail(DockDownloadEnd::Kind kind, std::string why) {
  DockDownloadEnd e;
  e.kind = kind;
  e.why = std::move(why);
  end(std::move(e));
}

void DockDownload::arm_timer(std::chrono::seconds after) {
  const std::uint64_t seq = ++timer_seq_;
  timer_.expires_after(after);
  timer_.async_wait([self = shared_from_this(), seq](const error_code& ec) {
    if (ec || seq != self->timer_seq_ || self->finished_) {
      return;
    }
    self->timed_out_ = true;
    error_code ignored;
    self->resolver_.cancel();
    self->socket_.close(ignored);
  });
}

void DockDownload::disarm_timer() {
  ++timer_seq_;
  timer_.cancel();
}

void DockDownload::start(const std::string& host, std::uint16_t port, Request request, Done done) {
  req_ = std::move(request);
  done_ = std::move(done);
  arm_timer(timeouts_.request);
  resolver_.async_resolve(
      host, std::to_string(port),
      [self = shared_from_this()](const error_code& ec, const tcp::resolver::results_type& r) {
        if (self->finished_) {
          return;
        }
        if (ec) {
          self->fail(DockDownloadEnd::Kind::kBroken, "resolve failed: " + ec.message());
          return;
        }
        self->connect(r);
      });
}

void DockDownload::connect(const tcp::resolver::results_type& results) {
  asio::async_connect(socket_, results,
                      [self = shared_from_this()](const error_code& ec, const tcp::endpoint&) {
                        if (self->finished_) {
                          return;
                        }
                        if (ec) {
                          self->fail(DockDownloadEnd::Kind::kBroken, "connect failed: " + ec.message());
                          return;
                        }
                        self->send();
                      });
}

void DockDownload::send() {
  http::async_write(socket_, req_, [self = shared_from_this()](const error_code& ec, std::size_t) {
    if (self->finished_) {
      return;
    }
    if (ec) {
      self->fail(DockDownloadEnd::Kind::kBroken, "write failed: " + ec.message());
      return;
    }
    self->parser_.emplace();
    self->parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // files of 4 GB and more
    self->raw_ = false;
    http::async_read_header(self->socket_, self->buffer_, *self->parser_,
                            [self](const error_code& re, std::size_t) { self->on_header(re); });
  });
}

void DockDownload::on_header(const error_code& ec) {
  if (finished_) {
    return;
  }
  if (ec) {
    fail(DockDownloadEnd::Kind::kBroken,
         timed_out_ ? "no answer within " + std::to_string(timeouts_.request.count()) + " s"
                    : "read failed: " + ec.message());
    return;
  }
  const auto& res = parser_->get();
  status_ = res.result_int();
  const std::int64_t from = partial_->bytes();
  const auto content_length = parser_->content_length();
  if (status_ == 401) {
    fail(DockDownloadEnd::Kind::kUnauthorized, {});
    return;
  }
  if (status_ == 404) {
    fail(DockDownloadEnd::Kind::kNotFound, {});
    return;
  }
  if (status_ == 206 && from > 0) {
    const std::string sent = str(res[http::field::content_range]);
    const auto range = parse_content_range(sent);
    const bool range_ok = range && range->from == from && range->to == length_ - 1 && range->total == length_;
    const bool length_ok = !content_length || static_cast<std::int64_t>(*content_length) == length_ - from;
    if (!range_ok || !length_ok) {
      fail(DockDownloadEnd::Kind::kBadRange, sent);
      return;
    }
    read_body();
    return;
  }
  if (status_ == 200) {
    on_ok_header();
    return;
  }
  fail(DockDownloadEnd::Kind::kHttpStatus, "download answered HTTP " + std::to_string(status_));
}

void DockDownload::on_ok_header() {
  const auto content_length = parser_->content_length();
  if (content_length && static_cast<std::int64_t>(*content_length) != length_) {
    fail(DockDownloadEnd::Kind::kCorrupt, "station sends " + std::to_string(*content_length) +
                                              " bytes for a file listed with " + std::to_string(length_));
    return;
  }
  if (partial_->bytes() > 0) {
    truncate_then_read();  // the station ignored the Range: start the file over
    return;
  }
  read_body();
}

// The partial file is cut to nothing (blocking) and the body read from the first byte.
void DockDownload::truncate_then_read() {
  disarm_timer();
  asio::post(blocking_, [self = shared_from_this()] {
    Status s = self->partial_->truncate_all();
    asio::post(self->strand_, [self, s = std::move(s)] {
      if (self->finished_) {
        return;
      }
      if (!s.is_ok()) {
        DockDownloadEnd e;
        e.kind = DockDownloadEnd::Kind::kDiskTrouble;
        e.disk = s;
        self->end(std::move(e));
        return;
      }
      self->received_ = 0;
      self->read_body();
    });
  });
}

void DockDownload::read_body() {
  if (chunk_.empty()) {
    chunk_.resize(kChunkBytes);
  }
  if (!raw_ && parser_->content_length() && !parser_->chunked()) {
    raw_ = true;
    body_left_ = static_cast<std::int64_t>(*parser_->content_length());
  }
  if (raw_) {
    read_raw();
    return;
  }
  auto& body = parser_->get().body();
  body.data = chunk_.data() + filled_;
  body.size = chunk_.size() - filled_;
  body.more = true;
  arm_timer(timeouts_.idle);
  http::async_read_some(socket_, buffer_, *parser_,
                        [self = shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
}

// Raw body: first what Beast buffered behind the header, then whole pieces of the chunk from the socket.
void DockDownload::read_raw() {
  const std::size_t room = chunk_.size() - filled_;
  const auto left = static_cast<std::size_t>(body_left_);
  if (buffer_.size() > 0) {
    const std::size_t n = std::min({buffer_.size(), room, left});
    asio::buffer_copy(asio::buffer(chunk_.data() + filled_, n), buffer_.data());
    buffer_.consume(n);
    on_raw({}, n);
    return;
  }
  // A piece of at most kRawPieceBytes must arrive within the idle timeout (>= 4 KB/s at the defaults).
  const std::size_t want = std::min({room, left, kRawPieceBytes});
  arm_timer(timeouts_.idle);
  asio::async_read(socket_, asio::buffer(chunk_.data() + filled_, want),
                   [self = shared_from_this()](error_code ec, std::size_t n) { self->on_raw(ec, n); });
}

void DockDownload::on_raw(error_code ec, std::size_t n) {
  if (finished_) {
    return;
  }
  filled_ += n;
  received_ += static_cast<std::int64_t>(n);
  body_left_ -= static_cast<std::int64_t>(n);
  if (n > 0) {
    got_bytes_ = true;
  }
  after_piece(ec, body_left_ == 0);
}

void DockDownload::on_body(error_code ec) {
  if (finished_) {
    return;
  }
  const std::size_t asked = chunk_.size() - filled_;
  const std::size_t n = asked - parser_->get().body().size;
  filled_ += n;
  received_ += static_cast<std::int64_t>(n);
  if (n > 0) {
    got_bytes_ = true;
  }
  if (ec == http::error::need_buffer) {
    ec = {};
  }
  after_piece(ec, parser_->is_done());
}

void DockDownload::after_piece(error_code ec, bool body_complete) {
  if (received_ > length_) {
    fail(DockDownloadEnd::Kind::kCorrupt,
         "station sent more than the listed " + std::to_string(length_) + " bytes");
    return;
  }
  if (ec) {
    body_failed(ec);
    return;
  }
  if (body_complete) {
    body_done();
    return;
  }
  if (filled_ == chunk_.size()) {
    flush([self = shared_from_this()] { self->read_body(); });
    return;
  }
  read_body();
}

void DockDownload::body_failed(error_code ec) {
  const std::string why = timed_out_ ? "no bytes for " + std::to_string(timeouts_.idle.count()) + " s"
                                     : (ec == http::error::partial_message || ec == asio::error::eof ||
                                                ec == http::error::end_of_stream
                                            ? std::string("connection closed early")
                                            : "read failed: " + ec.message());
  flush([self = shared_from_this(), why] { self->fail(DockDownloadEnd::Kind::kBroken, why); });
}

void DockDownload::body_done() {
  flush([self = shared_from_this()] {
    if (self->partial_->bytes() != self->length_) {
      self->fail(DockDownloadEnd::Kind::kCorrupt, "transfer ended after " +
                                                      std::to_string(self->partial_->bytes()) + " of " +
                                                      std::to_string(self->length_) + " bytes");
      return;
    }
    error_code ignored;
    self->socket_.close(ignored);
    self->disarm_timer();
    self->end({});
  });
}

// Writes and digests the filled chunk on the blocking pool; `next` runs on the strand after it.
void DockDownload::flush(std::function<void()> next) {
  disarm_timer();
  if (filled_ == 0) {
    next();
    return;
  }
  asio::post(blocking_, [self = shared_from_this(), next = std::move(next)]() mutable {
    // The media reserve keeps the disk's last space for evidence records: a recording waits for room.
    Status s = self->media_.check_space(self->filled_);
    if (s.is_ok()) {
      s = self->partial_->append(self->chunk_.data(), self->filled_);
    }
    asio::post(self->strand_, [self, s = std::move(s), next = std::move(next)] {
      if (self->finished_) {
        return;
      }
      self->filled_ = 0;
      if (!s.is_ok()) {
        self->received_ = self->partial_->bytes();
        DockDownloadEnd e;
        e.kind = DockDownloadEnd::Kind::kDiskTrouble;
        e.disk = s;
        self->end(std::move(e));
        return;
      }
      next();
    });
  });
}

}  // namespace cpd::adapters
