#!/bin/sh
# A pool on a filesystem that cannot zero a range (tmpfs): TRIM and
# WRITE_ZEROES of part of a chunk punch it instead, and WRITE_ZEROES with
# NO_HOLE (QEMU's "write -z" without -u, libnbd's CMD_FLAG_NO_HOLE, with or
# without FAST_ZERO) punches and allocates again: every one succeeds, reads
# back zeros, leaves the data around it alone, and NO_HOLE keeps the blocks.
. "$(dirname "$0")/lib.sh"
need nbdsh qemu-io
[ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || skip "skipped: /dev/shm is not a tmpfs"
DATA_DIR=$(mktemp -d /dev/shm/blockd-test-tmpfs.XXXXXX)
CAPACITY=64M start_blockd
ctl volume create t --size 16M >/dev/null
POOL=$DATA_DIR/pool.dat
blocks () { stat -c %b "$POOL"; }

nbdsh -u "$(uri t)" -c 'h.pwrite(b"\x77" * 4194304, 0); h.flush()'
b0=$(blocks)
nbdsh -u "$(uri t)" -c '
h.zero(65536, 65536, nbd.CMD_FLAG_NO_HOLE)
h.zero(3000, 1048576 + 1000, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO)
h.zero(8192, 1048576 + 8192, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)'
b1=$(blocks)
[ "$b1" -ge "$b0" ] || fail "NO_HOLE zeroes gave blocks back ($b0 -> $b1)"
# qemu-io's write -z asks for NO_HOLE; with -u it may punch
qemu-io -f raw -c 'write -z 2M 64k' "$(uri t)" >"$T/out" 2>&1 \
    || { cat "$T/out"; fail "qemu-io write -z failed"; }
b2=$(blocks)
[ "$b2" -ge "$b1" ] || fail "qemu-io write -z gave blocks back ($b1 -> $b2)"
qemu-io -f raw -c 'write -z -u 3M 128k' "$(uri t)" >"$T/out" 2>&1 \
    || { cat "$T/out"; fail "qemu-io write -z -u failed"; }
b3=$(blocks)
nbdsh -u "$(uri t)" -c 'h.trim(262144, 1048576 + 524288)'
b4=$(blocks)
[ "$b4" -lt "$b3" ] || fail "a partial trim kept its blocks on tmpfs ($b3 -> $b4)"
nbdsh -u "$(uri t)" -c '
M = 1048576
d = h.pread(4 * M, 0)
want = bytearray(b"\x77" * (4 * M))
for off, n in ((65536, 65536), (M + 1000, 3000), (M + 8192, 8192), (2 * M, 65536),
               (3 * M, 131072), (M + 524288, 262144)):
    want[off:off + n] = bytes(n)
assert d == want, [i for i in range(0, 4 * M, 4096) if d[i:i + 4096] != want[i:i + 4096]][:8]'
n=$(grep -c "cannot zero a range" "$T/blockd.log" || true)
[ "$n" -eq 1 ] || fail "the fallback was logged $n times, want once"
! grep -q "pool fallocate failed" "$T/blockd.log" || fail "a zeroing failed"
stop_blockd
check_store
