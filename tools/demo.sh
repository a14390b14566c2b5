#!/usr/bin/env bash
# `make demo`: a private mosquitto on loopback, a private PostgreSQL, a simulated checkpoint (radar + ANPR
# camera + recorder docking station driven by one scenario), checkpointd and checkpoint-central: evidence
# arriving over MQTT, each record and picture verified (checkpointctl, the stock openssl CLI), stored and
# verified by central in PostgreSQL, confirmed back by signed custody receipts; the broker is restarted
# without persistence halfway and central repairs what it lost (docs/custody.md).
set -euo pipefail
BUILD=${1:-build}
SECONDS_TO_RUN=${DEMO_SECONDS:-40}
top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/demo-run"
case "$BUILD" in
  /*) ;;                 # an absolute build directory (make demo BUILD_DIR=/somewhere) as it is
  *) BUILD="$top/$BUILD" ;;
esac
ctl="$BUILD/tools/checkpointctl/checkpointctl"
sim="$BUILD/tools/sim/checkpoint-sim"
daemon="$BUILD/daemon/app/checkpointd"
central="$BUILD/central/checkpoint-central"

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
max_queued_messages 0
log_dest file $run/mosquitto.log
CONF
/usr/sbin/mosquitto -c "$run/mosquitto.conf" & pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "== mosquitto on 127.0.0.1:$port (no persistence: its restart below loses what it holds)"

# A private PostgreSQL for checkpoint-central: initdb in a temp directory, a unix socket there, no TCP.
# PostgreSQL refuses to run as root, so as root it runs as nobody.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir=$(mktemp -d /tmp/cpd-demo-pg-XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown nobody:nogroup "$pgdir"; as_pg=(setpriv --reuid=nobody --regid=nogroup --clear-groups --); fi
pgport=$(free_port)
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U cpd --auth=trust -E UTF8 --no-locale --no-sync >"$run/initdb.log" 2>&1
"${as_pg[@]}" "$pgbin/postgres" -D "$pgdir/data" -k "$pgdir" -p "$pgport" -c listen_addresses= >"$run/postgres.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$pgbin/pg_isready" -q -h "$pgdir" -p "$pgport" && break; sleep 0.1; done
"$pgbin/psql" -q -h "$pgdir" -p "$pgport" -U cpd -d postgres -c "CREATE DATABASE evidence"
echo "== PostgreSQL on $pgdir (socket, port $pgport), database evidence"

# checkpoint-central: its own receipt-signing key, the gateway's key enrolled, one instance on a shared
# subscription (start more with other client ids to split the feed).
"$ctl" keygen --out "$run/central.key" --pub "$run/central.pub.pem" >/dev/null
cat >"$run/central.yaml" <<CONF
central: {id: demo-central, key: $run/central.key}
postgres: {conninfo: "host=$pgdir port=$pgport user=cpd dbname=evidence"}
mqtt: {uri: "tcp://127.0.0.1:$port", client_id: demo-central-1, reconnect_min_ms: 200, reconnect_max_ms: 2000}
feed: {media_dir: $run/central-media}
receipts: {every_records: 100, every_ms: 1000}
gaps: {resend_after_ms: 2000, retry_min_ms: 1000, retry_max_ms: 5000}
metrics: {enabled: false}
CONF
"$central" enroll --config "$run/central.yaml" --gateway demo-gw-1 --pubkey "$run/gateway.pub.pem"
"$central" run --config "$run/central.yaml" >"$run/central.out" 2>"$run/central.log" & pids+=($!)
for _ in $(seq 100); do grep -q '^running' "$run/central.out" 2>/dev/null && break; sleep 0.1; done
echo "== checkpoint-central running (log: $run/central.log)"

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
  site: {name: "G60 K1234 northbound (demo)", road: G60, direction: N, lat: 30.274085, lon: 120.155070, utc_offset: "+08:00",
         area_code: "330106", road_code: G60, km_marker: K1234+500, carriageway: up}
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
    model: SR-200
    serial_number: SR200-2026-00417
    firmware: "2.4.1"
    calibration: {certificate: JJG527-2026-0412, valid_until: 2027-06-30, radar_serial: SR200-2026-00417}
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
custody:
  central_keys: [{pem: $run/central.pub.pem}]   # receipts signed by this key let the gateway prune
  head_interval_ms: 1000
metrics: {host: 127.0.0.1, port: $metrics_port}
control: {socket: $run/control.sock}
CONF
"$daemon" --check-config "$run/checkpointd.yaml"
# Subscribers first, so the feed is seen from seq 1: checkpointctl verifies and prints every record
# (and checks that each picture a record names arrived on the media topic and hashes right);
# mosquitto_sub keeps three raw records for the openssl example.
mosquitto_sub -h 127.0.0.1 -p "$port" -t checkpoint/demo-gw-1/evidence -q 1 -C 3 >"$run/sample.jws" & pids+=($!)
half=$((SECONDS_TO_RUN / 2))
"$ctl" verify --pubkey "$run/gateway.pub.pem" --mqtt "tcp://127.0.0.1:$port" --from-start \
  --topic checkpoint/demo-gw-1/evidence --seconds "$half" --print & verify_pid=$!
sleep 1

"$daemon" --config "$run/checkpointd.yaml" 2>"$run/checkpointd.log" & daemon_pid=$!
pids+=("$daemon_pid")
echo "== checkpointd running (log: $run/checkpointd.log); following the evidence feed for ${half}s"
echo
wait "$verify_pid" || echo "!! verification failed (see above)"

echo
echo "== the broker restarts without persistence: what it held for central is gone"
kill -TERM "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
sleep 1
/usr/sbin/mosquitto -c "$run/mosquitto.conf" & pids[0]=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
sleep $((SECONDS_TO_RUN - half))

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
sleep 2  # the stop audit reaches central
echo "== pictures and recordings kept at the gateway: $(ls "$run/media" | grep -c '^[0-9a-f]\{64\}$') files in $run/media (named by SHA-256)"
echo "== body-worn recordings collected from the dock, acknowledged only after their records were committed:"
sqlite3 "$run/store.db" "SELECT '   ' || unique_id || '  ' || state || '  record ' || record_id FROM dock_files" 2>/dev/null || true
echo "== the whole chain from the gateway's store, every picture and recording checked against the media store:"
sqlite3 "$run/store.db" "SELECT jws FROM records ORDER BY seq" >"$run/all.jws"
"$ctl" verify --pubkey "$run/gateway.pub.pem" --from-start --media "$run/media" "$run/all.jws"
echo "== retained status: $(mosquitto_sub -h 127.0.0.1 -p "$port" -t checkpoint/demo-gw-1/status -C 1 -W 3 || true)"

echo
head=$(sqlite3 "$run/store.db" "SELECT max(seq) FROM records")
echo "== central: waiting until it holds the gateway's whole chain (head seq $head), repairing what the restart lost"
for _ in $(seq 120); do
  wm=$("$pgbin/psql" -tAq -h "$pgdir" -p "$pgport" -U cpd -d evidence -c "SELECT watermark_seq FROM gateways WHERE gateway = 'demo-gw-1'")
  [ "$wm" = "$head" ] && break; sleep 0.5
done
"$central" status --config "$run/central.yaml"
echo "== body-worn recordings central holds (sent in segments, hash-checked, confirmed by signed file receipts):"
for _ in $(seq 60); do
  open=$("$pgbin/psql" -tAq -h "$pgdir" -p "$pgport" -U cpd -d evidence -c "SELECT count(*) FROM file_uploads WHERE state <> 'held'")
  [ "$open" = "0" ] && break; sleep 0.5
done
"$central" files --config "$run/central.yaml" | sed 's/^/   /'
grep -E 'asked for a resend' "$run/central.log" | sed 's/^/   central: /' | head -5 || true
echo "== the custody receipt the gateway accepted (retained on checkpoint/demo-gw-1/custody), and its custody records:"
sqlite3 "$run/store.db" "SELECT '   through seq ' || through_seq || ' from ' || central FROM custody"
sqlite3 "$run/store.db" "SELECT '   custody record seq ' || seq FROM records WHERE type = 'custody' ORDER BY seq DESC LIMIT 3"
echo "== central's copy of the chain, exported and verified with the stock tool from seq 1:"
"$central" export --config "$run/central.yaml" --gateway demo-gw-1 >"$run/central.jws"
"$ctl" verify --pubkey "$run/gateway.pub.pem" --from-start "$run/central.jws"
echo "== speeding cases a back office queries in PostgreSQL (view speeding_cases):"
"$pgbin/psql" -h "$pgdir" -p "$pgport" -U cpd -d evidence -c \
  "SELECT id, plate, plate_type_code AS ga247, lane, speed_dkmh, limit_kmh, area_code, km_marker, enforceable, in_custody FROM speeding_cases ORDER BY seq LIMIT 5"
echo "== a printable evidence sheet for the first speeding record (checkpointctl sheet: verified first, then A4 PDF):"
first=$(sqlite3 "$run/store.db" "SELECT seq FROM records WHERE type = 'speeding' ORDER BY seq LIMIT 1")
if [ -n "$first" ]; then
  "$ctl" sheet --pubkey "$run/gateway.pub.pem" --media "$run/media" --id "demo-gw-1:$first" \
    -o "$run/sheet-demo-gw-1-$first.pdf" "$run/all.jws" || echo "!! the sheet was refused (see above)"
  echo "   open $run/sheet-demo-gw-1-$first.pdf (pdftotext shows its text; the QR code holds the record's id and hash)"
else
  echo "!! no speeding record in this run"
fi
if [ -n "$first" ]; then
  echo "== the same sheet from central's copy (checkpoint-central export, central's media directory):"
  "$ctl" sheet --pubkey "$run/gateway.pub.pem" --media "$run/central-media" --id "demo-gw-1:$first" \
    -o "$run/sheet-central-demo-gw-1-$first.pdf" "$run/central.jws" || echo "!! the sheet was refused (see above)"
fi
