// ControlServer: accepts checkpointctl connections on a unix socket and answers status/tail requests on
// one strand; tail clients get bounded queues so a stuck reader costs the daemon at most tail_queue_bytes,
// and a request client that does not read its answers is not read from either (reply_queue_bytes).
#include "daemon/control/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_map>
#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::control {

namespace asio = boost::asio;
using nlohmann::json;
using Stream = asio::local::stream_protocol;
using Strand = asio::strand<asio::io_context::executor_type>;
using Line = std::shared_ptr<const std::string>;

namespace {

// Device text ends up in status snapshots: invalid UTF-8 is replaced rather than failing the reply.
std::string to_line(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Line error_line(const std::string& message) {
  return std::make_shared<const std::string>(to_line({{"error", message}}));
}

// type and time_ms from the JWS payload, for records handed over without them.
void fill_from_jws(TailRecord& rec) {
  const auto first = rec.jws.find('.');
  const auto second = first == std::string::npos ? std::string::npos : rec.jws.find('.', first + 1);
  if (second == std::string::npos) {
    return;
  }
  const auto payload = base64url_decode(std::string_view(rec.jws).substr(first + 1, second - first - 1));
  if (!payload) {
    return;
  }
  const json body = json::parse(*payload, nullptr, false);
  if (!body.is_object()) {
    return;
  }
  if (rec.type.empty()) {
    if (auto it = body.find("type"); it != body.end() && it->is_string()) {
      rec.type = it->get<std::string>();
    }
  }
  if (rec.time_ms == 0) {
    if (auto it = body.find("time_ms"); it != body.end() && it->is_number_integer()) {
      rec.time_ms = it->get<std::int64_t>();
    }
  }
}

std::string errno_text(int err) {
  return std::strerror(err);
}

}  // namespace

class ControlServer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  std::map<std::string, CommandHandler> commands_;  // set before start(); read on the strand
  Impl(asio::io_context& io, std::string path, StatusProvider provider, ControlLimits limits)
      : strand_(asio::make_strand(io)),
        acceptor_(strand_),
        retry_timer_(strand_),
        path_(std::move(path)),
        provider_(std::move(provider)),
        limits_(limits) {}

  Status start();
  void stop();
  void publish(std::vector<TailRecord> records);

  std::atomic<std::size_t> clients_{0};
  std::atomic<std::size_t> tailers_{0};
  std::atomic<std::size_t> queued_bytes_{0};  // all sessions' out_bytes_

 private:
  class Session;
  friend class Session;

  Status prepare_path();
  void accept();
  void on_accepted(Stream::socket socket);
  void remove(Session* s) {
    if (sessions_.erase(s) > 0) {
      clients_.fetch_sub(1);
    }
  }

  Strand strand_;
  Stream::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  std::string path_;
  StatusProvider provider_;
  ControlLimits limits_;
  std::atomic<bool> stopped_{false};
  bool created_ = false;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;  // strand only
};

// One client connection. Alive while it has an operation pending (each handler holds it).
class ControlServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Impl> owner, Stream::socket socket)
      : owner_(std::move(owner)), socket_(std::move(socket)), timer_(owner_->strand_) {}

  void start() {
    last_request_ = std::chrono::steady_clock::now();
    arm_idle();
    read_request();
  }

  // When a request was last read (or the connection accepted): the longest idle one makes room.
  std::chrono::steady_clock::time_point last_request() const { return last_request_; }

  // Closed to make room for a new connection: told why when its socket can take the line now.
  void evict(const std::string& why) {
    owner_->remove(this);
    if (out_.empty()) {
      send(error_line(why));
      close_after_write();
    } else {
      close();  // it is not reading what it has already: one more line would not reach it either
    }
  }

  // Answers a connection over the client limit and closes it.
  void reject(const std::string& why) {
    send(error_line(why));
    close_after_write();
  }

  bool tailing() const { return tailing_ && !closed_; }

  // A committed record for a tail client: queued, or the client is cut off when too far behind.
  void push(const Line& line) {
    if (too_slow_ || closed_) {
      return;
    }
    if (out_bytes_ + line->size() <= owner_->limits_.tail_queue_bytes) {
      send(line);
      return;
    }
    too_slow_ = true;
    // Keep only the line being written (its buffer is in use); everything queued behind it is dropped.
    const std::size_t keep = writing_ ? 1 : 0;
    std::uint64_t skipped = 1;  // the record that did not fit
    while (out_.size() > keep) {
      dequeued(out_.back()->size());
      out_.pop_back();
      ++skipped;
    }
    log::warn("control", "",
              "tail client too slow: " + std::to_string(skipped) + " records skipped, closing it");
    send(error_line("too slow, " + std::to_string(skipped) + " records skipped"));
    close_after_write();
  }

  void close() {
    if (closed_) {
      return;
    }
    closed_ = true;
    // Counters first: whoever sees the connection end also sees the counts updated.
    if (tailing_) {
      owner_->tailers_.fetch_sub(1);
    }
    owner_->remove(this);
    boost::system::error_code ignored;
    socket_.shutdown(Stream::socket::shutdown_both, ignored);
    socket_.close(ignored);
    timer_.cancel();
    // Written or not, the queue is no longer held for anyone (the line being written is freed with the
    // write's completion).
    owner_->queued_bytes_.fetch_sub(out_bytes_);
    out_bytes_ = 0;
  }

 private:
  void arm_idle() {
    timer_.expires_after(owner_->limits_.idle_timeout);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec && !self->tailing_) {
        self->close();
      }
    });
  }

  void read_request() {
    asio::async_read_until(socket_, asio::dynamic_buffer(in_, owner_->limits_.max_request_bytes), '\n',
                           [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                             self->on_request(ec, n);
                           });
  }

  void on_request(boost::system::error_code ec, std::size_t n) {
    if (closed_) {
      return;
    }
    if (ec == asio::error::not_found) {
      send(error_line("request too long (limit " + std::to_string(owner_->limits_.max_request_bytes) +
                      " bytes)"));
      close_after_write();
      return;
    }
    if (ec) {
      close();
      return;
    }
    last_request_ = std::chrono::steady_clock::now();
    std::string line = in_.substr(0, n - 1);
    in_.erase(0, n);
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    const json req = json::parse(line, nullptr, false);
    const std::string cmd = (req.is_object() && req.contains("cmd") && req["cmd"].is_string())
                                ? req["cmd"].get<std::string>()
                                : std::string();
    if (cmd == "status") {
      json snapshot;
      try {
        snapshot = owner_->provider_ ? owner_->provider_() : json::object();
      } catch (const std::exception& e) {
        snapshot = {{"error", std::string("status unavailable: ") + e.what()}};
      }
      send(std::make_shared<const std::string>(to_line(snapshot)));
    } else if (cmd == "tail") {
      tailing_ = true;
      owner_->tailers_.fetch_add(1);
      timer_.cancel();
      // The acknowledgement tells the client that every record committed from now on will reach it.
      send(std::make_shared<const std::string>(to_line({{"tail", "started"}})));
      discard_input();
      return;
    } else if (const auto handler = owner_->commands_.find(cmd); handler != owner_->commands_.end()) {
      // A command answered later (it may change the daemon): no further request is read from this client
      // until the answer is queued; the reply may come from any thread.
      timer_.cancel();
      auto reply = [self = shared_from_this()](json answer) {
        asio::post(self->owner_->strand_, [self, answer = std::move(answer)] {
          if (self->closed_) {
            return;
          }
          self->send(std::make_shared<const std::string>(to_line(answer)));
          self->arm_idle();
          self->read_next_request();
        });
      };
      try {
        handler->second(req, reply);
      } catch (const std::exception& e) {
        reply(json{{"error", cmd + " failed: " + e.what()}});
      }
      return;
    } else if (req.is_discarded()) {
      send(error_line("bad request: not JSON; send {\"cmd\":\"status\"} or {\"cmd\":\"tail\"}"));
    } else if (cmd.empty()) {
      send(error_line("bad request: no \"cmd\"; send {\"cmd\":\"status\"} or {\"cmd\":\"tail\"}"));
    } else {
      std::string known = "status, tail";
      for (const auto& [name, h] : owner_->commands_) {
        known += ", " + name;
      }
      send(error_line("unknown cmd '" + cmd + "' (known: " + known + ")"));
    }
    arm_idle();
    read_next_request();
  }

  // Back-pressure: a client that pipelines requests without reading the answers is not read from while
  // reply_queue_bytes of answers wait for it; its requests wait in the socket and then its writes block.
  // Reading resumes when the queue has drained below the bound (see write_next).
  void read_next_request() {
    if (out_bytes_ >= owner_->limits_.reply_queue_bytes) {
      read_paused_ = true;
      return;
    }
    read_paused_ = false;
    read_request();
  }

  // A tail client has nothing more to say; reading still notices when it goes away.
  void discard_input() {
    socket_.async_read_some(asio::buffer(sink_),
                            [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                              if (ec) {
                                self->close();
                              } else if (!self->closed_) {
                                self->discard_input();
                              }
                            });
  }

  void send(Line line) {
    if (closed_) {
      return;
    }
    out_bytes_ += line->size();
    owner_->queued_bytes_.fetch_add(line->size());
    out_.push_back(std::move(line));
    if (!writing_) {
      write_next();
    }
  }

  void write_next() {
    if (closed_) {
      return;
    }
    if (out_.empty()) {
      writing_ = false;
      if (close_when_written_) {
        close();
      }
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(*out_.front()),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                        if (self->closed_) {
                          return;
                        }
                        if (ec) {
                          self->close();
                          return;
                        }
                        self->dequeued(self->out_.front()->size());
                        self->out_.pop_front();
                        if (self->read_paused_ && !self->close_when_written_ &&
                            self->out_bytes_ < self->owner_->limits_.reply_queue_bytes) {
                          self->read_next_request();
                        }
                        self->write_next();
                      });
  }

  void dequeued(std::size_t bytes) {
    out_bytes_ -= bytes;
    owner_->queued_bytes_.fetch_sub(bytes);
  }

  // Closes once the queue is written, or after the grace period if the client does not read it.
  void close_after_write() {
    close_when_written_ = true;
    if (!writing_ && out_.empty()) {
      close();
      return;
    }
    timer_.expires_after(owner_->limits_.slow_close_grace);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) {
        self->close();
      }
    });
  }

  std::shared_ptr<Impl> owner_;
  Stream::socket socket_;
  asio::steady_timer timer_;  // idle timeout, then (closing) the grace period
  std::string in_;
  std::array<char, 512> sink_{};
  std::deque<Line> out_;
  std::size_t out_bytes_ = 0;
  std::chrono::steady_clock::time_point last_request_{};
  bool read_paused_ = false;  // not reading requests until the answers queued have been taken
  bool writing_ = false;
  bool tailing_ = false;
  bool too_slow_ = false;
  bool close_when_written_ = false;
  bool closed_ = false;
};

Status ControlServer::Impl::prepare_path() {
  if (path_.empty()) {
    return Status::fail("control socket path is empty");
  }
  if (path_.size() >= sizeof(sockaddr_un::sun_path)) {
    return Status::fail("control socket path " + path_ + " is too long for a unix socket (" +
                        std::to_string(path_.size()) + " bytes, at most " +
                        std::to_string(sizeof(sockaddr_un::sun_path) - 1) + ")");
  }
  struct stat st {};
  if (::lstat(path_.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return Status::ok();
    }
    return Status::fail("cannot check control socket " + path_ + ": " + errno_text(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::fail(path_ + " exists and is not a socket; refusing to replace it");
  }
  // A socket file is left behind by a daemon that died: nobody answers (ECONNREFUSED) and it can go.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Status::fail("cannot probe control socket " + path_ + ": " + errno_text(errno));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc == 0) {
    return Status::fail("another process is listening on " + path_ +
                        " (another checkpointd with the same control.socket?)");
  }
  if (err != ECONNREFUSED) {
    return Status::fail("cannot probe existing control socket " + path_ + ": " + errno_text(err));
  }
  if (::unlink(path_.c_str()) != 0) {
    return Status::fail("cannot remove stale control socket " + path_ + ": " + errno_text(errno));
  }
  log::notice("control", "", "removed stale control socket " + path_);
  return Status::ok();
}

Status ControlServer::Impl::start() {
  if (stopped_.load()) {
    return Status::fail("control server already stopped");
  }
  if (Status s = prepare_path(); !s.is_ok()) {
    return s;
  }
  boost::system::error_code ec;
  acceptor_.open(Stream(), ec);
  if (ec) {
    return Status::fail("cannot open control socket: " + ec.message());
  }
  // The umask makes the file 0660 from the moment it exists (no window where others may connect); the
  // chmod then makes the mode exact whatever umask the process had.
  const mode_t old_mask = ::umask(0117);
  acceptor_.bind(Stream::endpoint(path_), ec);
  ::umask(old_mask);
  if (ec) {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    return Status::fail("cannot create control socket " + path_ + ": " + ec.message());
  }
  struct stat st {};
  if (::chmod(path_.c_str(), 0660) != 0 || ::stat(path_.c_str(), &st) != 0) {
    const int err = errno;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    ::unlink(path_.c_str());
    return Status::fail("cannot set mode 0660 on control socket " + path_ + ": " + errno_text(err));
  }
  created_ = true;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  acceptor_.listen(static_cast<int>(limits_.max_clients) * 2, ec);
  if (ec) {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    ::unlink(path_.c_str());
    created_ = false;
    return Status::fail("cannot listen on control socket " + path_ + ": " + ec.message());
  }
  asio::post(strand_, [self = shared_from_this()] { self->accept(); });
  log::info("control", "", "control socket " + path_ + " ready");
  return Status::ok();
}

void ControlServer::Impl::accept() {
  if (stopped_.load()) {
    return;
  }
  acceptor_.async_accept(strand_,
                         [self = shared_from_this()](boost::system::error_code ec, Stream::socket socket) {
                           if (self->stopped_.load() || ec == asio::error::operation_aborted) {
                             return;
                           }
                           if (ec) {
                             // Out of descriptors and the like: try again shortly rather than spin.
                             log::warn("control", "", "accept failed: " + ec.message());
                             self->retry_timer_.expires_after(std::chrono::milliseconds(200));
                             self->retry_timer_.async_wait([self](boost::system::error_code tec) {
                               if (!tec) {
                                 self->accept();
                               }
                             });
                             return;
                           }
                           self->on_accepted(std::move(socket));
                           self->accept();
                         });
}

void ControlServer::Impl::on_accepted(Stream::socket socket) {
  auto session = std::make_shared<Session>(shared_from_this(), std::move(socket));
  const std::string limit = std::to_string(limits_.max_clients);
  if (sessions_.size() >= limits_.max_clients) {
    // Full: the request connection idle longest makes room, so idle or slow connections can never keep a
    // technician's `checkpointctl status` out. Tail clients stream on purpose and are not evicted.
    std::shared_ptr<Session> oldest;
    for (auto& [ptr, weak] : sessions_) {
      auto s = weak.lock();
      if (s && !s->tailing() && (!oldest || s->last_request() < oldest->last_request())) {
        oldest = std::move(s);
      }
    }
    if (!oldest) {
      session->reject("too many clients (" + limit + ")");
      return;
    }
    log::notice("control", "", "too many clients (" + limit + "): closing the connection idle longest");
    oldest->evict("closed: too many clients (" + limit + "); this connection was the longest idle");
  }
  sessions_.emplace(session.get(), session);
  clients_.fetch_add(1);
  session->start();
}

void ControlServer::Impl::stop() {
  if (stopped_.exchange(true)) {
    return;
  }
  // Remove the file now (the io loop may already be gone), but only if it is still ours: a successor
  // daemon may have replaced it.
  if (created_) {
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
      ::unlink(path_.c_str());
    }
  }
  asio::post(strand_, [self = shared_from_this()] {
    boost::system::error_code ignored;
    self->acceptor_.close(ignored);
    self->retry_timer_.cancel();
    std::vector<std::shared_ptr<Session>> live;
    for (auto& [ptr, weak] : self->sessions_) {
      if (auto s = weak.lock()) {
        live.push_back(std::move(s));
      }
    }
    for (auto& s : live) {
      s->close();
    }
    self->sessions_.clear();
    self->clients_.store(0);
  });
}

void ControlServer::Impl::publish(std::vector<TailRecord> records) {
  if (tailers_.load() == 0 || records.empty() || stopped_.load()) {
    return;
  }
  asio::post(strand_, [self = shared_from_this(), records = std::move(records)]() mutable {
    std::vector<std::shared_ptr<Session>> tails;
    for (auto& [ptr, weak] : self->sessions_) {
      if (auto s = weak.lock(); s && s->tailing()) {
        tails.push_back(std::move(s));
      }
    }
    if (tails.empty()) {
      return;
    }
    for (auto& rec : records) {
      if (rec.type.empty() || rec.time_ms == 0) {
        fill_from_jws(rec);
      }
      json j = {{"seq", rec.seq}, {"type", rec.type}, {"jws", rec.jws}};
      if (rec.time_ms != 0) {
        j["time_ms"] = rec.time_ms;
      }
      const Line line = std::make_shared<const std::string>(to_line(j));
      for (auto& s : tails) {
        s->push(line);
      }
    }
  });
}

ControlServer::ControlServer(asio::io_context& io, std::string socket_path, StatusProvider status_provider,
                             ControlLimits limits)
    : socket_path_(socket_path),
      impl_(std::make_shared<Impl>(io, std::move(socket_path), std::move(status_provider), limits)) {}

ControlServer::~ControlServer() {
  impl_->stop();
}

void ControlServer::add_command(const std::string& name, CommandHandler handler) {
  impl_->commands_[name] = std::move(handler);
}

Status ControlServer::start() {
  return impl_->start();
}

void ControlServer::stop() {
  impl_->stop();
}

void ControlServer::on_committed(std::uint64_t seq, const std::string& type, const std::string& jws) {
  if (impl_->tailers_.load() == 0) {
    return;
  }
  std::vector<TailRecord> one;
  one.push_back(TailRecord{seq, type, 0, jws});
  impl_->publish(std::move(one));
}

void ControlServer::on_committed(std::vector<TailRecord> records) {
  impl_->publish(std::move(records));
}

std::size_t ControlServer::clients() const {
  return impl_->clients_.load();
}

std::size_t ControlServer::tail_clients() const {
  return impl_->tailers_.load();
}

std::size_t ControlServer::queued_bytes() const {
  return impl_->queued_bytes_.load();
}

}  // namespace cpd::control
