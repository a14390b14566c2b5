#!/usr/bin/env bash
# `make demo`: a private mosquitto on loopback, a simulated checkpoint (radar + ANPR camera + recorder
# docking station driven by one scenario) and checkpointd, then evidence arriving over MQTT, each record and picture verified as
# central would (checkpointctl and the stock openssl CLI).
set -euo pipefail
BUILD=${1:-build}
SECONDS_TO_RUN=${DEMO_SECONDS:-40}
top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/demo-run"
ctl="$top/$BUILD/tools/checkpointctl/checkpointctl"
sim="$top/$BUILD/tools/sim/checkpoint-sim"
daemon="$top/$BUILD/daemon/app/checkpointd"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

rm -rf "$run" && mkdir -p "$run"
echo "== demo directory: $run"

"$ctl" keygen --out "$run/gateway.key" --pub "$run/gateway.pub.pem" >/dev/null
echo "== gateway key: $run/gateway.key (0600), public key $run/gateway.pub.pem"

port=$(free_port)
cat >"$run/mosquitto.conf" <<CONF
user $(id -un)
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest file $run/mosquitto.log
CONF
/usr/sbin/mosquitto -c "$run/mosquitto.conf" & pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "== mosquitto on 127.0.0.1:$port"

"$sim" scenario "$top/tools/demo-scenario.yaml" --ground-truth "$run/truth.jsonl" \
  >"$run/sim.out" 2>"$run/sim.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^dock ' "$run/sim.out" 2>/dev/null && break; sleep 0.1; done
radar_port=$(awk '/^radar /{print $2; exit}' "$run/sim.out")
camera_port=$(awk '/^camera /{print $2; exit}' "$run/sim.out")
dock_port=$(awk '/^dock /{print $2; exit}' "$run/sim.out")
echo "== simulated checkpoint (tools/demo-scenario.yaml): radar on 127.0.0.1:$radar_port, ANPR camera on 127.0.0.1:$camera_port, recorder dock on 127.0.0.1:$dock_port"
printf 'demo-secret' >"$run/cam-1.secret"; chmod 600 "$run/cam-1.secret"
printf 'demo-dock-token\n' >"$run/dock-1.token"; chmod 600 "$run/dock-1.token"

metrics_port=$(free_port)
cat >"$run/checkpointd.yaml" <<CONF
gateway:
  id: demo-gw-1
  site: {name: "G60 K1234 northbound (demo)", road: G60, direction: N, lat: 30.274085, lon: 120.155070, utc_offset: "+08:00"}
  key: $run/gateway.key
store:
  path: $run/store.db
  media_dir: $run/media
mqtt:
  uri: tcp://127.0.0.1:$port
  client_id: demo-gw-1
  topic_prefix: checkpoint
correlation:
  window_ms: 500
  lanes: [{lane: 1, limit_kmh: 100}, {lane: 2, limit_kmh: 120}]
validity:
  clock_sync: assume     # demo machine: the kernel's NTP state is not checked (said in every record)
devices:
  - id: radar-1
    kind: radar
    tcp: {host: 127.0.0.1, port: $radar_port}
    poll_interval_ms: 0
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]
    calibration: {certificate: JJG527-2026-0412, valid_until: 2027-06-30}
  - id: cam-1
    kind: camera
    url: http://127.0.0.1:$camera_port
    username: admin
    password_file: $run/cam-1.secret
    auth: digest
    radar: radar-1
  - id: dock-1
    kind: recorder_dock
    url: http://127.0.0.1:$dock_port
    token_file: $run/dock-1.token
    poll_interval_ms: 1000
links: {margin_before_s: 0, margin_after_s: 0}   # demo: link only what each recording's own span covers
metrics: {host: 127.0.0.1, port: $metrics_port}
control: {socket: $run/control.sock}
CONF
"$daemon" --check-config "$run/checkpointd.yaml"
# Subscribers first, so the feed is seen from seq 1: checkpointctl verifies and prints every record
# (and checks that each picture a record names arrived on the media topic and hashes right);
# mosquitto_sub keeps three raw records for the openssl example.
mosquitto_sub -h 127.0.0.1 -p "$port" -t checkpoint/demo-gw-1/evidence -q 1 -C 3 >"$run/sample.jws" & pids+=($!)
"$ctl" verify --pubkey "$run/gateway.pub.pem" --mqtt "tcp://127.0.0.1:$port" --from-start \
  --topic checkpoint/demo-gw-1/evidence --seconds "$SECONDS_TO_RUN" --print & verify_pid=$!
sleep 1

"$daemon" --config "$run/checkpointd.yaml" 2>"$run/checkpointd.log" & daemon_pid=$!
pids+=("$daemon_pid")
echo "== checkpointd running (log: $run/checkpointd.log); following the evidence feed for ${SECONDS_TO_RUN}s"
echo
wait "$verify_pid" || echo "!! verification failed (see above)"

echo
echo "== what a technician sees: checkpointctl status (from the running daemon over $run/control.sock)"
"$ctl" status --socket "$run/control.sock" || echo "!! checkpointctl status failed"
echo
echo "== Prometheus metrics on http://127.0.0.1:$metrics_port/metrics (a few of them; docs/metrics.md)"
{
  exec 5<>"/dev/tcp/127.0.0.1/$metrics_port"
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&5
  grep -E '^(checkpointd_records_total|checkpointd_device_up|checkpointd_outbox_records|checkpointd_broker_up|process_resident_memory_bytes)' <&5
  exec 5<&-
} || echo "!! metrics endpoint not reachable"

echo
echo "== the same check with stock tools: the third record, verified by the openssl CLI"
jws=$(sed -n 3p "$run/sample.jws")
b64d() { local s=${1//-/+}; s=${s//_//}; while (( ${#s} % 4 )); do s+="="; done; printf '%s' "$s" | base64 -d; }
printf '%s' "${jws%.*}" >"$run/signed-input.txt"
b64d "${jws##*.}" >"$run/signature.bin"
echo "record body: $(b64d "$(cut -d. -f2 <<<"$jws")" | head -c 300)..."
openssl pkeyutl -verify -pubin -inkey "$run/gateway.pub.pem" -rawin -in "$run/signed-input.txt" \
  -sigfile "$run/signature.bin"

echo
kill -TERM "$daemon_pid"; wait "$daemon_pid" && echo "== checkpointd stopped cleanly (exit 0)"
echo "== pictures and recordings kept at the gateway: $(ls "$run/media" | grep -c '^[0-9a-f]\{64\}$') files in $run/media (named by SHA-256)"
echo "== body-worn recordings collected from the dock, acknowledged only after their records were committed:"
sqlite3 "$run/store.db" "SELECT '   ' || unique_id || '  ' || state || '  record ' || record_id FROM dock_files" 2>/dev/null || true
echo "== the whole chain from the gateway's store, every picture and recording checked against the media store:"
sqlite3 "$run/store.db" "SELECT jws FROM records ORDER BY seq" >"$run/all.jws"
"$ctl" verify --pubkey "$run/gateway.pub.pem" --from-start --media "$run/media" "$run/all.jws"
echo "== retained status: $(mosquitto_sub -h 127.0.0.1 -p "$port" -t checkpoint/demo-gw-1/status -C 1 -W 3 || true)"
