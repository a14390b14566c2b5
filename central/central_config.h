// checkpoint-central's configuration (YAML through the gateway's schema toolkit: typed keys, ranges,
// unknown keys refused, every mistake with file:line:column). See config/central.example.yaml.
#pragma once

#include <string>
#include <string_view>

#include "daemon/config/mqtt_config.h"

namespace cpd::central {

struct CentralIdentity {
  std::string id;        // names this central in receipts (e.g. "zj-central")
  std::string key_path;  // Ed25519 private key (PKCS#8 PEM, 0600) that signs custody receipts
};

struct PostgresSection {
  std::string conninfo;  // libpq connection string: "host=/run/postgresql dbname=checkpoint"
};

struct FeedSection {
  std::string share_group = "central";  // MQTT v5 shared subscription group: N instances split the feed
  int queue_messages = 20000;           // messages taken from the broker and not yet stored (then the
                                        // broker waits: Paho stops reading)
  int batch_max = 500;                  // records per PostgreSQL transaction
  int batch_linger_ms = 20;             // how long a batch waits to fill up to batch_max
  std::string media_dir;                // content-addressed pictures (<sha256[0:2]>/<sha256>)
  int queue_mb = 256;                   // bytes of those messages (MiB); one message is always taken
  // Quarantine bounds (rows and payload bytes, per gateway and for the whole table); beyond: counted only.
  int quarantine_max_per_gateway = 100000;  // rows per gateway (enrolled or not)
  int quarantine_max_mb_per_gateway = 64;   // payload MiB per gateway
  int quarantine_max_rows = 1000000;        // rows in all
  int quarantine_max_mb = 1024;             // payload MiB in all
  // Rows not seen for this many days are discarded (kept in quarantine_discards); 0: never.
  int quarantine_max_age_days = 0;
  // Recordings (docs/custody.md, "Recordings to central"): a file larger than this is refused at its init;
  // at most max_open_files transfers per gateway are open at once (each holds a partial file on disk).
  int max_file_mb = 8192;
  int max_open_files = 4;
  // Files no record names yet (a picture before its record, a recording whose record is not here), per
  // gateway: beyond this a picture is refused (asked for again once a record names it) and an init is told
  // to come back later. Bounds what an enrolled gateway can make central keep that no evidence names.
  int unnamed_max_mb = 1024;
  int unnamed_max_age_days = 30;  // pictures no record names are deleted after this (0: never)
};

struct ReceiptsSection {
  int every_records = 1000;  // a receipt when the watermark has moved this far since the last one
  int every_ms = 5000;       // or this long after the last one, when it moved at all
};

struct GapsSection {
  int resend_after_ms = 10000;  // a hole or lagging tail at least this old triggers a resend request
  int retry_min_ms = 5000;      // backoff between requests for the same gateway: doubles up to max
  int retry_max_ms = 300000;
  int check_interval_ms = 1000;  // how often an instance looks for gaps
  int file_stall_ms = 30000;     // an open file transfer without a new segment this long: ask for the rest
};

struct TrustSection {
  std::string keys_dir;  // optional: <gateway>.pem files enrolled at start (as `enroll` does)
};

struct CentralMetrics {
  bool enabled = true;
  std::string host = "127.0.0.1";
  int port = 9465;
};

struct CentralConfig {
  CentralIdentity central;
  PostgresSection postgres;
  config::MqttSection mqtt;
  FeedSection feed;
  ReceiptsSection receipts;
  GapsSection gaps;
  TrustSection trust;
  CentralMetrics metrics;
  std::string source;
};

CentralConfig load_central_config(const std::string& path);

// A gateway id as checkpointd's `gateway.id` allows: 1-63 of [a-z0-9-], first a letter or digit. Central
// takes messages only from topics naming one, and enrols keys only for one.
bool is_gateway_id(std::string_view id);
CentralConfig parse_central_config(std::string_view yaml_text, const std::string& name);

}  // namespace cpd::central
