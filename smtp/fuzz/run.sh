#!/bin/sh
# Runs the libFuzzer harness for a bounded time over the seed corpus.
# New inputs go to a scratch directory in the build tree, never into the
# checked-in seeds.  Usage: run.sh FUZZER SEEDS WORKDIR SECONDS
set -eu
fuzzer=$1 seeds=$2 work=$3 secs=$4
mkdir -p "$work"
# Undefined behaviour is a finding, not a warning.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
exec "$fuzzer" -max_total_time="$secs" -max_len=4096 -timeout=10 \
  -print_final_stats=1 "$work" "$seeds"
