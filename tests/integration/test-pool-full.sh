#!/bin/sh
# A full pool: a write that needs new space fails with ENOSPC, everything
# else keeps working, and space freed by trim or delete is usable at once.
. "$(dirname "$0")/lib.sh"
need nbdsh
CAPACITY=8M start_blockd --chunk-size 1M
ctl volume create big --size 64M >/dev/null
ctl volume create other --size 16M >/dev/null
ctl volume create spare --size 16M >/dev/null

# "other" takes one chunk, "spare" one; "big" gets the six left
nbdsh -u "$(uri other)" -c 'h.pwrite(b"\x11" * 4096, 0)'
nbdsh -u "$(uri spare)" -c 'h.pwrite(b"\x22" * 4096, 0)'

nbdsh -u "$(uri big)" -c '
import errno
M = 1 << 20
for i in range(6):
    h.pwrite(bytes([i + 1]) * M, i * M)
try:
    h.pwrite(b"x" * 4096, 40 * M)
    raise SystemExit("write into a full pool succeeded")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
# an unaligned write that needs a new chunk fails the same way
try:
    h.pwrite(b"y" * 100, 50 * M + 3)
    raise SystemExit("unaligned write into a full pool succeeded")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
# the connection lives on: overwrites of allocated space and reads work
h.pwrite(b"\xaa" * 8192, 2 * M + 4096)
assert h.pread(8192, 2 * M + 4096) == b"\xaa" * 8192
assert h.pread(4096, 0) == b"\x01" * 4096
assert h.pread(4096, 40 * M) == bytes(4096)
# trim gives a whole chunk back, and it is usable at once
h.trim(M, 5 * M)
h.pwrite(b"z" * 4096, 40 * M)
assert h.pread(4096, 40 * M) == b"z" * 4096
assert h.pread(4096, 5 * M) == bytes(4096)
h.flush()
'
# other volumes were never disturbed
nbdsh -u "$(uri other)" -c 'assert h.pread(4096, 0) == b"\x11" * 4096'

# pool accounting: 8 chunks in use, none free
free=$(curl -sf "$BLOCKD_API/v1/pool" | $PY -c 'import json,sys; print(json.load(sys.stdin)["free"])')
[ "$free" = 0 ] || fail "pool free is $free, expected 0"

# deleting a volume frees its space for the others at once
ctl volume delete spare >/dev/null
nbdsh -u "$(uri big)" -c 'h.pwrite(b"w" * 4096, 30 << 20); assert h.pread(4096, 30 << 20) == b"w" * 4096'
ctl volume delete big >/dev/null
free=$(curl -sf "$BLOCKD_API/v1/pool" | $PY -c 'import json,sys; print(json.load(sys.stdin)["free"])')
[ "$free" = $((7 << 20)) ] || fail "pool free after delete is $free, expected $((7 << 20))"
stop_blockd
check_store
echo "PASS test-pool-full"
