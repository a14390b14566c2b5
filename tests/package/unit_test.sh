#!/bin/bash
# Issue 6 section 1: the shipped unit is hardened (systemd-analyze security --offline=yes <= 2.0), is
# clean for systemd-analyze verify, and keeps the one clock read the daemon needs.
# usage: unit_test.sh SOURCE_DIR CHECKPOINTD_BINARY
set -eu
src=$1
daemon_bin=$2
unit="$src/systemd/checkpointd.service"
# shellcheck source=common.sh
. "$src/tests/package/common.sh"
need_tool systemd-analyze systemd
make_scratch
[ -f "$unit" ] || fail "$unit missing"
[ -x "$daemon_bin" ] || fail "$daemon_bin not built (build the checkpointd target first)"

max_exposure=2.0

# Prints the "Overall exposure level" number of a unit file, or nothing if the line is missing.
exposure_of() {
  systemd-analyze security --offline=yes "$1" 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p'
}

# Succeeds when $1 <= $2 (decimal numbers).
at_most() {
  awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'
}

# (1) Exposure of the unit as shipped.
exposure=$(exposure_of "$unit")
[ -n "$exposure" ] || fail "no 'Overall exposure level' in systemd-analyze security output for $unit"
at_most "$exposure" "$max_exposure" || fail "exposure $exposure > $max_exposure for $unit"
pass "exposure $exposure <= $max_exposure"

# The parser and the comparison can fail: the same unit without its [Service] hardening scores high.
mkdir -p "$scratch/weak"
awk '/^# No privileges at all/ { skip = 1 } /^\[Install\]/ { skip = 0 } !skip' "$unit" \
  > "$scratch/weak/checkpointd.service"
weak=$(exposure_of "$scratch/weak/checkpointd.service")
[ -n "$weak" ] || fail "no exposure parsed for the unhardened copy"
if at_most "$weak" "$max_exposure"; then
  fail "the unhardened copy scores $weak <= $max_exposure: the exposure check cannot fail"
fi
pass "unhardened copy scores $weak (> $max_exposure), so the check discriminates"

# (2) systemd-analyze verify. It requires every Exec*= binary to exist. `--root=<install tree>` would
# resolve everything inside the tree, also /bin/kill (ExecReload) and sysinit.target and the other units
# a service depends on by default, which an install tree does not have. So we verify a copy of the
# shipped unit in which only /usr/bin/checkpointd is replaced by the binary just built; every other line
# is the shipped one, checked against the host's systemd. verify exits 0 even on unknown keys and
# prints them, so "clean" means exit 0 and no output at all.
mkdir -p "$scratch/verify"
sed "s#/usr/bin/checkpointd#$daemon_bin#g" "$unit" > "$scratch/verify/checkpointd.service"
grep -q "$daemon_bin" "$scratch/verify/checkpointd.service" || fail "ExecStart path not substituted"
out=$(systemd-analyze verify "$scratch/verify/checkpointd.service" 2>&1) || fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify is not clean: $out"
pass "systemd-analyze verify clean"

# The verify check can fail: an unknown key must produce output.
sed 's/^UMask=0077$/UMask=0077\nNoSuchKey=1/' "$scratch/verify/checkpointd.service" > "$scratch/bad.service"
mkdir -p "$scratch/bad" && mv "$scratch/bad.service" "$scratch/bad/checkpointd.service"
bad_out=$(systemd-analyze verify "$scratch/bad/checkpointd.service" 2>&1 || true)
[ -n "$bad_out" ] || fail "verify printed nothing for an unknown key: the clean check cannot fail"
pass "verify reports an unknown key"

# (3) The daemon's read of the kernel clock state: glibc's adjtimex() is clock_adjtime(CLOCK_REALTIME,
# modes=0). ProtectClock=yes would make it fail with EPERM (its seccomp filter denies all of @clock), and
# ~@privileged removes it unless it is allowed again afterwards.
if grep -Eiq '^ProtectClock=(yes|true|on|1)[[:space:]]*$' "$unit"; then
  fail "ProtectClock is on: the read-only clock_adjtime the daemon uses would fail"
fi
last_filter=$(grep '^SystemCallFilter=' "$unit" | tail -n 1)
case "$last_filter" in
  SystemCallFilter=~*) fail "the last SystemCallFilter= is a deny list; clock_adjtime must be allowed last" ;;
  *clock_adjtime*) pass "clock_adjtime allowed after the deny lists" ;;
  *) fail "clock_adjtime is not allowed by the last SystemCallFilter= ($last_filter)" ;;
esac

# (4) The settings the issue names are there (a later edit must not drop one silently).
# shellcheck disable=SC2016 # $MAINPID is literal unit text, expanded by systemd
for setting in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30s' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'Restart=on-failure' 'User=checkpointd' 'StateDirectory=checkpointd' 'StateDirectoryMode=0700' \
  'ConfigurationDirectory=checkpointd' 'ProtectSystem=strict' 'CapabilityBoundingSet=' \
  'DevicePolicy=closed' 'DeviceAllow=char-ttyUSB rw' 'UMask=0077' \
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6'; do
  grep -qxF "$setting" "$unit" || fail "$unit lacks the line '$setting'"
done
pass "required settings present"
