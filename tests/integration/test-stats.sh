#!/bin/sh
# tests/integration/test-stats.sh — a volume's I/O statistics
# (GET /v1/volumes/NAME/stats, GET /v1/stats, blockctl volume stats): each
# request a client sends is counted once, by kind, with its bytes, as an
# error if it failed, on every path a request takes (whole, in pieces,
# answered from read-ahead, refused); BLOCK_STATUS is not I/O;
# a snapshot's export counts apart from its volume; two loops add up; the
# part of a request's time spent on the store leaves out a payload's
# arrival and takes in a slow disk's; the counts start again with the
# daemon.
. "$(dirname "$0")/lib.sh"
need nbdsh curl

LOG_LEVEL=debug start_blockd --threads 2 --fault-injection 1
ctl volume create v --size 64M >/dev/null
ctl volume create idle --size 16M >/dev/null

# stats NAME: GET /v1/volumes/NAME/stats into $T/body (status 200)
stats () { api GET "/v1/volumes/$1/stats"; expect 200 "stats of $1"; }

# count KIND OPS BYTES ERRORS: the last stats have these for KIND
count () {
    jcheck "(j['$1']['ops'], j['$1']['bytes'], j['$1']['errors']) == ($2, $3, $4)" "$1 counted"
}

echo "fresh volume: all zero"
stats v
jcheck "j['name'] == 'v' and len(j['id']) == 36 and j['since'].endswith('Z')" "identity"
for k in read write flush trim zero; do
    count $k 0 0 0
    jcheck "j['$k']['time_us'] == 0 and j['$k']['storage_time_us'] == 0" "$k time"
done
# within: each kind's time on the store is part of its time in blockd
within="all(j[k]['storage_time_us'] <= j[k]['time_us'] for k in ('read', 'write', 'flush', 'trim', 'zero'))"

echo "one of each kind, and a BLOCK_STATUS (no I/O)"
nbdsh -u "$(uri v)" -c '
h.pwrite(b"a" * 65536, 0)
h.pwrite(b"b" * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
for i in range(3):
    assert h.pread(4096, i * 4096) == b"a" * 4096
h.flush()
h.trim(65536, 0)
h.zero(8192, 2 << 20)
' || fail "nbdsh: one of each"
nbdsh --base-allocation -u "$(uri v)" -c '
h.block_status(1 << 20, 0, lambda *a: 0)
' || fail "nbdsh: block status"
stats v
count read 3 12288 0
count write 2 69632 0
count flush 1 0 0
count trim 1 65536 0
count zero 1 8192 0
jcheck "j['write']['time_us'] > 0 and j['flush']['time_us'] > 0" "writes and flushes take time"
jcheck "j['write']['storage_time_us'] > 0 and j['flush']['storage_time_us'] > 0 and $within" \
    "writes and flushes on the store"

echo "refused requests count as errors of their kind, with no bytes"
nbdsh -u "$(uri v)" -c '
h.set_strict_mode(0)
size = h.get_size()
for f, want in ((lambda: h.pread(4096, size), "EINVAL"),
                (lambda: h.pwrite(b"x" * 4096, size - 2048), "ENOSPC"),
                (lambda: h.trim(4096, size), "EINVAL")):
    try:
        f()
        raise SystemExit("a request past the end worked")
    except nbd.Error as e:
        assert e.errno == want, e
' || fail "nbdsh: refused requests"
stats v
count read 4 12288 1
count write 3 69632 1
count trim 2 65536 1

echo "large requests in pieces, and reads answered from read-ahead"
nbdsh -u "$(uri v)" -c '
h.pwrite(b"c" * (1 << 20), 4 << 20)      # one client at depth 1: cut in pieces
assert h.pread(1 << 20, 4 << 20) == b"c" * (1 << 20)
for i in range(40):                      # sequential: read ahead after three
    assert h.pread(4096, (4 << 20) + i * 4096) == b"c" * 4096
' || fail "nbdsh: pieces and read-ahead"
stats v
count read 45 $((12288 + 1048576 + 40 * 4096)) 1
count write 4 $((69632 + 1048576)) 1
grep -Eq 'reads started ahead, [1-9][0-9]* of them used' "$T/blockd.log" \
    || fail "the sequential reads were not answered from read-ahead"
jcheck "j['read']['storage_time_us'] > 0 and $within" "pieces and read-ahead on the store"

echo "time on the store: without a payload's arrival, with a slow disk's"
ctl volume create slow --size 16M >/dev/null
$PY - 127.0.0.1 "$NBD_PORT" <<'EOF' || fail "a payload sent in two halves"
import sys, time
sys.path.insert(0, "tests/integration")
from hostile import Conn, WRITE
c = Conn(sys.argv[1], int(sys.argv[2]))
c.start()
c.go("slow")
k = c.request(WRITE, 0, 65536, payload=b"h" * 32768)
time.sleep(0.5)
c.tx(b"h" * 32768)
assert c.result(k) == (0, b""), "the write failed"
c.close()
EOF
stats slow
jcheck "j['write']['ops'] == 1 and j['write']['time_us'] >= 400000 and j['write']['storage_time_us'] < 250000" \
    "half a second waiting for the payload, not on the store"
# a large write from a client with one request in flight goes to the store
# in pieces as its payload arrives: its time there starts with the last byte
$PY - 127.0.0.1 "$NBD_PORT" <<'EOF' || fail "a large payload sent in two halves"
import sys, time
sys.path.insert(0, "tests/integration")
from hostile import Conn, WRITE
c = Conn(sys.argv[1], int(sys.argv[2]))
c.start()
c.go("slow")
k = c.request(WRITE, 1 << 20, 1 << 20, payload=b"p" * (512 << 10))
time.sleep(0.5)
c.tx(b"p" * (512 << 10))
assert c.result(k) == (0, b""), "the write failed"
c.close()
EOF
stats slow
jcheck "j['write']['ops'] == 2 and j['write']['time_us'] >= 800000 and j['write']['storage_time_us'] < 250000" \
    "the large write's half second waiting for its payload, not on the store"
api POST /v1/debug/faults '{"volume": "slow", "op": "write", "delay_ms": 300, "count": 1}'
expect 204 "a delay"
nbdsh -u "$(uri slow)" -c 'h.pwrite(b"d" * 4096, 0)' || fail "nbdsh: a delayed write"
stats slow
jcheck "j['write']['ops'] == 3 and j['write']['storage_time_us'] >= 300000 and $within" \
    "the slow disk's 300 ms on the store"
ctl volume delete slow >/dev/null

echo "a snapshot's export is not counted in its volume's figures"
ctl snapshot create v s1 >/dev/null
nbdsh -u "$(uri v@s1)" -c '
for i in range(5):
    h.pread(4096, i * 4096)
try:
    h.pwrite(b"x" * 4096, 0)
except nbd.Error:
    pass
' || fail "nbdsh: snapshot export"
stats v
count read 45 $((12288 + 1048576 + 40 * 4096)) 1
count write 4 $((69632 + 1048576)) 1
api GET /v1/volumes/v@s1/stats
experr 404 not_found "stats of a snapshot"

echo "two connections at once (two loops) add up"
$PY -c '
import nbd, sys, threading
def writer(k):
    c = nbd.NBD()
    c.connect_uri(sys.argv[1])
    for i in range(200):
        c.pwrite(bytes([k]) * 4096, (8 << 20) + (k * 200 + i) * 4096)
    c.shutdown()
t = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
for x in t: x.start()
for x in t: x.join()
' "$(uri v)" || fail "two connections"
stats v
count write 404 $((69632 + 1048576 + 400 * 4096)) 1

echo "GET /v1/stats: every volume"
api GET /v1/stats
expect 200 "all stats"
jcheck "[x['name'] for x in j['volumes']] == ['idle', 'v']" "both volumes, by name"
jcheck "j['volumes'][0]['write']['ops'] == 0 and j['volumes'][1]['write']['ops'] == 404" "their counts"

echo "API errors"
api GET /v1/volumes/nope/stats
experr 404 not_found "stats of an unknown volume"
api POST /v1/volumes/v/stats '{}'
experr 405 method_not_allowed "POST stats"
api DELETE /v1/stats
experr 405 method_not_allowed "DELETE /v1/stats"

echo "blockctl volume stats"
run ctl volume stats v
ok "volume stats"
grep -q '^volume: v$' "$T/out" || fail "no volume line: $(cat "$T/out")"
grep -Eq '^write +404 +[0-9.]+[KM]? +1 +[0-9]+ us +[0-9]+ us$' "$T/out" || fail "no write row: $(cat "$T/out")"
grep -Eq '^flush +1 +- +0 ' "$T/out" || fail "no flush row: $(cat "$T/out")"
run ctl --json volume stats v
ok "volume stats --json"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["write"]["ops"] == 404' "$T/out" \
    || fail "volume stats --json: $(cat "$T/out")"
run ctl volume stats v --interval 0.2 --count 2
ok "volume stats --interval"
[ "$(wc -l <"$T/out")" -eq 3 ] || fail "--interval --count 2: not a header and two lines: $(cat "$T/out")"
head -n 1 "$T/out" | grep -q 'r/s.*w/s.*inflight' || fail "--interval header: $(cat "$T/out")"
run ctl --json volume stats v --interval 0.2 --count 1
ok "volume stats --json --interval"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["write"]["ops_per_second"] == 0 and j["write"]["storage_latency_us"] == 0 and j["in_flight"] == 0, j' "$T/out" \
    || fail "--json --interval: $(cat "$T/out")"
run ctl volume stats nope
err 1 "stats of an unknown volume"
# the volume made anew under its name during an interval: no rates from
# the two volumes' counts, a note, and still one line of rates
ctl volume stats idle --interval 1 --count 1 >"$T/re.out" 2>"$T/re.err" &
cpid=$!
sleep 0.3
ctl volume delete idle >/dev/null && ctl volume create idle --size 16M >/dev/null
wait $cpid || fail "volume stats across a re-creation: $(cat "$T/re.err")"
grep -q 'started again' "$T/re.err" || fail "no note of the counts starting again: $(cat "$T/re.err")"
[ "$(wc -l <"$T/re.out")" -eq 2 ] || fail "across a re-creation: not a header and a line: $(cat "$T/re.out")"
run ctl volume stats v --count 2
err 2 "--count without --interval"
run ctl volume stats v --interval 0
err 2 "--interval 0"
run ctl volume stats v --interval 1 --count 1.5
err 2 "--count 1.5"
run ctl volume stats
err 2 "no NAME"

echo "blockctl against a blockd from before storage_time_us: shown as unknown"
mkdir -p "$T/www/v1/volumes/old"
$PY -c '
import json, sys
k = {"ops": 2, "bytes": 8192, "errors": 0, "time_us": 300}
j = {"id": "8c1d6f3a-2b7e-4d4c-9a51-0f7e6b2c1d3e", "name": "old", "since": "2026-11-29T00:00:00Z"}
j.update((n, k) for n in ("read", "write", "flush", "trim", "zero"))
json.dump(j, open(sys.argv[1], "w"))
' "$T/www/v1/volumes/old/stats"
web_port=$(free_port)
(cd "$T/www" && exec "$PY" -m http.server --bind 127.0.0.1 "$web_port") >"$T/web.log" 2>&1 &
web=$!
HELPER_PIDS="$HELPER_PIDS $web"
_n=0
until curl -sf "http://127.0.0.1:$web_port/v1/volumes/old/stats" >/dev/null; do
    _n=$((_n + 1)); [ $_n -lt 100 ] || fail "the old API's stand-in did not start"; sleep 0.05
done
run ctl --api "http://127.0.0.1:$web_port" volume stats old
ok "volume stats from an older blockd"
grep -Eq '^write +2 +8(.0)?K +0 +150 us +-$' "$T/out" || fail "old write row: $(cat "$T/out")"
run ctl --api "http://127.0.0.1:$web_port" volume stats old --interval 0.2 --count 1
ok "volume stats --interval from an older blockd"
tail -n 1 "$T/out" | awk '$4 != "-" || $8 != "-" { exit 1 }' || fail "old --interval line: $(cat "$T/out")"
run ctl --api "http://127.0.0.1:$web_port" --json volume stats old --interval 0.2 --count 1
ok "volume stats --json --interval from an older blockd"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["write"]["storage_latency_us"] is None and j["write"]["latency_us"] == 0, j' "$T/out" \
    || fail "old --json --interval: $(cat "$T/out")"
kill "$web"; wait "$web" 2>/dev/null || true

echo "a restart starts the counts again"
stats v
since=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["since"])' "$T/body")
sleep 1
stop_blockd
start_blockd
stats v
jcheck "j['since'] > '$since'" "since moves on with the restart"
count write 0 0 0
count read 0 0 0
echo "PASS"
