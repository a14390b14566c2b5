// `checkpoint-sim dock`: a body-worn recorder docking station speaking specs/recorder-dock.md over HTTP/1.1
// (Bearer auth, status, cursor listings, ranged downloads generated on the fly, acks) with faults on demand.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace cpd::sim {

struct DockOptions {
  std::uint16_t port = 0;
  std::string host = "127.0.0.1";
  std::string token = "dock-secret";  // Bearer token every request must carry
  std::string station_id = "DS-2011-0042";
  std::string firmware = "3.4.1";
  int slots = 8;
  std::int64_t capacity_bytes = 512'000'000'000;  // freeBytes = capacity - unacknowledged bytes
  std::int64_t station_clock_offset_ms = 0;       // station clock minus true time (/status `time`)
  std::int64_t recorder_clock_offset_ms = 0;      // recorder clock minus true time, every recorder
  std::map<std::string, std::int64_t> recorder_clock_offsets;  // per recorder id, overrides the default
  int utc_offset_min = 480;  // all times are written with this offset (+08:00)
  bool time_ms = false;      // listing times with milliseconds (the spec's example: whole seconds)
  std::uint64_t seed = 1;    // recorders, officers, durations of generated files (content: by uniqueId)

  // Generated files (the CLI; programmatic users call add_file / add_burst instead).
  std::uint64_t files = 0;            // generated in total
  std::int64_t file_bytes = 1 << 20;  // size of each generated file
  double file_interval_s = 0.0;       // 0: all at start, else one every S seconds
  double burst_at_s = -1.0;           // < 0: no shift-change burst
  std::uint64_t burst_files = 0;      // files docked at once at burst_at_s
  // Faults applied to every `fault_every`-th generated file (1 = all of them).
  std::uint64_t fault_every = 1;
  int md5_bad_downloads = 0;           // the first N downloads of a file carry one corrupted byte
  bool md5_wrong_listing = false;      // the listed md5 is permanently wrong (the content is right)
  std::int64_t break_after_bytes = 0;  // with break_times > 0: close the connection after this many
  int break_times = 0;                 // body bytes, for the first break_times GETs of a file
  double restart_every_s = 0.0;        // 0 = never
  double restart_outage_s = 0.0;       // how long a restart refuses connections
  std::string ground_truth;            // JSON lines: one per file added, one per ack answer, one per restart
  // Hostile: a station that lists new files endlessly. For flood_s seconds from the first listing, each
  // listing first tops up the files after its cursor to flood_page (new random files of file_bytes), so
  // every page is full of files never seen; with ignore_limit every page holds flood_page files (at most
  // 500) whatever `limit` asked for.
  double flood_s = 0.0;
  int flood_page = 500;
  bool ignore_limit = false;
};

// One file as a recorder produced it. Empty / zero fields are filled in by the station.
struct DockFileSpec {
  std::string unique_id;  // "" = "<recorder>-<yyyymmdd>-<nnnnnn>" (recorder clock, per-recorder counter)
  std::string recorder = "BWC-00917";
  std::string officer_id = "330102198801010011";
  std::string officer_name = "王伟";
  std::string case_code;
  std::string file_type = "video";  // video | audio | photo; the format follows (mp4 | wav | jpg)
  std::int64_t length = 1 << 20;    // bytes (may be several GB: content is generated, never held)
  std::int64_t start_unix_ms = 0;   // true (UTC) span; 0 = ends 5 s before collection, lasts 60 s
  std::int64_t end_unix_ms = 0;
  std::int64_t collect_unix_ms = 0;  // true time the station copied it; 0 = now
  bool important = false;
  std::optional<std::int64_t> recorder_clock_offset_ms;  // nullopt: the station's options
  std::optional<double> lat;  // GPS track start; nullopt: the checkpoint's neighbourhood
  std::optional<double> lon;
  // Faults for this file.
  int md5_bad_downloads = 0;
  bool md5_wrong_listing = false;
  std::int64_t break_after_bytes = 0;
  int break_times = 0;
};

// What the station holds for a file: the true values tests compare against.
struct DockFileTruth {
  std::uint64_t seq = 0;  // order of arrival on the station, from 1
  std::string unique_id;
  std::string device_id;  // the recorder
  std::string officer_id;
  std::string officer_name;
  std::string file_name;
  std::string file_type;
  std::string format;
  std::int64_t length = 0;
  std::string md5;            // of the true content
  std::string listed_md5;     // what the listing says (differs with md5_wrong_listing)
  std::string sha256;         // of the true content; the only one an ack accepts
  std::int64_t start_ms = 0;  // true UTC
  std::int64_t end_ms = 0;
  std::int64_t collect_ms = 0;
  std::int64_t recorder_offset_ms = 0;
  std::string start_time;  // as listed (recorder clock)
  std::string end_time;
  std::string collect_time;
  std::int64_t listed_start_ms =
      0;  // the listed instants (recorder clock, truncated to the listing's precision)
  std::int64_t listed_end_ms = 0;
  std::int64_t listed_collect_ms = 0;
  bool important = false;
};

struct DockAckRecord {
  std::string unique_id;
  std::int64_t time_ms = 0;  // true UTC
  std::string outcome;       // acked | mismatch | unknown
  std::string sha256;        // as the client sent it
};

// The deterministic content of a file: a counter-based generator keyed by the uniqueId, so any byte range
// can be produced without producing what precedes it.
class DockContent {
 public:
  explicit DockContent(std::string_view unique_id);
  void fill(std::uint64_t offset, char* out, std::size_t n) const;
  std::string bytes(std::uint64_t offset, std::size_t n) const;

 private:
  std::uint64_t key_;
};

class DockSim {
 public:
  DockSim(boost::asio::io_context& io, DockOptions opt);
  ~DockSim();
  DockSim(const DockSim&) = delete;
  DockSim& operator=(const DockSim&) = delete;

  // Listens (port() is known afterwards), adds the generated files and starts the timers; false with a
  // message on stderr. Call before io.run() or on the io thread.
  bool start();
  std::uint16_t port() const;
  // Closes everything; on the io thread (or with the io_context not running).
  void stop();

  // The calls below are safe from any thread.
  // Adds a file now (hashes its content first: seconds for multi-GB files). Throws std::invalid_argument on
  // a duplicate uniqueId or a bad file_type/length.
  DockFileTruth add_file(DockFileSpec spec);
  // A spec with a recorder, officer, type and span chosen by the seed (what --files generates).
  DockFileSpec random_spec(std::int64_t bytes);
  // Shift change: `count` random files (many recorders) docked at the same instant.
  std::vector<DockFileTruth> add_burst(std::size_t count, std::int64_t bytes);
  // The station restarts: cursors are forgotten (old ones answer 400 bad cursor), every connection is
  // closed (a connection opened before answers nothing more), listings start again from the first
  // unacknowledged file. With outage_s > 0 the port refuses connections meanwhile.
  void restart(double outage_s = 0.0);
  void set_token(std::string token);
  // Accepted acks (outcome acked), and every ack answer (acked, mismatch, unknown), in order.
  std::vector<DockAckRecord> acks() const;
  std::vector<DockAckRecord> ack_log() const;
  bool acked(const std::string& unique_id) const;
  std::size_t downloads_started(const std::string& unique_id) const;  // content GETs
  // Bodies written out in full; counted when the last write completes, before the server reads the next
  // request on that connection (a client may have the last byte a moment earlier).
  std::size_t downloads_completed(const std::string& unique_id) const;
  std::size_t files_pending() const;         // not yet acknowledged
  std::vector<DockFileTruth> files() const;  // in arrival order
  std::size_t restarts() const;
  // Called (on the calling thread of add_file) after each file is listed; default: nothing.
  void on_file_added(std::function<void(const DockFileTruth&)> callback);

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

std::string dock_file_truth_json(const DockFileTruth& t);
std::string dock_ack_truth_json(const DockAckRecord& a);

// Parses the dock options and serves until SIGTERM/SIGINT; returns the exit code.
int run_dock_sim(int argc, char** argv);

}  // namespace cpd::sim
