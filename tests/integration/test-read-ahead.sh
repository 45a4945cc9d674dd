#!/bin/sh
# tests/integration/test-read-ahead.sh — read-ahead keeps a sequential
# reader's data current (tests/integration/read-ahead.py): writes, trims and
# write-zeroes ahead of the reader, from another connection or its own; a
# stream into never-written space; the end of the volume; a write held on
# the disk (fault injection) while the reader goes on; a copy, whose writes
# elsewhere leave what was read ahead current; 4 KiB reads with a write
# ahead; two streams on one connection, with reads elsewhere among them;
# streams that stopped making room for a new one; eight reads in flight
# racing writes just ahead of them.  The log must show that reads were
# started ahead and used, so that the checks are not of the plain path
# alone.
. "$(dirname "$0")/lib.sh"
$PY -c 'import nbd' 2>/dev/null || skip "skipped: $PY has no libnbd bindings (python3-libnbd)"

SIZE=$((16 * 1048576))
# two loops whatever the CPUs: readers and writers are put on different ones
LOG_LEVEL=debug start_blockd --threads 2 --fault-injection 1
ctl volume create ra --size $SIZE >/dev/null
ctl volume create race --size $SIZE >/dev/null

echo "read-ahead.py"
BLOCKD_LOG=$T/blockd.log $PY tests/integration/read-ahead.py 127.0.0.1 "$NBD_PORT" ra race $SIZE || fail "read-ahead.py"
stop_blockd      # every connection has logged what it read ahead

echo "reads were started ahead, and used"
grep 'reads started ahead' "$T/blockd.log" | sed 's/.*connection/  connection/'
# 6 streams of 128 KiB reads and one of 4 KiB with a write ahead (each
# reads ahead, takes some, then finds the rest stale), the stream that wraps round, the stream past a write
# held on the disk (it reads ahead once the write is done), the racing
# reader (384 reads, 3 passes over the volume: it read ahead many times,
# some of it was taken and some dropped by the writes), and two with writes
# elsewhere or other reads only, whose reads ahead of the 4th on were all
# taken and only the 8 ahead of each stream's end went unused: the copy
# (32 reads) and the connection with two streams of 20; and the connection
# whose four streams stopped, then a new one was read ahead (some used)
grep 'reads started ahead' "$T/blockd.log" | $PY -c '
import re, sys
seen = [tuple(map(int, re.search(r"(\d+) reads started ahead, (\d+) of them used", l).groups()))
        for l in sys.stdin]
assert len(seen) == 13 and all(used > 0 for _, used in seen), seen
racing = max(seen)
assert racing[0] >= 100 and racing[1] < racing[0], ("the racing reader", seen)
assert (36, 28) in seen, ("the copy", seen)
assert (48, 32) in seen, ("two streams", seen)
' || fail "read-ahead was not exercised"

echo "with --read-ahead 0 nothing is read ahead, and the checks pass the same"
: >"$T/blockd.log"
DATA_DIR=$T/data0 LOG_LEVEL=debug start_blockd --threads 2 --fault-injection 1 --read-ahead 0
ctl volume create ra --size $SIZE >/dev/null
ctl volume create race --size $SIZE >/dev/null
BLOCKD_LOG=$T/blockd.log $PY tests/integration/read-ahead.py 127.0.0.1 "$NBD_PORT" ra race $SIZE >/dev/null || fail "read-ahead.py, --read-ahead 0"
stop_blockd
grep -q 'connection.*closed' "$T/blockd.log" || fail "no connection was logged closing"
! grep -q 'reads started ahead' "$T/blockd.log" || fail "read ahead with --read-ahead 0: $(grep 'started ahead' "$T/blockd.log")"
DATA_DIR=$T/data0 check_store
check_store
echo "PASS test-read-ahead"
