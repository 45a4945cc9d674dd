#!/usr/bin/python3
# tests/integration/read-ahead.py — a sequential reader gets what a read
# sent at that moment must return, though blockd reads ahead of it, while
# other connections (on the other loop) and its own write, trim and zero
# the ranges it has read ahead (one write held on the disk while the reader
# goes on), or write elsewhere (a copy); 4 KiB reads, answered from blocks
# read ahead (through never-written space, to the end, while a block's
# read is held on the disk or fails, among reads of other lengths); a
# connection with two streams; reads of 128 and 16 KiB racing writes.
# Run by test-read-ahead.sh, against
# a blockd with two loops, fault injection and debug logging that has had
# no NBD connection yet, with $BLOCKD_API and $BLOCKD_LOG (its log) set:
#
#   /usr/bin/python3 read-ahead.py HOST PORT VOLUME VOLUME2 SIZE
#
# ($READ_AHEAD=0: blockd runs with --read-ahead 0, and no read ahead fails.)
#
# Both volumes are fresh, of SIZE bytes (16 MiB): the first for the
# sequences of reads and writes, the second for reads racing writes.
# Every check prints one line; the first failed check raises and the script
# exits 1 with a traceback naming it.

import json
import os
import random
import select
import struct
import sys
import time
import urllib.request

import nbd

HOST, PORT, VOL, VOL2, SIZE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
READ_AHEAD = int(os.environ.get("READ_AHEAD", "1") != "0")   # blockd's --read-ahead is not 0
KiB = 1024
MiB = 1024 * KiB
REQ = 128 * KiB                  # the reader's requests: within read-ahead's sizes
BLK = 4 * KiB
NBLK = SIZE // BLK
rng = random.Random(20261128)


def step(msg):
    print("  " + msg, flush=True)


accepted = 0
spares = []


def connect(name=VOL, loop=None):
    """A connection; blockd hands the n-th one it accepts to loop n % 2.
    With loop given, one more is opened first if need be, to land on it."""
    global accepted
    if loop is not None and accepted % 2 != loop:
        spares.append(connect(name))
    h = nbd.NBD()
    h.connect_uri("nbd://%s:%d/%s" % (HOST, PORT, name))
    accepted += 1
    return h


def block(i, version):
    """Block i at a version: its index and version, then filler of both."""
    head = struct.pack(">QQ", i, version)
    return head + bytes([(i + version) % 251]) * (BLK - len(head))


def blocks(off, n, version):
    """n blocks from offset off, at a version."""
    return b"".join(block(i, version) for i in range(off // BLK, off // BLK + n))


model = bytearray(SIZE)


def put(h, off, data):
    h.pwrite(data, off)
    model[off:off + len(data)] = data


def expect(h, off, n, what):
    got = h.pread(n, off)
    if got != bytes(model[off:off + n]):
        bad = next(i for i in range(n) if got[i] != model[off + i])
        raise AssertionError("%s: %d bytes at %d differ from offset %d on" % (what, n, off, off + bad))


# ---- sequential reads, with writes ahead of them ------------------------------
w = connect(loop=0)
r = connect(loop=1)
assert w.can_multi_conn(), "blockd advertises multi-conn"
half = SIZE // 2
put(w, 0, blocks(0, half // BLK, 1))    # the rest never written

def stream(h, start, count, what, between=None):
    """count reads of REQ from start, in order; between(k) runs before read k."""
    for k in range(count):
        if between:
            between(k)
        expect(h, start + k * REQ, REQ, "%s, read %d" % (what, k))

def ahead(what, at, write, own=False):
    """A fresh reader reads 12 requests in order from `at`; write(h) runs
    before its sixth read (read-ahead started after the fourth), on the
    reader's own connection if own, else on another one's."""
    step(what)
    h = connect(loop=1)
    stream(h, at, 12, what, lambda k: k == 5 and write(h if own else w))
    h.shutdown()

ahead("another connection writes a whole request ahead", 0,
      lambda h: put(h, 7 * REQ, blocks(7 * REQ, REQ // BLK, 2)))
ahead("another connection writes one block ahead", 16 * REQ,
      lambda h: put(h, 25 * REQ + 3 * BLK, blocks(25 * REQ + 3 * BLK, 1, 3)))
ahead("another connection writes unaligned bytes ahead", 32 * REQ,
      lambda h: put(h, 40 * REQ + 100, b"\xa5" * 5000))

def trim_zero(h):
    h.trim(REQ, 56 * REQ)        # may keep its blocks: written zeros too
    h.zero(REQ, 56 * REQ)
    model[56 * REQ:57 * REQ] = bytes(REQ)
    h.zero(2 * BLK, 57 * REQ + BLK)
    model[57 * REQ + BLK:57 * REQ + 3 * BLK] = bytes(2 * BLK)
ahead("another connection trims and zeroes ahead", 48 * REQ, trim_zero)
ahead("the reader writes ahead of its own stream", 64 * REQ,
      lambda h: put(h, 70 * REQ + 5 * BLK, blocks(70 * REQ + 5 * BLK, 1, 4)), own=True)

ahead("a stream into never-written space, written ahead of it", half - 4 * REQ,
      lambda h: put(h, half + 3 * REQ, blocks(half + 3 * REQ, REQ // BLK, 5)))

step("a stream to the end of the volume, then from its start again")
stream(r, SIZE - 6 * REQ, 6, "to the end")
stream(r, 0, 6, "from the start")

def fault(**f):
    """Set a fault of blockd's pool I/O (started with --fault-injection 1)."""
    req = urllib.request.Request(os.environ["BLOCKD_API"] + "/v1/debug/faults",
                                 data=json.dumps(f).encode(), method="POST")
    urllib.request.urlopen(req).close()

step("a write held on the disk ahead of the reader: nothing is read ahead over it until it is done")
S = 4 * MiB                      # all the reads ahead of read 3 would be in the write's MiB
h = connect(loop=1)
stream(h, S, 3, "before the held write")
fault(volume=VOL, op="write", delay_ms=400, count=1)
held = blocks(S + 6 * REQ, REQ // BLK, 7)
log = open(os.environ["BLOCKD_LOG"], "rb")
log.seek(0, os.SEEK_END)
c = w.aio_pwrite(held, S + 6 * REQ)
seen, deadline = b"", time.monotonic() + 10
while b"volume %s waits" % VOL.encode() not in seen:   # in flight, held on the disk
    assert time.monotonic() < deadline, "the write never reached blockd's disk"
    w.poll(0)
    time.sleep(0.005)
    seen += log.read()
log.close()
expect(h, S + 3 * REQ, REQ, "while the write is held")
while not w.aio_command_completed(c):
    w.poll(-1)
model[S + 6 * REQ:S + 7 * REQ] = held
stream(h, S + 4 * REQ, 8, "after the held write")
h.shutdown()

step("a copy: the reader writes what it reads 8 MiB on, another connection writes 14 MiB on")
h = connect(loop=1)
for k in range(32):
    data = h.pread(REQ, k * REQ)
    assert data == bytes(model[k * REQ:(k + 1) * REQ]), "copy, read %d" % k
    put(h, 8 * MiB + k * REQ, data)
    put(w, 14 * MiB + k * BLK, block(14 * MiB // BLK + k, 6))
expect(h, 8 * MiB, 32 * REQ, "the copy")
h.shutdown()

step("a stream of 4 KiB reads, another connection writes a block ahead of it")
h = connect(loop=1)
for k in range(48):
    if k == 20:
        put(w, 3 * MiB + 30 * BLK, block(3 * MiB // BLK + 30, 8))
    expect(h, 3 * MiB + k * BLK, BLK, "4 KiB stream, read %d" % k)
h.shutdown()

step("4 KiB reads from written into never-written space and back, and to the end of the volume")
h = connect(loop=1)             # the stream is read ahead in blocks, each answering many of its reads
for k in range(160):            # from 64 KiB before the half on: never written, then one written REQ
    expect(h, half - 16 * BLK + k * BLK, BLK, "4 KiB into never-written space, read %d" % k)
for k in range(160):            # the last block read ahead is cut at the end
    expect(h, SIZE - 160 * BLK + k * BLK, BLK, "4 KiB to the end, read %d" % k)
h.shutdown()

log_pos = os.path.getsize(os.environ["BLOCKD_LOG"])

def logged_since(text):
    with open(os.environ["BLOCKD_LOG"], "rb") as f:
        f.seek(log_pos)
        return f.read().count(text.encode())

# Chunk 12 (1 MiB) is never written: reads there need no disk, so a fault
# on pool reads hits what is read ahead from chunk 13 on.
B13 = 13 * MiB
put(w, B13, blocks(B13, 64, 9))

step("eight 4 KiB reads take their parts of a read ahead held on the disk; a write lands after them")
h = connect(loop=1)
fault(volume=VOL, op="read", delay_ms=1000, count=1)
for k in range(4):               # the read ahead starts after the 4th
    expect(h, B13 - (4 - k) * BLK, BLK, "never written, read %d" % k)
t0 = time.monotonic()
pending = []
for k in range(8):
    buf = nbd.Buffer(BLK)
    pending.append((h.aio_pread(buf, B13 + k * BLK), k, buf))
time.sleep(0.1)                  # blockd has had them, and they wait on the block
put(w, B13 + 16 * BLK, block(B13 // BLK + 16, 10))
left = {c for c, _, _ in pending}
while left:
    left = {c for c in left if not h.aio_command_completed(c)}
    if left:
        h.poll(-1)
waited = time.monotonic() - t0
for _, k, buf in pending:
    assert buf.to_bytearray() == model[B13 + k * BLK:B13 + (k + 1) * BLK], "held part, read %d" % k
assert waited >= 0.5, "the eight reads were answered in %.3f s, not from the held read ahead" % waited
for k in range(8, 40):
    expect(h, B13 + k * BLK, BLK, "after the write, read %d" % k)
assert logged_since("volume %s waits" % VOL) == 1, "the fault held the read ahead"
h.shutdown()

step("a read ahead fails: the reads that take their parts of it are read again for themselves")
h = connect(loop=1)
if READ_AHEAD:                   # else the client's own read would fail
    fault(volume=VOL, op="read", error="EIO", count=1)
for k in range(4):
    expect(h, B13 - (4 - k) * BLK, BLK, "never written, read %d" % k)
for k in range(150):
    expect(h, B13 + k * BLK, BLK, "after the failed read ahead, read %d" % k)
assert logged_since("volume %s: pool read failed" % VOL) == READ_AHEAD, "the read ahead failed"
h.shutdown()

step("reads of other lengths where a stream's reads ahead begin")
h = connect(loop=1)
at = 5 * MiB + 64 * KiB
for n in [BLK] * 6 + [2 * BLK, BLK, 3 * BLK] + [BLK] * 4 + [64 * KiB] * 10 + [BLK] * 8:
    expect(h, at, n, "%d bytes at %d" % (n, at))
    at += n
h.shutdown()

step("two streams on one connection, in turn, with other reads among them")
h = connect(loop=1)
for k in range(20):
    expect(h, k * REQ, REQ, "stream A, read %d" % k)
    expect(h, 12 * MiB + k * REQ, REQ, "stream B, read %d" % k)
    if k >= 4 and k % 3 == 1:    # more reads than the two free places: they take turns
        expect(h, rng.randrange(0, NBLK) * BLK, BLK, "a small read elsewhere")
        for _ in range(2):
            expect(h, rng.randrange(6 * MiB // BLK, 10 * MiB // BLK) * BLK, REQ, "a read elsewhere")
h.shutdown()

step("four streams that stopped give their places, after a second, to a new one among other reads")
h = connect(loop=1)
for k in range(4):
    for j in range(4):
        expect(h, (8 + 2 * j) * MiB // 2 + k * REQ, REQ, "stream %d, read %d" % (j, k))
time.sleep(2.2)                  # two ticks of the loop: the streams are idle
for k in range(12):
    expect(h, 13 * MiB + k * REQ, REQ, "the new stream, read %d" % k)
    expect(h, rng.randrange(0, NBLK) * BLK, BLK, "a small read elsewhere")
h.shutdown()

r.shutdown()
w.shutdown()

# ---- eight reads in flight, writes racing them ---------------------------------
# A read must see every write acknowledged before it was sent, and may see
# a write that was still in flight.  Each block carries its version; the
# versions acknowledged when each read is sent are its minimum.
rd, wr = connect(VOL2, loop=0), connect(VOL2, loop=1)
wr.pwrite(blocks(0, half // BLK, 1), 0)     # the rest never written
acked = [1 if i < half // BLK else 0 for i in range(NBLK)]
version = 100


def verify(off, data, need):
    for j in range(len(data) // BLK):
        b = off // BLK + j
        got = data[j * BLK:(j + 1) * BLK]
        if got == bytes(BLK):
            v = 0
        else:
            i, v = struct.unpack(">QQ", got[:16])
            assert i == b and got == block(b, v), "block %d: garbage (index %d, version %d)" % (b, i, v)
        assert v >= need[j], "block %d read version %d, but %d was acknowledged before the read was sent" % (b, v, need[j])


def race(req, passes):
    """8 reads of req bytes in flight, passes times over the volume, a
    write just ahead of them every 4 reads."""
    global version
    pos = 0                                  # next read's offset
    reads = {}                               # cookie -> (offset, buffer, minimum versions)
    checked = 0
    writing = None                           # (cookie, block, version) in flight
    written = 0
    next_write = 0                           # after this many reads checked
    while pos < passes * SIZE or reads or writing:
        while len(reads) < 8 and pos < passes * SIZE:
            off = pos % SIZE
            buf = nbd.Buffer(req)
            c = rd.aio_pread(buf, off)
            reads[c] = (off, buf, acked[off // BLK:(off + req) // BLK])
            pos += req
        if writing is None and pos < passes * SIZE and checked >= next_write:
            next_write = checked + 4         # a pause, in which reads may start ahead
            b = ((pos % SIZE) // BLK + rng.randrange(0, 512)) % NBLK   # within 2 MiB ahead
            version += 1
            writing = (wr.aio_pwrite(block(b, version), b * BLK), b, version)
        rl = [h.aio_get_fd() for h in (rd, wr) if h.aio_get_direction() & nbd.AIO_DIRECTION_READ]
        wl = [h.aio_get_fd() for h in (rd, wr) if h.aio_get_direction() & nbd.AIO_DIRECTION_WRITE]
        ready_r, ready_w, _ = select.select(rl, wl, [], 10)
        assert ready_r or ready_w, "no progress for 10 s"
        for h in (rd, wr):
            if h.aio_get_fd() in ready_r:
                h.aio_notify_read()
            if h.aio_get_fd() in ready_w:
                h.aio_notify_write()
        if writing and wr.aio_command_completed(writing[0]):
            acked[writing[1]] = writing[2]
            written += 1
            writing = None
        for c in [c for c in reads if rd.aio_command_completed(c)]:
            off, buf, need = reads.pop(c)
            verify(off, buf.to_bytearray(), need)
            checked += 1
    step("%d reads checked against %d writes" % (checked, written))


step("8 reads in flight, 3 times over the volume, a write just ahead of them every 4 reads")
race(REQ, 3)
step("the same with 16 KiB reads, once over the volume (parts of reads ahead)")
race(16 * KiB, 1)
rd.shutdown()
wr.shutdown()
for h in spares:
    h.shutdown()
