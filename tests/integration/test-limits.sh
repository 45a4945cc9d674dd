#!/bin/sh
# tests/integration/test-limits.sh — blockd under many connections
# (tests/integration/hostile.py hold/flood): 250 idle TCP connections that
# never send a byte and 30 that trickle one byte a second, while a normal
# nbdsh client connects, writes and reads back 8 MiB; blockd's memory stays
# bounded; the handshake timeout drops every one of the 280; with
# --max-connections 300 reached, connection 301+ is accepted and closed at
# once; afterwards normal service resumes.
. "$(dirname "$0")/lib.sh"
need nbdsh ss
$PY -c 'import nbd' 2>/dev/null || skip "skipped: $PY has no libnbd bindings (python3-libnbd)"
[ "$(ulimit -n)" -ge 1024 ] || skip "skipped: ulimit -n is $(ulimit -n); this test needs 1024 descriptors"

IDLE=250 SLOW=30 MAX=300 TIMEOUT=3
start_blockd --max-connections $MAX --handshake-timeout $TIMEOUT
ctl volume create lim --size 64M >/dev/null

fds () { ls "/proc/$BLOCKD_PID/fd" | wc -l; }
rss_kib () { awk '/^VmRSS:/ { print $2 }' "/proc/$BLOCKD_PID/status"; }
nconn () { ss -tnH state established "( sport = :$NBD_PORT )" | wc -l; }
verify_8m () {   # verify_8m WHAT: nbdsh writes 8 MiB and reads it back
    nbdsh -u "$(uri lim)" -c '
import os
data = os.urandom(8 << 20)
h.pwrite(data, 4096)
h.flush()
assert h.pread(8 << 20, 4096) == data, "8 MiB read back differently"
' || fail "normal client: $1"
}

# descriptors of blockd with no client (the least of a few looks: an API
# connection of blockctl may still be closing)
base_fds=$(fds)
for _ in 1 2 3 4 5; do sleep 0.1; f=$(fds); [ "$f" -ge "$base_fds" ] || base_fds=$f; done
rss0=$(rss_kib)
echo "RSS: $((rss0 / 1024)) MiB with 0 connections ($base_fds descriptors)"

echo "$IDLE idle and $SLOW slow connections"
$PY tests/integration/hostile.py hold 127.0.0.1 "$NBD_PORT" $IDLE $SLOW 10 "$T/hold.status" &
HOLD_PID=$!
t0=$(date +%s)
i=0
until [ "$(fds)" -ge $((base_fds + IDLE + SLOW)) ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "blockd holds $(fds) descriptors, want $((base_fds + IDLE + SLOW))"
    sleep 0.02
done
n=$(nconn)
rss1=$(rss_kib)
echo "RSS: $((rss1 / 1024)) MiB with $n connections"
[ "$rss1" -lt $((300 * 1024)) ] || fail "RSS $((rss1 / 1024)) MiB with $n connections (limit 300 MiB)"

echo "a normal client meanwhile: 8 MiB written and read back"
verify_8m "with $n idle and slow connections open"
[ $(( $(date +%s) - t0 )) -le $TIMEOUT ] || echo "(note: the normal client finished after the handshake timeout)"

echo "the handshake timeout drops all $((IDLE + SLOW))"
i=0
while :; do
    st=$(cat "$T/hold.status" 2>/dev/null || echo)
    case $st in *"closed_idle $IDLE closed_slow $SLOW"*) break ;; esac
    i=$((i + 1)); [ $i -lt 100 ] || fail "after $((TIMEOUT * 3)) s: $st"
    sleep 0.1
done
echo "  $st ($(( $(date +%s) - t0 )) s after they connected)"
wait $HOLD_PID || fail "hostile.py hold failed"
i=0
until [ "$(fds)" -le "$base_fds" ]; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "blockd still holds $(fds) descriptors (had $base_fds)"
    sleep 0.1
done
grep -q "handshake not finished within $TIMEOUT s" "$T/blockd.log" || fail "no handshake timeout in the log"

echo "connections past --max-connections $MAX are closed at once"
$PY tests/integration/hostile.py flood 127.0.0.1 "$NBD_PORT" $((MAX + 5)) >"$T/flood.out" || fail "hostile.py flood"
cat "$T/flood.out"
grep -q "greeted $MAX refused 5" "$T/flood.out" || fail "want $MAX greeted and 5 refused"
grep -q "max-connections ($MAX) reached" "$T/blockd.log" || fail "no refusal in the log"

echo "normal service resumes"
i=0
until [ "$(fds)" -le "$base_fds" ]; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "blockd still holds $(fds) descriptors (had $base_fds)"
    sleep 0.1
done
verify_8m "after the flood"
rss2=$(rss_kib)
echo "RSS: $((rss2 / 1024)) MiB with 0 connections, afterwards"
ctl volume show lim >/dev/null || fail "volume show"
stop_blockd
check_store
echo "PASS test-limits"
