# shellcheck shell=bash
# Shared by the package tests: failure reporting, a temp dir removed on exit, required tools.
# Sourced, not run; every check that fails prints what it expected and exits non-zero.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

pass() {
  echo "ok: $*"
}

need_tool() {
  command -v "$1" >/dev/null 2>&1 || fail "$1 not found (Debian package $2; make deps should install it)"
}

# A temp dir per test run, removed however the script ends.
make_scratch() {
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/cpd-package-test.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
}
