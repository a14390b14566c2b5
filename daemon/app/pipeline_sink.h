// PipelineSink: the adapters' event sink. Device events are serialised on the pipeline strand into the
// correlator, and the facts it decides are handed to the store worker.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/events.h"
#include "daemon/app/store_worker.h"
#include "daemon/config/config.h"
#include "daemon/core/time.h"
#include "daemon/pipeline/clock_sync.h"
#include "daemon/pipeline/correlator.h"

namespace cpd::app {

// Device events arrive on adapter strands; the correlator is single-threaded, so they are serialised on
// the pipeline strand and the resulting facts handed to the store worker. A timer on the same strand
// releases decided matches and expired waits (every kTick while anything is pending, not at all while
// nothing is: no busy timer on an idle road), and refreshes the gateway's clock-sync state every
// kClockRefresh.
class PipelineSink final : public adapters::EventSink {
 public:
  // Above this many facts waiting for the store, adapters pause reading (back-pressure to the device).
  static constexpr std::uint64_t kMaxQueuedFacts = 256;
  static constexpr std::chrono::milliseconds kTick{100};
  static constexpr std::chrono::seconds kClockRefresh{10};

  PipelineSink(boost::asio::io_context& io, pipeline::Correlator& correlator, StoreWorker& worker,
               const WallClock& clock, const config::ValiditySection& validity);

  void start();

  // Per device: events received and when the last one came (gateway clock), for status and metrics.
  struct Activity {
    std::uint64_t events = 0;
    UnixMs last_event_ms = 0;
  };

  void emit(adapters::DeviceEvent event) override;

  // Runs `fn` on the pipeline strand after every event already emitted, once everything the correlator
  // still holds has been released as unmatched records (shutdown).
  void flush_then(std::function<void()> fn);

  bool congested() const override { return worker_.queued() > kMaxQueuedFacts; }

  std::map<std::string, Activity> activity() const;

  pipeline::ClockSync clock_sync() const;

  // A reload: the correlator takes the new rules on its strand (between events, never during one); then
  // `then` runs there too.
  void reconfigure(config::Config next, std::function<void()> then);

 private:
  void submit(std::vector<Fact> facts, std::chrono::steady_clock::time_point ready_at);
  void tick();
  void arm();
  void refresh_clock_sync();

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer tick_timer_;
  pipeline::Correlator& correlator_;
  StoreWorker& worker_;
  const WallClock& clock_;
  bool assume_clock_sync_;
  bool stopped_ = false;
  bool idle_ = false;  // the timer waits for the clock-sync refresh: an event making work pending re-arms it
  std::chrono::steady_clock::time_point next_clock_refresh_{};
  mutable std::mutex mutex_;
  std::map<std::string, Activity> activity_;
  pipeline::ClockSync clock_sync_;
};

}  // namespace cpd::app
