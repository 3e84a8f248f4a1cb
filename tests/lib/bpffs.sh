# shellcheck shell=bash
# Ensures bpffs is mounted at /sys/fs/bpf (libxdp and pinned maps need it;
# without it libxdp falls back to loading a single program, no dispatcher).
# Usage: source tests/lib/bpffs.sh; bpffs_ensure [dir]
bpffs_ensure() {
  local dir=${1:-/sys/fs/bpf}
  if [ "$(stat -f -c %T "$dir" 2>/dev/null)" = "bpf_fs" ]; then
    return 0
  fi
  mkdir -p "$dir" || { echo "bpffs: cannot create $dir" >&2; return 1; }
  mount -t bpf bpf "$dir" || { echo "bpffs: cannot mount bpffs on $dir" >&2; return 1; }
}
