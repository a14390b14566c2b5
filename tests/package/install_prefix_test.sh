#!/bin/bash
# Issue 6 section 5: `cmake --install BUILD --prefix DIR` works for a plain prefix: everything lands under
# DIR (bin/, lib/systemd/system/, etc/checkpointd/, share/doc/checkpointd/) and nothing outside it.
# usage: install_prefix_test.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
# shellcheck source=common.sh
. "$src/tests/package/common.sh"
need_tool cmake cmake
make_scratch
prefix="$scratch/prefix"

cmake --install "$build" --prefix "$prefix" > "$scratch/install.log" 2>&1 ||
  fail "cmake --install failed: $(tail -n 20 "$scratch/install.log")"

for path in bin/checkpointd bin/checkpointctl; do
  [ -x "$prefix/$path" ] || fail "$prefix/$path missing or not executable"
done
for path in lib/systemd/system/checkpointd.service etc/checkpointd/checkpointd.yaml.example \
  share/doc/checkpointd/README.md share/doc/checkpointd/install.md; do
  [ -f "$prefix/$path" ] || fail "$prefix/$path missing"
done
pass "layout under the prefix"

# Every file cmake reports must be inside the prefix (a plain prefix must never touch /etc or /lib).
grep -E '^-- (Installing|Up-to-date): ' "$scratch/install.log" | sed -E 's/^-- [A-Za-z-]+: //' > "$scratch/files"
[ -s "$scratch/files" ] || fail "cmake --install reported no files"
while read -r path; do
  case "$path" in
    "$prefix"/*) ;;
    *) fail "installed outside the prefix: $path" ;;
  esac
done < "$scratch/files"
pass "$(wc -l < "$scratch/files") files, all under the prefix"

"$prefix/bin/checkpointctl" --help > /dev/null || fail "installed checkpointctl --help failed"
# The example a technician starts from must itself be a valid config.
# check-config loads the signing key as the daemon would, so the example is checked with a real key in place
# of the one the package leaves the technician to create.
"$prefix/bin/checkpointctl" keygen --out "$scratch/gateway.key" --pub "$scratch/gateway.pub.pem" > /dev/null
sed "s|/var/lib/checkpointd/gateway.key|$scratch/gateway.key|" "$prefix/etc/checkpointd/checkpointd.yaml.example" \
  > "$scratch/example.yaml"
"$prefix/bin/checkpointd" --check-config "$scratch/example.yaml" > "$scratch/check.log" 2>&1 ||
  fail "the installed example config is not valid: $(cat "$scratch/check.log")"
pass "installed binaries run; the installed example config is valid"
