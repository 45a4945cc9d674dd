#!/bin/sh
# tests/integration/test-read-ahead.sh — read-ahead keeps a sequential
# reader's data current (tests/integration/read-ahead.py): writes, trims and
# write-zeroes ahead of the reader, from another connection or its own; a
# stream into never-written space; the end of the volume; a write held on
# the disk (fault injection) while the reader goes on; a copy, whose writes
# elsewhere leave what was read ahead current; 4 KiB reads (read ahead in
# blocks that answer many of them) with a write ahead, into never-written
# space and to the end, taking parts of a read ahead held on the disk or
# one that failed, and of other lengths; two streams on one connection,
# with reads elsewhere among them; streams that stopped making room for a
# new one; eight reads of 128 or 16 KiB in flight racing writes just
# ahead of them.  The log must show that reads were
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
# Each connection logs its reads ahead started and used, and the KiB
# they held and requests took.  The 6 streams with a write ahead each read
# ahead, take some, then find the rest stale; so do the stream that wraps
# round, the one past a held write, the 4 KiB stream with a write ahead,
# the held read ahead, the reads of other lengths, the four stopped
# streams and the racing reader (on a fresh volume: many reads ahead,
# some dropped by the writes).  Where nothing is written, every read from
# the 4th of a stream on is taken from what was read ahead: the copy (28
# of 128 KiB), the two streams (2 x 16 of 128 KiB), the 4 KiB streams into
# never-written space and to the end (2 x 156 of 4 KiB), and the stream
# whose read ahead failed (150 of 4 KiB, each read again for itself).
grep 'reads started ahead' "$T/blockd.log" | $PY -c '
import re, sys
pat = r"(\d+) reads started ahead, (\d+) of them used; (\d+) KiB read ahead, (\d+) KiB of it taken"
seen = [tuple(map(int, re.search(pat, l).groups())) for l in sys.stdin]
assert len(seen) == 17 and all(used > 0 for _, used, _, _ in seen), seen
racing = max(seen)
assert racing[0] >= 50 and racing[3] < racing[2], ("the racing reader", seen)
taken = [t for _, _, _, t in seen]
for kib, what in ((28 * 128, "the copy"), (2 * 16 * 128, "two streams"),
                  (2 * 156 * 4, "4 KiB streams"), (150 * 4, "the failed read ahead")):
    assert kib in taken, (what, kib, seen)
' || fail "read-ahead was not exercised"

echo "with --read-ahead 0 nothing is read ahead, and the checks pass the same"
: >"$T/blockd.log"
DATA_DIR=$T/data0 LOG_LEVEL=debug start_blockd --threads 2 --fault-injection 1 --read-ahead 0
ctl volume create ra --size $SIZE >/dev/null
ctl volume create race --size $SIZE >/dev/null
READ_AHEAD=0 BLOCKD_LOG=$T/blockd.log $PY tests/integration/read-ahead.py 127.0.0.1 "$NBD_PORT" ra race $SIZE >/dev/null || fail "read-ahead.py, --read-ahead 0"
stop_blockd
grep -q 'connection.*closed' "$T/blockd.log" || fail "no connection was logged closing"
! grep -q 'reads started ahead' "$T/blockd.log" || fail "read ahead with --read-ahead 0: $(grep 'started ahead' "$T/blockd.log")"
DATA_DIR=$T/data0 check_store
check_store
echo "PASS test-read-ahead"
