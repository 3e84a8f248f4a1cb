#!/usr/bin/env bash
# Runs a libFuzzer harness for a bounded time without touching the source
# tree: new corpus entries go to a temporary directory, seeds are read-only.
#   run_fuzz.sh HARNESS SEED_DIR SECONDS [extra libFuzzer flags]
# A crash leaves the reproducer in build/…/fuzz-artifacts/ and fails.
set -euo pipefail
bin=$1 seeds=$2 secs=$3; shift 3
work=$(mktemp -d /tmp/mxt-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
art="$(dirname "$bin")/fuzz-artifacts/"
mkdir -p "$art"
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$art" -print_final_stats=1 "$@" "$work" "$seeds"
