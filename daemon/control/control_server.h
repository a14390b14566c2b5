// ControlServer: the daemon's local control socket (unix stream), which checkpointctl status/tail/rotate-key
// talk to.
// Serves status snapshots and a live feed of committed records; never blocks or grows the daemon's memory.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/core/status.h"

namespace cpd::control {

// Protocol (docs/control.md): newline-delimited JSON over a unix stream socket.
//   Client -> server, one request per line (at most ControlLimits::max_request_bytes, newline included):
//     {"cmd":"status"}  -> one line: the status snapshot (StatusProvider's JSON). The connection stays open
//                          for more requests; it is closed after idle_timeout without a request. While
//                          reply_queue_bytes of answers wait for the client to read them, no further request
//                          is read (pipelined requests wait in the socket, and the client's writes block).
//     {"cmd":"tail"}    -> from then on one line per committed record, in seq order, forever:
//                          {"seq":N,"type":"...","time_ms":T,"jws":"<compact JWS>"}. Further input is
//                          ignored. A client that falls more than tail_queue_bytes behind gets a last line
//                          {"error":"too slow, N records skipped"} and is closed.
//     a command added with add_command (e.g. {"cmd":"rotate_key"}) -> one line when its handler replies;
//                          no further request is read from that client meanwhile.
//     anything else     -> {"error":"..."} (the connection stays open, except for an oversize line, which
//                          is answered and closed).
//   A connection beyond max_clients closes the connection that has waited longest for a request (not a tail
//   client) with {"error":"closed: too many clients (8); this connection was the longest idle"}, so a
//   status request is answered however many idle connections are held; when every slot is a tail client,
//   the new connection gets {"error":"too many clients (8)"} and is closed.
struct ControlLimits {
  std::size_t max_request_bytes = 4096;
  std::size_t max_clients = 8;
  std::chrono::milliseconds idle_timeout{60'000};
  std::size_t tail_queue_bytes = 4u << 20;  // per tail client, lines not yet written to its socket
  // Per request client: answers not yet written to its socket above which no further request is read (so
  // at most this plus one answer is held for a client that pipelines requests and never reads).
  std::size_t reply_queue_bytes = 64u << 10;
  // After a too-slow client was given its error line: how long it has to read it before it is cut off.
  std::chrono::milliseconds slow_close_grace{2'000};
};

// One committed record for the tail feed. `type` and `time_ms` may be left empty/0: they are then read
// from the JWS payload (only when someone is tailing).
struct TailRecord {
  std::uint64_t seq = 0;
  std::string type;
  std::int64_t time_ms = 0;
  std::string jws;
};

class ControlServer {
 public:
  // Called on the io thread (the server's strand) for each status request; must not block.
  using StatusProvider = std::function<nlohmann::json()>;

  ControlServer(boost::asio::io_context& io, std::string socket_path, StatusProvider status_provider,
                ControlLimits limits = {});
  ~ControlServer();  // stop()s
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // A command beyond status and tail (e.g. "rotate_key", docs/control.md): `handler` runs on the server's
  // strand with the request object and must call `reply` exactly once, from any thread, with the answer
  // line's object. The client's further requests wait for that answer. Call before start().
  using CommandHandler =
      std::function<void(const nlohmann::json& request, std::function<void(nlohmann::json answer)> reply)>;
  void add_command(const std::string& name, CommandHandler handler);

  // Creates the socket (mode 0660) and starts accepting on the io_context. Replaces a stale socket file
  // (nothing listening: ECONNREFUSED); refuses when another process listens there, when the path exists
  // and is not a socket, or on any bind/listen error. The failure is a value: the daemon logs it and keeps
  // collecting evidence without a control socket. Call once, before or while the io_context runs, and
  // preferably before other threads create files: the process umask is narrowed for the bind() call.
  Status start();
  // Closes the listener and every client and removes the socket file (if it is still the one created by
  // start()). Thread-safe, idempotent.
  void stop();

  // Records committed to the store: thread-safe (called from the store worker thread), never blocks; the
  // lines are handed to the tail clients on the server's strand. Cheap when nobody is tailing.
  void on_committed(std::uint64_t seq, const std::string& type, const std::string& jws);
  void on_committed(std::vector<TailRecord> records);

  const std::string& socket_path() const { return socket_path_; }
  // Connected clients / tail clients right now (thread-safe; for status and tests).
  std::size_t clients() const;
  std::size_t tail_clients() const;
  // Bytes of answers and tail lines queued for all clients, not yet taken by their sockets (thread-safe).
  std::size_t queued_bytes() const;

 private:
  class Impl;
  std::string socket_path_;
  std::shared_ptr<Impl> impl_;  // shared with in-flight handlers, so it outlives this object if needed
};

}  // namespace cpd::control
