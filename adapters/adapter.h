// The narrow interface between an adapter and the core: started with an executor and a sink.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "adapters/dock_ledger.h"
#include "adapters/events.h"
#include "adapters/media_sink.h"
#include "daemon/core/time.h"

namespace cpd::adapters {

struct AdapterContext {
  boost::asio::io_context& io;
  EventSink& sink;  // called on the io_context threads; must not block
  const WallClock& clock;
  // Where blocking work goes (file writes, fsync, hashing): never on the io_context threads.
  boost::asio::thread_pool* blocking = nullptr;
  MediaSink* media = nullptr;         // content-addressed store for pictures and recordings
  DockLedger* dock_ledger = nullptr;  // persisted dock cursors and files (recorder docks)
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual const std::string& device_id() const = 0;
  // Begins I/O on the adapter's own strand. Never throws for device trouble: it reconnects by itself.
  virtual void start() = 0;
  // Closes sockets and cancels timers; pending handlers complete with operation_aborted.
  virtual void stop() = 0;
  // Snapshot for the status topic and technicians, e.g.
  // {"kind":"radar","state":"connected","frames":123,"errors":{"checksum":2},"reconnects":1}.
  // Safe to call from any thread.
  virtual nlohmann::json status() const = 0;
};

}  // namespace cpd::adapters
