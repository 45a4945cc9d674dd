#!/bin/sh
# tests/integration/test-nbdsh-edges.sh — NBD protocol edge cases
# (tests/integration/nbd-edges.py, libnbd python + a raw-socket client):
# bounds, unaligned I/O against a byte model, zero-length requests, FUA,
# flush, trim, write-zeroes flags, block status, hundreds of concurrent
# requests, two connections, unknown commands and flags, bad magic, and
# clients that vanish mid-request.  Afterwards blockd must still serve, its
# API must answer, and it must shut down cleanly with a consistent store.
. "$(dirname "$0")/lib.sh"
need nbdsh
$PY -c 'import nbd' 2>/dev/null || skip "skipped: $PY has no libnbd bindings (python3-libnbd)"

start_blockd
# 8 MiB + 1536: a ragged last chunk, not a multiple of 4096
ctl volume create edge --size $((8 * 1048576 + 1536)) >/dev/null
ctl volume create scratch --size 64M >/dev/null

echo "nbd-edges.py"
$PY tests/integration/nbd-edges.py 127.0.0.1 "$NBD_PORT" edge scratch "$BLOCKD_API" || fail "nbd-edges.py"

echo "blockd still up and serving"
kill -0 "$BLOCKD_PID" 2>/dev/null || fail "blockd died"
nbdsh -u "$(uri edge)" -c 'assert h.pread(512, 0) is not None' || fail "nbdsh after edge cases"
ctl volume show edge >"$T/show.out" || fail "volume show edge"
ctl volume show scratch >/dev/null || fail "volume show scratch"

echo "all connections are gone from the API's view"
i=0
until ctl volume list --status in-use --json | $PY -c 'import json,sys; sys.exit(1 if json.load(sys.stdin)["volumes"] else 0)'; do
    i=$((i + 1))
    [ $i -lt 50 ] || fail "connections still counted after every client left: $(ctl volume list)"
    sleep 0.1
done

echo "SIGTERM with writes half received (one in pieces, one small) still exits"
# two clients stop in the middle of a write's payload and stay connected:
# the stop drains them, and their writes are dropped, not waited for
$PY - 127.0.0.1 "$NBD_PORT" scratch "$T/half.ready" <<'HALF' &
import socket, struct, sys, time
host, port, name, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
socks = []
for length, sent in ((4 << 20, 1536 << 10), (32 << 10, 1000)):
    s = socket.create_connection((host, port), timeout=30)
    s.recv(18, socket.MSG_WAITALL)
    s.sendall(struct.pack(">I", 1))
    nm = name.encode()
    data = struct.pack(">I", len(nm)) + nm + struct.pack(">H", 0)
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
    while True:
        _, _, rtype, rlen = struct.unpack(">QIII", s.recv(20, socket.MSG_WAITALL))
        if rlen:
            s.recv(rlen, socket.MSG_WAITALL)
        if rtype == 1:
            break
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, length) + b"\x79" * sent)
    socks.append(s)
open(ready, "w").close()
time.sleep(30)
HALF
HALF_PID=$!
i=0
until [ -f "$T/half.ready" ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "the half-write clients did not connect"
    sleep 0.1
done
sleep 0.3

echo "SIGTERM: blockd exits within 15 s"
# (a leaked connection used to make shutdown wait forever; stop_blockd
# fails after 15 s)
stop_blockd
kill "$HALF_PID" 2>/dev/null || true
wait "$HALF_PID" 2>/dev/null || true
check_store
echo "PASS test-nbdsh-edges"
