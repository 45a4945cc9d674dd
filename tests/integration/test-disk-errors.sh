#!/bin/sh
# The pool fails a request (EIO, ENOSPC): the client gets that error for that
# request only, the connection and every other request go on, and the error
# is logged once per interval, not once per request.  A delay holds a
# request on the disk (for other tests' races) and then lets it succeed.
. "$(dirname "$0")/lib.sh"
need nbdsh
start_blockd --fault-injection 1
ctl volume create e1 --size 64M >/dev/null
ctl volume create e2 --size 64M >/dev/null
fault () {
    curl -sf -X POST -d "{\"volume\": \"$1\", \"op\": \"$2\", \"error\": \"$3\", \"count\": $4}" \
        "$BLOCKD_API/v1/debug/faults" || fail "cannot set a fault"
}
# fails VOLUME ERRNO REQUEST [AFTER]: on one connection, the python
# statement REQUEST must fail with ERRNO (a name: EIO), then AFTER runs
fails () {
    nbdsh -u "$(uri "$1")" -c "
import errno
try:
    $3
    raise SystemExit('the request did not fail')
except nbd.Error as e:
    assert e.errnum == errno.$2, e
$4" || fail "$1: $3 did not fail with $2, or what follows it failed"
}
nbdsh -u "$(uri e1)" -c 'h.pwrite(b"a" * 65536, 0); h.flush()'

fault e1 write EIO 1
fails e1 EIO 'h.pwrite(b"b" * 4096, 4096)' '
h.pwrite(b"c" * 4096, 8192)          # the next one works
assert h.pread(4096, 8192) == b"c" * 4096'
fault e1 write ENOSPC 1
fails e1 ENOSPC 'h.pwrite(b"d" * 4096, 12288, nbd.CMD_FLAG_FUA)'
# a large write goes to the pool in pieces as it arrives: one failed piece
# fails the write, and only once all of its pieces are done
fault e1 write EIO 1
fails e1 EIO 'h.pwrite(b"p" * 1048576, 1048576)' '
h.pwrite(b"q" * 1048576, 1048576)    # written again, whole
assert h.pread(1048576, 1048576) == b"q" * 1048576'
fault e1 read EIO 50
nbdsh -u "$(uri e1)" -c '
import errno
fails = 0
for i in range(50):
    try:
        h.pread(4096, 0)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
        fails += 1
assert fails == 50, fails
assert h.pread(4096, 0) == b"a" * 4096   # the 51st read works
'
# a large read is read and sent in pieces, one after another: a failed
# piece ends the read with the error, after the chunks of the pieces before
# it (here holes, which need no pool read, so the fault hits the fifth of
# eight pieces); the next read works
nbdsh -u "$(uri e1)" -c '
h.pwrite(b"r" * 4194304, 4194304)
h.trim(2097152, 4194304)'
fault e1 read EIO 1
fails e1 EIO 'chunks = []; h.pread_structured(4194304, 4194304, lambda b, o, s, e: chunks.append(o) or 0)' '
assert chunks == [4194304 + i * 524288 for i in range(4)], chunks
assert h.pread(4194304, 4194304) == bytes(2097152) + b"r" * 2097152'
# a fault on one volume leaves the other alone
fault e1 write EIO 100
nbdsh -u "$(uri e2)" -c 'h.pwrite(b"e" * 4096, 0); assert h.pread(4096, 0) == b"e" * 4096'
fault e1 write EIO 0
# a delay, not an error: the write waits on the disk, then succeeds; a
# delay with an error, or out of range, is refused
api POST /v1/debug/faults '{"volume": "e2", "op": "write", "delay_ms": 300}'; expect 204 "a delay"
nbdsh -u "$(uri e2)" -c '
import time
t = time.monotonic()
h.pwrite(b"d" * 4096, 8192)
assert time.monotonic() - t >= 0.3, "the write was not held"
assert h.pread(4096, 8192) == b"d" * 4096'
grep -q "next 1 pool write operations wait 300 ms" "$T/blockd.log" || fail "the delay was not logged"
# reads done are answered while others of the same client are still on
# the disk: with 16 in flight the loop waits for a batch of completions,
# and 2 quick reads must not wait for 14 slow ones (3 s) to make up the
# batch, nor for the loop's once-a-second timer (a wait of over 1 s)
nbdsh -u "$(uri e2)" -c '
for i in range(16):
    h.pwrite(bytes([65 + i]) * 4096, i * 4194304)
h.flush()'
api POST /v1/debug/faults '{"volume": "e2", "op": "read", "delay_ms": 3000, "count": 14}'
expect 204 "a delay for 14 reads"
nbdsh -u "$(uri e2)" -c '
import time
bufs = [nbd.Buffer(4096) for i in range(16)]
t = time.monotonic()
slow = [h.aio_pread(bufs[i], i * 4194304) for i in range(14)]
while time.monotonic() - t < 0.2:      # blockd takes them and they wait
    h.poll(20)
quick = [h.aio_pread(bufs[i], i * 4194304) for i in range(14, 16)]
done = []
while len(done) < 2:
    h.poll(-1)
    done = [c for c in quick if c in done or h.aio_command_completed(c)]
waited = time.monotonic() - t
assert waited < 1 and h.aio_in_flight() == 14, \
    "the quick reads were held %.2f s while 14 slow ones were on the disk" % waited
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in slow:
    assert h.aio_command_completed(c)
for i in range(16):
    assert bufs[i].to_bytearray() == bytes([65 + i]) * 4096, i'
for body in '{"op": "write", "delay_ms": 0}' '{"op": "write", "delay_ms": 10001}' \
            '{"op": "write", "delay_ms": 10, "error": "EIO"}' '{"op": "flush", "delay_ms": 10}' \
            '{"op": "write", "delay_ms": null}' '{"op": "write", "delay_ms": "10"}'; do
    api POST /v1/debug/faults "$body"; expect 400 "fault $body"
done
# 52 pool errors within a few seconds: one line per 5-second interval
n=$(grep -c "pool .* failed" "$T/blockd.log" || true)
[ "$n" -ge 1 ] && [ "$n" -le 2 ] || fail "52 pool errors were logged $n times (want one line per interval)"
stop_blockd
check_store
echo "PASS test-disk-errors"
