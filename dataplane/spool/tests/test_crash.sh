#!/usr/bin/env bash
# Crash consistency of the spool: a writer that acknowledges messages only
# once they are durable is killed with SIGKILL 20 times at random moments;
# every other time the newest segment also loses a random part of what lies
# beyond the last acknowledged message (as a power cut loses unsynced data;
# SIGKILL alone keeps the page cache, so we cut the tail ourselves). After
# each restart, every acknowledged message must be there, intact, with a
# unique queue id, and no segment may be corrupt.
set -euo pipefail
writer=$1 tool=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-crash.XXXXXX)
trap 'kill -KILL $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
spool="$work/spool"
: >"$work/acked"
RANDOM=4242   # seeded: a failure can be replayed
for i in $(seq 1 20); do
  "$writer" "$spool" "$i" >"$work/out.$i" 2>"$work/err.$i" & pid=$!
  for _ in $(seq 200); do grep -q recovered "$work/err.$i" && break; sleep 0.05; done
  sleep "0.$((RANDOM % 5 + 1))"
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  # keep complete lines only: the kill may cut the last one
  awk 'NF == 5 && $1 == "ACK" && length($4) == 64' "$work/out.$i" >>"$work/acked"
  if [ $((i % 2)) -eq 0 ]; then
    seg=$(ls "$spool"/w000-*.seg | sort | tail -1)
    start=$((16#$(basename "$seg" .seg | cut -d- -f2)))
    size=$(stat -c %s "$seg")
    acked_end=$(awk -v s="$start" '$5 > s { if ($5 - s > m) m = $5 - s } END { print m + 0 }' "$work/out.$i")
    if [ "$size" -gt "$acked_end" ]; then
      keep=$((acked_end + RANDOM % (size - acked_end + 1)))
      truncate -s "$keep" "$seg"
    fi
  fi
  grep -q "recovered" "$work/err.$i" || fail "run $i did not start: $(cat "$work/err.$i")"
done
n=$(wc -l <"$work/acked")
[ "$n" -ge 100 ] || fail "only $n messages acknowledged in 20 runs: test too weak"
"$tool" verify "$spool" >"$work/verify" || fail "verify: $(cat "$work/verify")"
"$tool" list "$spool" | awk '{ print $1, substr($3, 6), substr($4, 8) }' | sort >"$work/listed"
awk '{ print $2, $3, $4 }' "$work/acked" | sort >"$work/want"
missing=$(comm -23 "$work/want" "$work/listed" | head -5)
[ -z "$missing" ] || fail "acknowledged but missing or altered: $missing"
dups=$(awk '{ print $2 }' "$work/acked" | sort | uniq -d | head -3)
[ -z "$dups" ] || fail "queue id acknowledged twice: $dups"
echo "ok: $n acknowledged messages survived 20 SIGKILLs (10 with torn tails); $(cat "$work/verify")"
