#!/bin/bash
# Issue 6 section 5: `cpack -G DEB` from the build tree gives a .deb with the Debian layout (binaries in
# /usr/bin, the unit in /lib/systemd/system, the example config as a conffile in /etc/checkpointd),
# working maintainer scripts and filled-in Depends. The package is written to a temp dir, not the build dir.
# usage: deb_layout_test.sh SOURCE_DIR BUILD_DIR PROJECT_VERSION
set -eu
src=$1
build=$2
version=$3
# shellcheck source=common.sh
. "$src/tests/package/common.sh"
need_tool cpack cmake
need_tool dpkg-deb dpkg
need_tool dpkg-shlibdeps dpkg-dev
make_scratch

(cd "$build" && cpack -G DEB -B "$scratch/out") > "$scratch/cpack.log" 2>&1 ||
  fail "cpack failed: $(tail -n 20 "$scratch/cpack.log")"
arch=$(dpkg --print-architecture)
deb="$scratch/out/checkpointd_${version}_${arch}.deb"
[ -f "$deb" ] || fail "expected $deb; cpack made: $(ls "$scratch/out")"
pass "built $(basename "$deb")"

# Contents: tar listing lines end in "./path" (or "./path -> target").
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's#^\./#/#' > "$scratch/contents"
for path in /usr/bin/checkpointd /usr/bin/checkpointctl /lib/systemd/system/checkpointd.service \
  /etc/checkpointd/checkpointd.yaml.example /usr/share/doc/checkpointd/install.md \
  /usr/share/doc/checkpointd/README.md; do
  grep -qxF "$path" "$scratch/contents" || fail "$path not in the package; it has: $(tr '\n' ' ' < "$scratch/contents")"
done
# Nothing under /usr/etc or /usr/lib/systemd: the absolute places are used, not the prefix.
if grep -Eq '^/usr/(etc|lib/systemd)/' "$scratch/contents"; then
  fail "files under /usr/etc or /usr/lib/systemd: $(grep -E '^/usr/(etc|lib/systemd)/' "$scratch/contents")"
fi
# Evidence is never shipped in the package: /var/lib/checkpointd is made by postinst.
if grep -q '^/var/' "$scratch/contents"; then
  fail "the package ships files under /var"
fi
pass "layout"

dpkg-deb -x "$deb" "$scratch/root"
cmp -s "$scratch/root/lib/systemd/system/checkpointd.service" "$src/systemd/checkpointd.service" ||
  fail "packaged unit differs from systemd/checkpointd.service"
cmp -s "$scratch/root/etc/checkpointd/checkpointd.yaml.example" "$src/config/example.yaml" ||
  fail "packaged example config differs from config/example.yaml"
for bin in checkpointd checkpointctl; do
  [ -x "$scratch/root/usr/bin/$bin" ] || fail "/usr/bin/$bin not executable"
  "$scratch/root/usr/bin/$bin" --help > /dev/null || fail "packaged $bin --help failed"
done
pass "packaged files match the sources and the binaries run"

# Control fields.
dpkg-deb -f "$deb" > "$scratch/control"
field() { sed -n "s/^$1: //p" "$scratch/control"; }
[ "$(field Package)" = checkpointd ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), expected $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
[ -n "$(field Section)" ] || fail "no Section"
[ -n "$(field Description)" ] || fail "no Description"
depends=$(field Depends)
for dep in libc6 libstdc++6 libssl3 libsqlite3-0 libsystemd0 adduser; do
  case ", $depends," in
    *", $dep"[\ ,]*) ;;
    *) fail "Depends lacks $dep (dpkg-shlibdeps or CPACK_DEBIAN_PACKAGE_DEPENDS): $depends" ;;
  esac
done
pass "control: version $version, Depends: $depends"

# Maintainer scripts and conffiles.
dpkg-deb -e "$deb" "$scratch/control.d"
for script in postinst prerm postrm; do
  f="$scratch/control.d/$script"
  [ -f "$f" ] || fail "maintainer script $script missing"
  [ -x "$f" ] || fail "maintainer script $script not executable"
  head -n 1 "$f" | grep -qx '#!/bin/sh' || fail "$script does not start with #!/bin/sh"
  sh -n "$f" || fail "$script is not valid sh"
done
grep -qxF /etc/checkpointd/checkpointd.yaml.example "$scratch/control.d/conffiles" ||
  fail "checkpointd.yaml.example is not a conffile"
# Debian policy: every file the package puts in /etc is a conffile.
while read -r path; do
  case "$path" in
    */) ;;  # a directory
    /etc/*) grep -qxF "$path" "$scratch/control.d/conffiles" || fail "$path in /etc is not a conffile" ;;
  esac
done < "$scratch/contents"
pass "maintainer scripts and conffiles"
