#!/usr/bin/env bash
# A machine missing a library: `meson setup` stops and names the Debian
# package to install. We hide one .pc file from pkg-config at a time.
set -euo pipefail
src=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-dep.XXXXXX)
trap 'rm -rf "$work"' EXIT

check() {  # check PC_FILE_STEM DEBIAN_PACKAGE
  local hide=$1 pkg=$2 d out
  rm -rf "$work/pc" "$work/build"; mkdir -p "$work/pc"
  for d in $(pkg-config --variable pc_path pkg-config | tr : ' '); do
    [ -d "$d" ] || continue
    for f in "$d"/*.pc; do
      [ -e "$f" ] || continue
      [ "$(basename "$f" .pc)" = "$hide" ] && continue
      [ -e "$work/pc/$(basename "$f")" ] || ln -s "$f" "$work/pc/"
    done
  done
  out=$(PKG_CONFIG_LIBDIR="$work/pc" PKG_CONFIG_PATH= meson setup "$work/build" "$src" 2>&1) \
    && fail "meson setup succeeded without $hide"
  echo "$out" | grep -q "install the Debian package $pkg" \
    || { echo "$out" | tail -5; fail "error for missing $hide does not name $pkg"; }
  echo "ok: missing $hide -> names $pkg"
}
check liburcu-qsbr liburcu-dev
check libdpdk libdpdk-dev
check cmocka libcmocka-dev
