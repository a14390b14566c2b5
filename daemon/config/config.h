// The daemon's configuration as loaded and checked from YAML (see config/example.yaml for every key).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/device_settings.h"
#include "daemon/config/mqtt_config.h"
#include "daemon/config/national_codes.h"
#include "daemon/core/ed25519.h"

namespace cpd::config {

struct Site {
  std::string name;
  std::string road;
  std::string direction;  // direction of travel: N, S, E, W, NE, ...
  // Case-file elements (docs/records.md, "Site"): optional, each written into every record when set.
  std::string area_code;    // administrative division code (GB/T 2260), 6 digits, e.g. 330106
  std::string road_code;    // road number, e.g. G60
  std::string km_marker;    // kilometre marker as signposted, K<km>+<m>, e.g. K1234+500
  std::int64_t km_m = -1;   // the same in metres (1234500); -1: not set
  std::string carriageway;  // up | down (上行 / 下行)
  double lat = 0.0;         // degrees WGS84
  double lon = 0.0;
  std::string utc_offset = "+00:00";  // local time of the site, used for calendar dates (calibration)
  int utc_offset_min = 0;

  bool operator==(const Site&) const = default;
};

struct GatewaySection {
  std::string id;
  Site site;
  std::string key_path;

  bool operator==(const GatewaySection&) const = default;
};

struct StoreSection {
  std::string path;
  std::string media_dir;          // content-addressed pictures/recordings; default: <dir of path>/media
  int media_retention_days = 30;  // pictures older than this whose records are PUBACKed may be deleted
  int important_retention_days =
      365;                     // recordings an officer flagged important: kept at least this long (>= 180)
  int commit_max_batch = 512;  // most records per transaction (one fsync per transaction)
  // How long a fact may wait for others to share its transaction (one fsync for all of them).
  int commit_linger_ms = 0;
  // Free space kept for evidence records: below it no new picture or recording is stored (they are counted
  // and reported), so records can still be committed when media fills the disk.
  int reserve_mb = 256;
  // Records (and the pictures only they name) that central holds (custody receipt) and that are older than
  // this are deleted; nothing outside custody is ever deleted (docs/custody.md, "Retention").
  int retention_days = 30;

  bool operator==(const StoreSection&) const = default;
};

// Speed limit per lane, optionally per vehicle class (camera vehicleType).
struct LaneLimit {
  int lane = 0;
  int limit_kmh = 0;
  std::vector<std::pair<std::string, int>> by_vehicle_type;  // e.g. {"truck", 80}

  bool operator==(const LaneLimit&) const = default;
};

struct CorrelationSection {
  int window_ms =
      500;  // a plate read and a radar track match if their corrected times differ by at most this
  int max_wait_ms = 2000;  // unmatched reads/tracks become plate_read / speed_measurement records after this
  std::vector<LaneLimit> lanes;

  bool operator==(const CorrelationSection&) const = default;
};

struct ValiditySection {
  int max_camera_clock_offset_ms = 1000;
  std::string clock_sync = "kernel";  // kernel: adjtimex; assume: for demos and tests, said in every record
  int min_pictures_speeding = 2;
  // GA/T 832 picture evidence for speeding: at least this many panoramas taken at different times, each a
  // JPEG of at least min_picture_width x min_picture_height in 24-bit colour (read from the picture itself).
  int min_panoramas_speeding = 2;
  int min_picture_width = 1280;
  int min_picture_height = 720;
  // A device time (corrected) further than this from the gateway's time of receipt fails the device_time
  // check (e.g. an alert dated 1970 or 9999).
  int max_device_time_skew_s = 300;

  bool operator==(const ValiditySection&) const = default;
};

// How recordings are linked to the vehicle records they show (docs/records.md, "Links").
struct LinksSection {
  int margin_before_s = 60;  // a record up to this long before a recording starts is linked to it
  int margin_after_s = 60;   // and up to this long after it ends

  bool operator==(const LinksSection&) const = default;
};

// Prometheus text exposition (/metrics) and a liveness check (/healthz) over plain HTTP on a local address.
struct MetricsSection {
  bool enabled = true;
  std::string host = "127.0.0.1";  // numeric IPv4/IPv6 address: the endpoint is for the local scraper only
  int port = 9464;                 // 0: an ephemeral port (tests), logged at start

  bool operator==(const MetricsSection&) const = default;
};

// The local control socket checkpointctl status/tail talk to (unix socket, mode 0660).
// Custody (docs/custody.md): receipts from checkpoint-central, resend requests, head announcements.
// Off (no receipts accepted, nothing pruned) unless central_keys are given.
struct CustodySection {
  bool enabled = false;
  std::vector<std::string> central_key_paths;  // as resolved
  std::vector<std::string> central_keys_pem;   // read at load: Ed25519 public keys that sign receipts
  int head_interval_ms = 5000;                 // the retained head announcement is refreshed this often
  int resend_records_per_s = 1000;             // records published again per second at most (media included)
  int resend_max_queued = 16;                  // requests waiting; beyond: answered "busy" at once
  int retention_check_ms = 60000;              // how often records in custody are pruned
  int record_min_interval_s = 60;              // at most one custody record per this (receipts in between
                                               // advance custody without a record)
  int empty_store_wait_ms = 5000;              // an empty store waits this long for the retained receipt
                                               // before sealing seq 1 (docs/custody.md, "A replaced store")
  // Recordings to central (custody.recordings): which files go (all | important | on_request: only those
  // central asks for), the bandwidth they may use, their segment size, and how long a sent file waits for
  // central's file receipt before its fin is sent again (doubling up to 10 min).
  std::string recordings_policy = "all";
  int recordings_rate_kib_s = 1024;
  int recordings_segment_kib = 1024;
  int recordings_receipt_wait_ms = 30000;

  bool operator==(const CustodySection&) const = default;
};

struct ControlSection {
  std::string socket;  // default: control.sock beside the store file

  bool operator==(const ControlSection&) const = default;
};

struct DeviceConfig {
  std::string id;
  std::string kind;
  std::string place;  // file:line:column of the entry, for messages
  adapters::DeviceSettings settings;
};

struct Config {
  GatewaySection gateway;
  StoreSection store;
  MqttSection mqtt;
  std::vector<DeviceConfig> devices;
  CorrelationSection correlation;
  ValiditySection validity;
  CodesSection codes;  // national code tables (GA 24.7 plate types, GA 24.4 vehicle types)
  LinksSection links;
  MetricsSection metrics;
  ControlSection control;
  CustodySection custody;
  std::string source;  // file path (or name given for text)
  std::string sha256;  // lower-case hex SHA-256 of the file's bytes
  int key_line = 0;    // where gateway.key's value is written (1-based), for load_signing_key
  int key_column = 0;
};

// Loads and checks a config file. Throws ConfigError naming file:line:column, the key and what is allowed.
Config load_config(const std::string& path);
// The same for text in memory; `name` stands for the file in messages.
Config parse_config(std::string_view yaml_text, const std::string& name);

// The gateway's signing key, loaded the one way the daemon loads it (Ed25519PrivateKey::load_pem_file):
// a readable regular file (not a directory or a device such as /dev/zero), mode 0600 or stricter, at most
// 64 KiB, holding an unencrypted PEM Ed25519 private key. The daemon's start and check-config both call it,
// so check-config passes exactly the keys the daemon accepts. Throws ConfigError at gateway.key's place.
// Not part of load_config: a config is also parsed where its key is not at hand (tests, reload plans).
Ed25519PrivateKey load_signing_key(const Config& config);

}  // namespace cpd::config
