#!/usr/bin/env bash
# Runs the libFuzzer harness for SECONDS, starting from the checked-in seeds.
# New corpus entries go to a scratch directory, never into the source tree;
# on failure the scratch directory (with the crashing input) is kept.
#   run_fuzz.sh FUZZER SEED_DIR SECONDS
set -uo pipefail
fuzzer=$1 seeds=$2 secs=$3
work=$(mktemp -d)
mkdir -p "$work/corpus" "$work/artifacts"
"$fuzzer" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 -timeout=10 \
	-print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" &
wait $!
rc=$?
if [ "$rc" -ne 0 ]; then
	echo "fuzz: failed (rc $rc); reproducer kept in $work/artifacts" >&2
	exit "$rc"
fi
rm -rf "$work"
