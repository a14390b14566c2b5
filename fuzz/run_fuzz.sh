#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time from the generated seeds and prints executions per
# target. Usage: fuzz/run_fuzz.sh <clang build dir> <seconds> [target...]. Exit 1 if any target crashed;
# the crashing inputs are kept in fuzz/crashes/<target>/ (turn them into tests/unit/fuzz_regressions inputs).
set -uo pipefail

build_dir=${1:?usage: run_fuzz.sh <build dir> <seconds> [target...]}
seconds=${2:?usage: run_fuzz.sh <build dir> <seconds> [target...]}
shift 2
src_dir=$(cd "$(dirname "$0")/.." && pwd)
fuzz_bin="$build_dir/fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(radar_frame multipart isapi_xml dock_json config jws jcs custody jpeg_header)
fi

# Longest input worth trying per target: a little above each protocol's bound, so the "too long" paths
# are reached without the fuzzer spending its time on megabyte inputs.
max_len() {
  case "$1" in
    radar_frame) echo 1024 ;;
    multipart) echo 16384 ;;
    isapi_xml) echo 8192 ;;
    dock_json) echo 16384 ;;
    config) echo 16384 ;;
    jws) echo 4096 ;;
    jcs) echo 4096 ;;
    custody) echo 8192 ;;
    jpeg_header) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

seeds="$build_dir/fuzz/seeds"
# cpd-fuzz-seeds clears each target's seed directory itself.
"$fuzz_bin/cpd-fuzz-seeds" "$seeds" "$src_dir/config/example.yaml" || exit 1

failed=0
declare -A execs status
for t in "${targets[@]}"; do
  bin="$fuzz_bin/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "run_fuzz: no target $bin" >&2
    exit 2
  fi
  corpus="$build_dir/fuzz/corpus/$t"     # grows across runs; the seeds stay as generated
  crashes="$src_dir/fuzz/crashes/$t"
  log="$build_dir/fuzz/$t.log"
  mkdir -p "$corpus" "$crashes"
  echo "== fuzz_$t: ${seconds}s, max_len $(max_len "$t")"
  "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "$seeds/$t" >"$log" 2>&1
  rc=$?
  n=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  if [ -z "$n" ]; then
    n=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
  fi
  execs[$t]=${n:-?}
  if [ $rc -ne 0 ] || ls "$crashes"/* >/dev/null 2>&1; then
    status[$t]="CRASH (see $log, inputs in fuzz/crashes/$t/)"
    failed=1
    grep -m 5 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" || tail -n 20 "$log"
  else
    status[$t]=ok
    rmdir "$crashes" 2>/dev/null
  fi
done

echo
printf '%-12s %14s %8s  %s\n' target executions exec/s result
for t in "${targets[@]}"; do
  rate='?'
  if [[ ${execs[$t]} =~ ^[0-9]+$ ]]; then
    rate=$(( ${execs[$t]} / seconds ))
  fi
  printf '%-12s %14s %8s  %s\n' "$t" "${execs[$t]}" "$rate" "${status[$t]}"
done
rmdir "$src_dir/fuzz/crashes" 2>/dev/null
exit $failed
