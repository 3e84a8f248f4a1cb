#!/usr/bin/env bash
# bpffs_ensure mounts bpffs where asked and is a no-op when already mounted.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
source "$here/lib/bpffs.sh"
dir=$(mktemp -d /tmp/mxt-bpffs.XXXXXX)
trap 'umount "$dir" 2>/dev/null || true; rmdir "$dir"' EXIT
bpffs_ensure "$dir"
[ "$(stat -f -c %T "$dir")" = bpf_fs ] || { echo "FAIL: not bpffs"; exit 1; }
bpffs_ensure "$dir"   # second call must not stack a second mount
n=$(grep -c " $dir bpf " /proc/mounts)
[ "$n" -eq 1 ] || { echo "FAIL: $n mounts"; exit 1; }
bpffs_ensure          # the default location used by libxdp and our pins
[ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] || { echo "FAIL: /sys/fs/bpf"; exit 1; }
echo "ok: bpffs mounted once"
