// PipelineSink: adapter events -> correlator (on the pipeline strand) -> store worker; a dock event's fact
// (recording, recording fault) goes to the store worker with what its record commits beside it.
#include "daemon/app/pipeline_sink.h"

#include <boost/asio/post.hpp>
#include <utility>
#include <variant>

#include "daemon/pipeline/recording_fact.h"

namespace cpd::app {

namespace asio = boost::asio;

PipelineSink::PipelineSink(asio::io_context& io, pipeline::Correlator& correlator, StoreWorker& worker,
                           const WallClock& clock, const config::ValiditySection& validity)
    : strand_(asio::make_strand(io)),
      tick_timer_(strand_),
      correlator_(correlator),
      worker_(worker),
      clock_(clock),
      assume_clock_sync_(validity.clock_sync == "assume") {}

void PipelineSink::start() {
  asio::post(strand_, [this] {
    refresh_clock_sync();
    next_clock_refresh_ = std::chrono::steady_clock::now() + kClockRefresh;
    tick();
  });
}

void PipelineSink::emit(adapters::DeviceEvent event) {
  const auto ready_at = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex_);
    auto& a = activity_[std::visit([](const auto& e) { return e.device_id; }, event)];
    ++a.events;
    a.last_event_ms = clock_.now_ms();
  }
  asio::post(strand_, [this, ready_at, ev = std::move(event)] {
    if (auto dock = pipeline::dock_file_fact(ev, correlator_.link_rule())) {
      worker_.submit(std::move(*dock), ready_at);
      return;
    }
    submit(correlator_.on_event(ev, clock_.now_ms()), ready_at);
    if (idle_ && correlator_.pending() > 0) {
      arm();
    }
  });
}

void PipelineSink::flush_then(std::function<void()> fn) {
  asio::post(strand_, [this, fn = std::move(fn)] {
    stopped_ = true;
    tick_timer_.cancel();
    submit(correlator_.flush(), std::chrono::steady_clock::now());
    fn();
  });
}

std::map<std::string, PipelineSink::Activity> PipelineSink::activity() const {
  std::lock_guard lock(mutex_);
  return activity_;
}

pipeline::ClockSync PipelineSink::clock_sync() const {
  std::lock_guard lock(mutex_);
  return clock_sync_;
}

void PipelineSink::reconfigure(config::Config next, std::function<void()> then) {
  asio::post(strand_, [this, next = std::move(next), then = std::move(then)] {
    correlator_.reconfigure(next);
    assume_clock_sync_ = next.validity.clock_sync == "assume";
    refresh_clock_sync();
    then();
  });
}

void PipelineSink::submit(std::vector<Fact> facts, std::chrono::steady_clock::time_point ready_at) {
  for (auto& fact : facts) {
    worker_.submit(std::move(fact), ready_at);
  }
}

void PipelineSink::tick() {
  if (stopped_) {
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  submit(correlator_.tick(clock_.now_ms()), now);
  if (now >= next_clock_refresh_) {
    refresh_clock_sync();
    next_clock_refresh_ = now + kClockRefresh;
  }
  arm();
}

// While the correlator holds tracks or reads, it decides every kTick; with nothing pending the timer sleeps
// until the next clock-sync refresh, and the event that makes something pending wakes it (emit).
void PipelineSink::arm() {
  if (stopped_) {
    return;
  }
  idle_ = correlator_.pending() == 0;
  tick_timer_.expires_at(idle_ ? next_clock_refresh_ : std::chrono::steady_clock::now() + kTick);
  tick_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) {
      tick();
    }
  });
}

void PipelineSink::refresh_clock_sync() {
  auto state =
      assume_clock_sync_ ? pipeline::ClockSync{true, "assume", -1, -1} : pipeline::read_kernel_clock_sync();
  {
    std::lock_guard lock(mutex_);
    clock_sync_ = state;
  }
  correlator_.set_clock_sync(std::move(state));
}

}  // namespace cpd::app
