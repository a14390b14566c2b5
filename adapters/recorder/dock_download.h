// The download transport: one attempt at one dock file on a connection of its own. The request goes out,
// the answer's header is checked against the listing and the partial file, and the body is streamed into
// the partial file a chunk at a time (written and digested on the blocking pool), so memory per download
// stays at one chunk however large the file. Runs on the adapter's strand.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/media_sink.h"
#include "adapters/recorder/partial_file.h"
#include "daemon/core/status.h"

namespace cpd::adapters {

// How an attempt ended. Every end but kComplete has closed the connection.
struct DockDownloadEnd {
  enum class Kind {
    kComplete,      // every listed byte is in the partial file (not yet fsynced)
    kBroken,        // the transfer failed; what arrived stays in the partial file
    kCorrupt,       // bytes that cannot be the listed file (too many, wrong length)
    kDiskTrouble,   // the partial file could not be written
    kUnauthorized,  // HTTP 401
    kNotFound,      // HTTP 404
    kBadRange,      // a 206 answer that does not continue the partial file
    kHttpStatus,    // any other HTTP status
  };
  Kind kind = Kind::kComplete;
  unsigned status = 0;         // the answer's HTTP status; 0 when no header was read
  std::string why;             // kBroken, kCorrupt: what happened; kBadRange: the Content-Range as sent
  Status disk = Status::ok();  // kDiskTrouble
  bool got_bytes = false;      // bytes of the body arrived in this attempt
};

class DockDownload : public std::enable_shared_from_this<DockDownload> {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  using Request = boost::beast::http::request<boost::beast::http::empty_body>;
  using Done = std::function<void(DockDownloadEnd)>;
  struct Timeouts {
    std::chrono::seconds request;  // connect, send and the answer's header
    std::chrono::seconds idle;     // a piece of the body
  };

  // `partial` is open; `length` is the listed size.
  DockDownload(Strand& strand, boost::asio::thread_pool& blocking, MediaSink& media,
               std::shared_ptr<PartialFile> partial, std::int64_t length, Timeouts timeouts);

  // Resolves and connects to host:port, sends `request` (with Range when it asks for the rest of the partial
  // file) and reads the answer; `done` runs once, on the strand, unless abort() comes first.
  void start(const std::string& host, std::uint16_t port, Request request, Done done);
  // Closes the connection; `done` is not called after it.
  void abort();

 private:
  void arm_timer(std::chrono::seconds after);
  void disarm_timer();
  void connect(const boost::asio::ip::tcp::resolver::results_type& results);
  void send();
  void on_header(const boost::system::error_code& ec);
  void on_ok_header();
  void truncate_then_read();
  void read_body();
  void read_raw();
  void on_raw(boost::system::error_code ec, std::size_t n);
  void on_body(boost::system::error_code ec);
  // After each piece: too many bytes, the end, a failure, a full chunk, or the next read.
  void after_piece(boost::system::error_code ec, bool body_complete);
  void body_failed(boost::system::error_code ec);
  void body_done();
  void flush(std::function<void()> next);
  void end(DockDownloadEnd e);
  void fail(DockDownloadEnd::Kind kind, std::string why);

  Strand strand_;  // a copy: the same strand, whatever happens to the adapter
  boost::asio::thread_pool& blocking_;
  MediaSink& media_;
  std::shared_ptr<PartialFile> partial_;
  std::int64_t length_ = 0;
  Timeouts timeouts_;
  Done done_;

  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  std::uint64_t timer_seq_ = 0;
  bool timed_out_ = false;
  bool finished_ = false;
  boost::beast::flat_buffer buffer_;
  Request req_;
  std::optional<boost::beast::http::response_parser<boost::beast::http::buffer_body>> parser_;
  std::vector<char> chunk_;
  std::size_t filled_ = 0;  // bytes in chunk_ not yet written
  // Content-Length bodies are read straight from the socket, a chunk at a time (Beast's parser would
  // complete once per socket read: thousands of handler round trips per second for a fast station).
  bool raw_ = false;
  std::int64_t body_left_ = 0;  // raw: bytes of this response's body still to read
  std::int64_t received_ = 0;   // bytes of the file on disk plus in chunk_
  unsigned status_ = 0;
  bool got_bytes_ = false;
};

}  // namespace cpd::adapters
