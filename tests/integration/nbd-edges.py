#!/usr/bin/python3
# tests/integration/nbd-edges.py — NBD protocol edge cases against a live
# blockd, driven by libnbd (python bindings) and by a hand-written raw-socket
# client for what libnbd will not send.  Run by test-nbdsh-edges.sh:
#
#   /usr/bin/python3 nbd-edges.py HOST PORT EDGE SCRATCH API-URL
#
# EDGE is a fresh volume whose every byte is modelled in a bytearray and
# compared at the end; SCRATCH is a volume for abuse (clients that vanish
# mid-request), whose contents are not checked.
#
# Every check prints one line; the first failed check raises and the script
# exits 1 with a traceback naming it.

import errno
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import json
import urllib.request

import nbd

HOST, PORT, EDGE, SCRATCH, API = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
MiB = 1 << 20
CHUNK = MiB                       # blockd's default chunk size (GET /v1/pool)
rng = random.Random(20261126)


def uri(name):
    return "nbd://%s:%d/%s" % (HOST, PORT, name)


def step(msg):
    print("  " + msg, flush=True)


def connect(name=EDGE, strict=False):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if not strict:
        # Let requests libnbd considers wrong reach the server, so that we
        # test blockd's checks, not libnbd's.
        h.set_strict_mode(0)
    h.connect_uri(uri(name))
    return h


def eno(e):
    """The numeric errno of an nbd.Error (its .errno is the name)."""
    return e.args[1] if len(e.args) > 1 else None


def expect_error(what, want, fn, *args, **kw):
    """fn(*args) must fail with an NBD error whose errno is in want."""
    if isinstance(want, int):
        want = (want,)
    try:
        r = fn(*args, **kw)
    except nbd.Error as e:
        if eno(e) not in want:
            raise AssertionError("%s: got errno %s (%s), want %s" % (
                what, e.errno, e.string,
                "/".join(errno.errorcode[w] for w in want)))
        return
    raise AssertionError("%s: succeeded (returned %r), want %s" % (
        what, r if not isinstance(r, (bytes, bytearray)) or len(r) < 16 else "%d bytes" % len(r),
        "/".join(errno.errorcode[w] for w in want)))


def pattern(seed, n):
    return random.Random(seed).randbytes(n)


FAILED = []


class section:
    """with section("what"): a group of checks; a failure is reported with
    its traceback and the script goes on with the next group (reconnecting
    if the connection died), so one run reports every bug."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        print("- " + self.name, flush=True)

    def __exit__(self, typ, val, tb):
        global h
        if typ is None:
            return False
        if not issubclass(typ, (AssertionError, nbd.Error, OSError, EOFError)):
            return False
        import traceback
        print("FAIL [%s]: %s: %s" % (self.name, typ.__name__, val), flush=True)
        traceback.print_tb(tb, file=sys.stdout)
        FAILED.append(self.name)
        try:
            h.pread(1, 0)
        except Exception:
            print("  (connection lost; reconnecting)", flush=True)
            h = connect()
        # Resynchronise the model so later groups test their own things;
        # first let requests of a connection the server dropped finish (an
        # unacknowledged write may still land).
        time.sleep(1)
        model[:] = h.pread(SIZE, 0)
        return True


h = connect()
SIZE = h.get_size()
model = bytearray(SIZE)
step("edge volume is %d bytes (%d chunks + %d bytes)" % (SIZE, SIZE // CHUNK, SIZE % CHUNK))
assert SIZE % CHUNK != 0 and SIZE % 4096 != 0, "the test wants a ragged last chunk"
assert h.get_structured_replies_negotiated()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)


def alive(hh=None, name="connection"):
    """The connection still serves a read that matches the model."""
    hh = hh or h
    off = rng.randrange(SIZE - 4096)
    got = hh.pread(4096, off)
    assert got == model[off:off + 4096], "%s: read after error does not match the model" % name


def write(off, data, flags=0, hh=None):
    (hh or h).pwrite(data, off, flags)
    model[off:off + len(data)] = data


def check(off, n, what, hh=None):
    got = (hh or h).pread(n, off)
    if got != model[off:off + n]:
        bad = next(i for i in range(n) if got[i] != model[off + i])
        raise AssertionError("%s: data differs from the model at byte %d (offset %d): got %02x want %02x"
                             % (what, bad, off + bad, got[bad], model[off + bad]))


def connections(name):
    with urllib.request.urlopen("%s/v1/volumes/%s" % (API, name), timeout=10) as f:
        return json.load(f)["connections"]


def daemon_serves(what):
    """blockd still serves the edge volume, and once the abusive clients are
    gone the API counts no connection to the scratch volume."""
    hh = connect(strict=True)
    off = rng.randrange(SIZE - 4096)
    assert hh.pread(4096, off) == model[off:off + 4096], "after %s: data differs" % what
    hh.shutdown()
    for i in range(50):
        n = connections(SCRATCH)
        if n == 0:
            return
        time.sleep(0.1)
    raise AssertionError("after %s: the API still counts %d connection(s) to %s 5 s after "
                         "its clients went away" % (what, n, SCRATCH))


with section("a fresh volume reads as zeros"):
    check(0, SIZE, "fresh volume")

with section("last byte: write and read"):
    write(SIZE - 1, b"\xab")
    check(SIZE - 1, 1, "last byte")
    write(SIZE - 4096, pattern(1, 4096))
    check(SIZE - 4096, 4096, "last 4096 bytes")
    check(SIZE - 3 * CHUNK, 3 * CHUNK, "tail")

with section("read crossing the end -> EINVAL, connection survives"):
    expect_error("read [SIZE-1, +2)", errno.EINVAL, h.pread, 2, SIZE - 1)
    alive()
    expect_error("read [SIZE-4096, +8192)", errno.EINVAL, h.pread, 8192, SIZE - 4096)
    alive()

with section("write crossing the end -> ENOSPC, nothing written, connection survives"):
    expect_error("write [SIZE-1, +2)", errno.ENOSPC, h.pwrite, b"\x11\x22", SIZE - 1)
    alive()
    expect_error("write [SIZE-512, +4096)", errno.ENOSPC, h.pwrite, b"\x33" * 4096, SIZE - 512)
    alive()
    check(SIZE - 4096, 4096, "tail after refused writes (a refused write must not write)")

with section("offset at and beyond the end -> EINVAL (read) / ENOSPC (write)"):
    expect_error("read 1 at SIZE", errno.EINVAL, h.pread, 1, SIZE)
    expect_error("read 512 at SIZE+1M", errno.EINVAL, h.pread, 512, SIZE + MiB)
    expect_error("read 512 at 2^63", errno.EINVAL, h.pread, 512, 1 << 63)
    expect_error("write 1 at SIZE", errno.ENOSPC, h.pwrite, b"x", SIZE)
    expect_error("write 512 at 2^62", errno.ENOSPC, h.pwrite, b"x" * 512, 1 << 62)
    alive()

with section("offset + length wrapping past 2^64 -> errors (no overflow in bounds checks)"):
    expect_error("read 1024 at 2^64-512", errno.EINVAL, h.pread, 1024, (1 << 64) - 512)
    alive()
    expect_error("write 1024 at 2^64-512", (errno.ENOSPC, errno.EINVAL), h.pwrite, b"w" * 1024,
                 (1 << 64) - 512)
    alive()
    expect_error("trim 2^32-1 at 2^64-4096", errno.EINVAL, h.trim, (1 << 32) - 1, (1 << 64) - 4096)
    expect_error("zero 2^32-1 at 2^64-4096", (errno.ENOSPC, errno.EINVAL), h.zero, (1 << 32) - 1,
                 (1 << 64) - 4096)
    expect_error("block_status 4096 at 2^64-1024", errno.EINVAL, h.block_status, 4096,
                 (1 << 64) - 1024, lambda *a: 0)
    alive()
    check(0, SIZE, "whole volume after wrapping requests")

with section("trim / write_zeroes / block_status crossing the end -> EINVAL / ENOSPC / EINVAL"):
    expect_error("trim crossing end", errno.EINVAL, h.trim, 8192, SIZE - 4096)
    expect_error("zero crossing end", errno.ENOSPC, h.zero, 8192, SIZE - 4096)
    expect_error("zero NO_HOLE crossing end", errno.ENOSPC, h.zero, 8192, SIZE - 4096,
                 nbd.CMD_FLAG_NO_HOLE)
    expect_error("block_status at SIZE", errno.EINVAL, h.block_status, 4096, SIZE, lambda *a: 0)
    alive()
    check(SIZE - 4096, 4096, "tail after refused trim/zero")

with section("unaligned writes and reads: 1 byte, 511 bytes at odd offsets, across chunk boundaries"):
    for i in range(40):
        off = rng.randrange(SIZE)
        write(off, bytes([rng.randrange(256)]))
    for i in range(40):
        off = rng.randrange(1, SIZE - 600) | 1
        write(off, pattern(100 + i, 511))
    for b in range(1, SIZE // CHUNK + 1):
        edge = b * CHUNK
        write(edge - 1, b"\xc1\xc2")                     # 2 bytes straddling the boundary
        write(edge - 300, pattern(200 + b, 1000))        # 1000 bytes across it
    write(CHUNK - 1, pattern(300, 2 * CHUNK + 2))        # 3 chunks touched, unaligned ends
    write(3 * CHUNK + 4095, pattern(301, 4097))
    for i in range(60):
        off = rng.randrange(SIZE - 5000)
        n = rng.randrange(1, 5000)
        check(off, n, "unaligned read [%d, +%d)" % (off, n))
    check(CHUNK - 7, 2 * CHUNK + 14, "read across two chunk boundaries")
    check(0, SIZE, "whole volume after unaligned writes")

with section("zero-length read/write/trim/zero/block_status: success or error, connection survives"):
    for what, fn in (("read 0", lambda: h.pread(0, 4096)),
                     ("write 0", lambda: h.pwrite(b"", 4096)),
                     ("trim 0", lambda: h.trim(0, 4096)),
                     ("zero 0", lambda: h.zero(0, 4096)),
                     ("read 0 at SIZE", lambda: h.pread(0, SIZE)),
                     ("block_status 0", lambda: h.block_status(0, 4096, lambda *a: 0))):
        try:
            fn()
            print("    %s: ok" % what)
        except nbd.Error as e:
            print("    %s: error %s" % (what, e.string))
        alive(name="after " + what)
    check(0, SIZE, "whole volume after zero-length requests")

with section("FUA write, FUA write_zeroes, flush"):
    write(5 * CHUNK + 12345, pattern(400, 70000), nbd.CMD_FLAG_FUA)
    write(2 * CHUNK - 100, pattern(401, 200), nbd.CMD_FLAG_FUA)
    h.flush()
    check(5 * CHUNK, CHUNK, "after FUA")
    h.zero(1000, 5 * CHUNK + 20000, nbd.CMD_FLAG_FUA)
    model[5 * CHUNK + 20000:5 * CHUNK + 21000] = bytes(1000)
    h.trim(1000, 5 * CHUNK + 30000, nbd.CMD_FLAG_FUA)
    model[5 * CHUNK + 30000:5 * CHUNK + 31000] = bytes(1000)
    check(5 * CHUNK, CHUNK, "after zero/trim with FUA")

with section("large writes, which blockd writes in pieces as their payload arrives"):
    # aligned writes of 512 KiB and more go to the disk piece by piece; an
    # unaligned one is written whole; the reply comes when all is written
    write(0, pattern(450, MiB))                        # 4 pieces of 256 KiB
    write(MiB, pattern(451, 4 * MiB))                  # 8 pieces of 512 KiB
    write(5 * MiB + 4096, pattern(452, 768 * 1024), nbd.CMD_FLAG_FUA)   # 3 pieces, FUA
    write(6 * MiB + 4096 * 7, pattern(453, 1300 * 1024))             # 6, the last one short
    write(3 * MiB + 1, pattern(454, MiB))               # unaligned: whole
    check(0, SIZE, "whole volume after large writes")
    # two in flight at once, then eight (past the rule that cuts writes
    # only at low depth), replies in any order
    for seed, n in ((460, 2), (470, 8)):
        cookies = [h.aio_pwrite(pattern(seed + i, MiB), i * MiB) for i in range(n)]
        while h.aio_in_flight():
            h.poll(-1)
        assert all(h.aio_command_completed(c) for c in cookies), "a write in flight failed"
        for i in range(n):
            model[i * MiB:(i + 1) * MiB] = pattern(seed + i, MiB)
    check(0, SIZE, "whole volume after large writes in flight together")
    hs = connect(SCRATCH)
    big = pattern(480, 32 * MiB)                       # the largest payload: 8 pieces of 4 MiB
    hs.pwrite(big, 16 * MiB)
    assert hs.pread(32 * MiB, 16 * MiB) == big, "32 MiB write read back differs"
    # request buffers over 1 MiB are kept for the next large request: a
    # smaller one in a larger buffer writes and reads only its own bytes
    small = pattern(481, 2 * MiB)
    hs.pwrite(small, 20 * MiB)
    big = big[:4 * MiB] + small + big[6 * MiB:]
    assert hs.pread(3 * MiB, 19 * MiB) == big[3 * MiB:6 * MiB], "2 MiB write in a kept buffer"
    assert hs.pread(32 * MiB, 16 * MiB) == big, "32 MiB after the 2 MiB write"
    hs.shutdown()

def chunks_of(hh, n, off, flags=0):
    """pread_structured: the data, and the (offset, length, "data" or
    "hole") of each chunk."""
    got = []
    kind = {nbd.READ_DATA: "data", nbd.READ_HOLE: "hole"}
    data = hh.pread_structured(n, off, lambda sub, o, status, err:
                               got.append((o, len(sub), kind[status])) or 0, flags)
    return data, got


def covers(chunks, off, n):
    """The chunks cover [off, off + n) exactly, without overlap."""
    pos = off
    for o, ln, _ in sorted(chunks):
        assert o == pos, "chunk at %d, want %d: gap or overlap in %r" % (o, pos, chunks)
        pos += ln
    assert pos == off + n, "chunks end at %d, want %d" % (pos, off + n)


with section("large reads, which blockd sends in pieces as they are read"):
    # aligned reads of 512 KiB and more come back as one chunk per piece,
    # each sent once read, the next piece read meanwhile; the volume holds
    # written chunks and holes here (one 4 MiB read spans both, the last
    # piece of a 3 MiB one is a hole).  A piece that is all hole comes as an
    # OFFSET_HOLE chunk.  A fresh connection: pieces are only for a client
    # that keeps about one request in flight.
    write(7 * MiB, pattern(490, 4096))                 # a chunk with a little data
    h.trim(MiB, 2 * MiB)                               # and a hole
    model[2 * MiB:3 * MiB] = bytes(MiB)
    hr = connect()
    for off, n, pieces in ((0, MiB, 4), (0, 4 * MiB, 8), (4 * MiB, 4 * MiB, 8), (0, 3 * MiB, 8),
                           (4096 * 3, 768 * 1024, 3), (4096 * 5, 1300 * 1024, 6), (0, 8 * MiB, 8)):
        data, got = chunks_of(hr, n, off)
        assert data == model[off:off + n], "read of %d at %d differs from the model" % (n, off)
        covers(got, off, n)
        assert len(got) == pieces, "read of %d at %d: %d chunks, want %d" % (n, off, len(got), pieces)
        for o, ln, k in got:        # chunk 2 was trimmed whole: a hole
            assert k == "hole" or not 2 * MiB <= o < 3 * MiB, "read of %d at %d: %r" % (n, off, got)
            assert k == "data" or model[o:o + ln] == bytes(ln), "read of %d at %d: %r" % (n, off, got)
    # what is not cut: an unaligned read, one under 512 KiB, one with DF
    for off, n, flags in ((1, MiB, 0), (0, 256 * 1024, 0), (0, 4 * MiB, nbd.CMD_FLAG_DF)):
        data, got = chunks_of(hr, n, off, flags)
        assert data == model[off:off + n], "read of %d at %d differs from the model" % (n, off)
        assert got == [(off, n, "data")], "read of %d at %d (flags %d): chunks %r, want one" % (
            n, off, flags, got)
    # reads in flight together (past the rule that cuts them only at low
    # depth)
    for n in (2, 8):
        bufs = [bytearray(MiB) for _ in range(n)]
        cookies = [hr.aio_pread(bufs[i], (i % 8) * MiB) for i in range(n)]
        while hr.aio_in_flight():
            hr.poll(-1)
        assert all(hr.aio_command_completed(c) for c in cookies), "a read in flight failed"
        for i in range(n):
            assert bytes(bufs[i]) == model[(i % 8) * MiB:(i % 8 + 1) * MiB], "read %d of %d" % (i, n)
    hr.shutdown()
    hs = connect(SCRATCH)
    big = pattern(491, 32 * MiB)                       # the largest read: 8 pieces of 4 MiB
    hs.pwrite(big, 16 * MiB)
    data, got = chunks_of(hs, 32 * MiB, 16 * MiB)
    assert data == big, "32 MiB read differs"
    covers(got, 16 * MiB, 32 * MiB)
    assert len(got) == 8, "32 MiB read in %d chunks, want 8" % len(got)
    hs.pwrite(pattern(492, 16 * MiB), 0)               # data for the raw reads below
    hs.shutdown()


with section("never-written space reads as an OFFSET_HOLE chunk, not as zeros on the wire"):
    # scratch: data up to 48 MiB (big ends there), never written after it
    hs = connect(SCRATCH)
    for off, n, flags, want in (
            (60 * MiB, 4096, 0, [(60 * MiB, 4096, "hole")]),
            (60 * MiB + 7, 1000, 0, [(60 * MiB + 7, 1000, "hole")]),        # unaligned
            (50 * MiB, 65536, nbd.CMD_FLAG_DF, [(50 * MiB, 65536, "hole")]),  # one content chunk
            (49 * MiB, 3 * MiB, 0, 8),               # in 8 pieces, all holes
            (47 * MiB + 512 * 1024, MiB, 0, 4),      # 4 pieces: two of data, two holes
            # one chunk with data and zeros: the zeros filled in around the
            # part read from the pool (aligned, unaligned, with DF)
            (48 * MiB - 32768, 65536, 0, [(48 * MiB - 32768, 65536, "data")]),
            (48 * MiB - 5000, 10000, 0, [(48 * MiB - 5000, 10000, "data")]),
            (48 * MiB - 4096, MiB + 8192, nbd.CMD_FLAG_DF, [(48 * MiB - 4096, MiB + 8192, "data")])):
        if off == 48 * MiB - 4096:
            hs.pwrite(pattern(493, 4096), 49 * MiB)    # data, hole, data in one read
        data, got = chunks_of(hs, n, off, flags)
        expect = bytearray(n)
        if off < 48 * MiB:
            expect[:48 * MiB - off] = big[off - 16 * MiB:]
        if off + n > 49 * MiB and off < 49 * MiB:
            expect[49 * MiB - off:49 * MiB - off + 4096] = pattern(493, 4096)
        assert data == expect, "read of %d at %d differs" % (n, off)
        covers(got, off, n)
        if isinstance(want, list):
            assert got == want, "read of %d at %d (flags %d): chunks %r, want %r" % (n, off, flags, got, want)
        else:
            assert len(got) == want, "read of %d at %d: %d chunks, want %d" % (n, off, len(got), want)
            for o, ln, k in got:
                assert k == ("data" if o < 48 * MiB else "hole"), "read of %d at %d: %r" % (n, off, got)
    hs.shutdown()
    # a client without structured replies gets the zeros themselves
    hp = nbd.NBD()
    hp.set_request_structured_replies(False)
    hp.connect_uri(uri(SCRATCH))
    assert not hp.get_structured_replies_negotiated()
    assert hp.pread(65536, 56 * MiB) == bytes(65536), "simple reply of a hole"
    assert hp.pread(4 * MiB, 52 * MiB) == bytes(4 * MiB), "simple reply of a large hole"
    hp.shutdown()


def api(method, path, body=None):
    req = urllib.request.Request(API + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=10) as f:
        return f.status


with section("large writes right after a snapshot: whole-chunk pieces, and the snapshot keeps the old data"):
    # a client with one write in flight: after a snapshot its large writes
    # are cut at chunk boundaries, so that each piece replaces a chunk
    # without copying it; one that does not start on a chunk boundary goes
    # whole; either way the snapshot reads what was there before
    hs = connect(SCRATCH)
    before = hs.pread(12 * MiB, 0)
    assert api("POST", "/v1/volumes/%s/snapshots" % SCRATCH, {"name": "pw"}) == 201
    w1, w2, w3 = pattern(494, 4 * MiB), pattern(495, 3 * MiB), pattern(496, 2 * MiB + 4096)
    hs.pwrite(w1, 0)                                 # 4 pieces of 1 MiB
    hs.pwrite(w2, 4 * MiB + 512 * 1024)              # not on a chunk boundary: whole
    hs.pwrite(w3, 8 * MiB, nbd.CMD_FLAG_FUA)         # 2 whole chunks and 4 KiB of a third
    after = bytearray(before)
    after[0:4 * MiB] = w1
    after[4 * MiB + 512 * 1024:7 * MiB + 512 * 1024] = w2
    after[8 * MiB:10 * MiB + 4096] = w3
    assert hs.pread(12 * MiB, 0) == after, "the volume after large writes past a snapshot"
    hs.shutdown()
    hp = connect(SCRATCH + "@pw", strict=True)
    assert hp.pread(12 * MiB, 0) == before, "the snapshot changed under large writes"
    hp.shutdown()
    assert api("DELETE", "/v1/snapshots/%s@pw" % SCRATCH) == 204


with section("trim whole chunks and partial ranges, then read zeros (blockd's trim zeroes)"):
    for c in range(SIZE // CHUNK):               # every chunk has data now
        write(c * CHUNK + 4096, pattern(500 + c, 8192))
    h.trim(CHUNK, 1 * CHUNK)                     # chunk 1, exactly
    model[1 * CHUNK:2 * CHUNK] = bytes(CHUNK)
    h.trim(3 * CHUNK + 777, 3 * CHUNK + 100)     # chunk 3 (partly) .. chunk 6 (partly)
    model[3 * CHUNK + 100:6 * CHUNK + 877] = bytes(3 * CHUNK + 777)
    h.trim(300, SIZE - 300)                      # the ragged end
    model[SIZE - 300:SIZE] = bytes(300)
    check(0, SIZE, "whole volume after trims")

with section("write_zeroes: plain and NO_HOLE; aligned and unaligned"):
    write(0, pattern(600, CHUNK))                # chunk 0 full of data
    write(7 * CHUNK, pattern(601, CHUNK))        # chunk 7 full of data
    write(4 * CHUNK, pattern(602, CHUNK))        # chunk 4 full of data
    h.zero(CHUNK, 7 * CHUNK)                     # whole chunk
    model[7 * CHUNK:8 * CHUNK] = bytes(CHUNK)
    h.zero(CHUNK, 4 * CHUNK, nbd.CMD_FLAG_NO_HOLE)  # whole chunk, must stay allocated
    model[4 * CHUNK:5 * CHUNK] = bytes(CHUNK)
    h.zero(513, 1001)                            # unaligned, inside chunk 0
    model[1001:1514] = bytes(513)
    h.zero(3000, CHUNK - 1500, nbd.CMD_FLAG_NO_HOLE)  # unaligned, across chunk 0/1
    model[CHUNK - 1500:CHUNK + 1500] = bytes(3000)
    h.zero(2 * CHUNK + 10, 2 * CHUNK - 5)        # across two boundaries, covers chunk 2 whole
    model[2 * CHUNK - 5:4 * CHUNK + 5] = bytes(2 * CHUNK + 10)
    check(0, SIZE, "whole volume after write_zeroes")

with section("write_zeroes with FAST_ZERO: success or ENOTSUP, and an ENOTSUP changes nothing"):
    write(0, pattern(603, CHUNK + 8192))
    write(5 * CHUNK, pattern(604, 16384))
    for what, cnt, off in (("FAST_ZERO unaligned", 4321, 12345),
                           ("FAST_ZERO whole chunk", CHUNK, 0),
                           ("FAST_ZERO|NO_HOLE", 8192, 5 * CHUNK)):
        flags = nbd.CMD_FLAG_FAST_ZERO | (nbd.CMD_FLAG_NO_HOLE if "NO_HOLE" in what else 0)
        try:
            h.zero(cnt, off, flags)
            model[off:off + cnt] = bytes(cnt)
            print("    %s: done" % what)
        except nbd.Error as e:
            assert eno(e) == errno.ENOTSUP, "%s: %s (want success or ENOTSUP)" % (what, e)
            print("    %s: ENOTSUP" % what)
        check(max(0, off - 4096), cnt + 8192, what)
    check(0, SIZE, "whole volume after fast zeroes")


def extents(off, n):
    """[(offset, length, flags)] covering [off, off+n) as the server reports it."""
    out = []
    pos = off
    while pos < off + n:
        got = []

        def cb(ctx, o, entries, err):
            if ctx == nbd.CONTEXT_BASE_ALLOCATION:
                got.append((o, list(entries)))
            return 0
        h.block_status(off + n - pos, pos, cb)
        assert len(got) == 1, "block_status at %d: %d base:allocation replies" % (pos, len(got))
        o, e = got[0]
        assert o == pos, (o, pos)
        assert e and len(e) % 2 == 0, e
        for i in range(0, len(e), 2):
            ln, fl = e[i], e[i + 1]
            assert ln > 0, "zero-length extent at %d: %r" % (pos, e)
            out.append((pos, ln, fl))
            pos += ln
    return out


def flags_over(ext, lo, hi):
    """Set of flags of the extents that overlap [lo, hi)."""
    return {fl for (o, ln, fl) in ext if o < hi and o + ln > lo}


with section("block_status: hole|zero for unmapped chunks, data for written ones"):
    write(0, pattern(700, CHUNK))                # chunk 0: data
    write(5 * CHUNK + 100, pattern(701, 5000))   # chunk 5: data
    write(6 * CHUNK, pattern(702, CHUNK))        # chunk 6: data ...
    h.zero(CHUNK, 6 * CHUNK)                     # ... then zeroed whole (no NO_HOLE)
    model[6 * CHUNK:7 * CHUNK] = bytes(CHUNK)
    write(2 * CHUNK, pattern(703, 4096))         # chunk 2: data ...
    h.trim(CHUNK, 2 * CHUNK)                     # ... then trimmed whole
    model[2 * CHUNK:3 * CHUNK] = bytes(CHUNK)
    h.zero(CHUNK, 4 * CHUNK, nbd.CMD_FLAG_NO_HOLE)   # chunk 4: zeroes, allocated
    model[4 * CHUNK:5 * CHUNK] = bytes(CHUNK)
    ext = extents(0, SIZE)
    print("    " + " ".join("%d+%d:%d" % x for x in ext))
    assert ext[-1][0] + ext[-1][1] >= SIZE, "extents do not reach the end"
    for c, want, why in ((0, {0}, "written data"),
                         (5, {0}, "written data"),
                         (2, {3}, "trimmed whole chunk"),
                         (6, {3}, "write_zeroes over a whole chunk without NO_HOLE")):
        got = flags_over(ext, c * CHUNK, (c + 1) * CHUNK)
        assert got == want, "chunk %d (%s): block status flags %s, want %s" % (c, why, got, want)
    got = flags_over(ext, 4 * CHUNK, 5 * CHUNK)
    assert not any(f & nbd.STATE_HOLE for f in got), \
        "chunk 4 was zeroed with NO_HOLE: it must stay allocated, block status says %s" % got
    for (o, ln, fl) in ext:                      # an extent claiming ZERO must read as zeros
        if fl & nbd.STATE_ZERO:
            hi = min(o + ln, SIZE)
            assert model[o:hi] == bytes(hi - o), "extent %d+%d says zero but has data" % (o, ln)

with section("block_status with REQ_ONE, at an unaligned offset, and at the ragged end"):
    got = []
    h.block_status(3 * CHUNK, 2 * CHUNK + 5,
                   lambda ctx, o, e, err: got.append(list(e)) or 0, nbd.CMD_FLAG_REQ_ONE)
    assert len(got) == 1 and len(got[0]) == 2, got
    assert got[0][1] == 3 and 0 < got[0][0] <= 3 * CHUNK, got
    got = []
    h.block_status(100, SIZE - 100, lambda ctx, o, e, err: got.append(list(e)) or 0)
    assert got and got[0][0] == 100 and got[0][1] in (0, 2, 3), "last 100 bytes: %r" % got
    check(0, SIZE, "whole volume after block status")

with section("400 concurrent aio_pwrite with distinct unaligned patterns, then 400 aio_pread"):
    NSLOT = 400
    slot = SIZE // NSLOT
    ios = []
    for i in range(NSLOT):
        n = rng.randrange(1, slot - 64)
        off = i * slot + rng.randrange(slot - n)
        ios.append((off, pattern(10000 + i, n)))
    cookies = []
    bufs = []
    for off, data in ios:
        b = nbd.Buffer.from_bytearray(bytearray(data))
        bufs.append(b)
        flags = nbd.CMD_FLAG_FUA if off % 7 == 0 else 0
        cookies.append(h.aio_pwrite(b, off, flags=flags))
        model[off:off + len(data)] = data
    peak = 0
    while h.aio_in_flight() > 0:
        peak = max(peak, h.aio_in_flight())
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c), "aio_pwrite cookie %d not completed" % c
    print("    (%d in flight at the peak)" % peak)
    rbufs = [nbd.Buffer(len(data)) for off, data in ios]
    cookies = [h.aio_pread(rb, off) for rb, (off, data) in zip(rbufs, ios)]
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c, rb, (off, data) in zip(cookies, rbufs, ios):
        assert h.aio_command_completed(c)
        assert rb.to_bytearray() == data, "aio read back at %d (+%d) differs" % (off, len(data))
    check(0, SIZE, "whole volume after concurrent writes")

with section("300 mixed aio requests in flight together: writes, reads, zeroes, trims, flushes"):
    slot = SIZE // 300
    cookies = []
    keep = []
    for i in range(300):
        n = rng.randrange(1, slot // 2)
        off = i * slot + rng.randrange(slot - n)   # disjoint: completion order does not matter
        k = i % 5
        if k in (0, 1):
            data = pattern(20000 + i, n)
            b = nbd.Buffer.from_bytearray(bytearray(data))
            keep.append(b)
            cookies.append(h.aio_pwrite(b, off))
            model[off:off + n] = data
        elif k == 2:
            rb = nbd.Buffer(n)
            keep.append((rb, off, bytes(model[off:off + n])))
            cookies.append(h.aio_pread(rb, off))
        elif k == 3:
            cookies.append(h.aio_zero(n, off))
            model[off:off + n] = bytes(n)
        else:
            cookies.append(h.aio_trim(n, off))
            model[off:off + n] = bytes(n)
            cookies.append(h.aio_flush())
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
    for x in keep:
        if isinstance(x, tuple):
            rb, off, want = x
            assert rb.to_bytearray() == want, "concurrent aio read at %d differs" % off
    check(0, SIZE, "whole volume after mixed aio")

with section("two connections see each other's writes once acknowledged"):
    h2 = connect()
    assert h2.can_multi_conn()
    write(3 * CHUNK + 5, pattern(800, 10000))
    check(3 * CHUNK, CHUNK, "second connection reads first's write", hh=h2)
    write(6 * CHUNK - 3, pattern(801, 9999), hh=h2)
    check(6 * CHUNK - 4096, 20000, "first connection reads second's write")
    h2.zero(50000, 7 * CHUNK - 20000)
    model[7 * CHUNK - 20000:7 * CHUNK + 30000] = bytes(50000)
    h2.flush()
    check(7 * CHUNK - 30000, 70000, "first connection sees second's zeroes")
    h2.trim(CHUNK, 2 * CHUNK)
    model[2 * CHUNK:3 * CHUNK] = bytes(CHUNK)
    check(2 * CHUNK - 10, CHUNK + 20, "first connection sees second's trim")
    h2.shutdown()

with section("oversize requests on a separate connection (read > 32 MiB max)"):
    hs = connect(SCRATCH)
    big = hs.get_block_size(nbd.SIZE_MAXIMUM)
    assert big == 32 * MiB, big
    try:
        hs.pread(big + 4096, 0)
        print("    read of %d bytes: served" % (big + 4096))
    except nbd.Error as e:
        assert eno(e) in (errno.EINVAL, errno.EOVERFLOW, errno.ENOMEM), e
        print("    read of %d bytes: %s" % (big + 4096, e.string))
    hs.pread(4096, 0)                            # the connection lives on
    hs.shutdown()
    daemon_serves("oversize read")

# ---- raw protocol client -----------------------------------------------------------------------
NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY = 7, 8
NBD_REP_ACK, NBD_REP_INFO = 1, 3
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_FLUSH = 0, 1, 2, 3
REQ_MAGIC, SIMPLE_MAGIC, STRUCTURED_MAGIC = 0x25609513, 0x67446698, 0x668e33ef


class Raw:
    """A minimal fixed-newstyle NBD client: NBD_OPT_GO, then simple replies
    (or, with structured, NBD_OPT_STRUCTURED_REPLY first)."""

    def __init__(self, name, structured=False):
        self.s = socket.create_connection((HOST, PORT), timeout=10)
        magic, opt, hflags = struct.unpack(">8s8sH", self.recv(18))
        assert magic == b"NBDMAGIC" and opt == b"IHAVEOPT", (magic, opt)
        assert hflags & 1, "server is not fixed newstyle"
        self.s.sendall(struct.pack(">I", 1 | (hflags & 2)))   # FIXED_NEWSTYLE [+ NO_ZEROES]
        if structured:
            self.s.sendall(b"IHAVEOPT" + struct.pack(">II", NBD_OPT_STRUCTURED_REPLY, 0))
            rmagic, ropt, rtype, rlen = struct.unpack(">QIII", self.recv(20))
            assert (ropt, rtype, rlen) == (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, 0), (ropt, rtype)
        nm = name.encode()
        data = struct.pack(">I", len(nm)) + nm + struct.pack(">H", 0)
        self.s.sendall(b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, len(data)) + data)
        self.size = None
        while True:
            rmagic, ropt, rtype, rlen = struct.unpack(">QIII", self.recv(20))
            assert rmagic == 0x3e889045565a9, hex(rmagic)
            assert ropt == NBD_OPT_GO, ropt
            payload = self.recv(rlen)
            if rtype == NBD_REP_INFO and struct.unpack(">H", payload[:2])[0] == 0:
                self.size, self.tflags = struct.unpack(">QH", payload[2:12])
            elif rtype == NBD_REP_ACK:
                break
            else:
                assert not rtype & 0x80000000, "NBD_OPT_GO failed: %x %r" % (rtype, payload)
        assert self.size is not None, "no NBD_INFO_EXPORT reply"
        self.cookie = 0

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError("server closed the connection after %d of %d bytes" % (len(b), n))
            b += c
        return b

    def send(self, typ, off, length, flags=0, payload=b""):
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, self.cookie, off, length)
                       + payload)
        return self.cookie

    def reply(self, cookie, datalen=0):
        """(error, data) of the simple reply to cookie; data only on success."""
        magic, err, ck = struct.unpack(">IIQ", self.recv(16))
        assert magic == SIMPLE_MAGIC, "reply magic %x" % magic
        assert ck == cookie, "reply cookie %d, want %d" % (ck, cookie)
        data = self.recv(datalen) if err == 0 and datalen else b""
        return err, data

    def call(self, typ, off, length, flags=0, payload=b""):
        ck = self.send(typ, off, length, flags, payload)
        return self.reply(ck, length if typ == NBD_CMD_READ else 0)

    def read_ok(self, off, n):
        err, data = self.call(NBD_CMD_READ, off, n)
        assert err == 0, "raw read failed: %d" % err
        return data

    def wait_closed(self):
        """The server closes the connection within 10 s."""
        try:
            while self.s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("server did not close the connection within 10 s")

    def close(self):
        self.s.close()


with section("raw client: handshake, read, write"):
    r = Raw(EDGE)
    assert r.size == SIZE, (r.size, SIZE)
    assert r.read_ok(4 * CHUNK + 1, 5000) == model[4 * CHUNK + 1:4 * CHUNK + 5001]
    err, _ = r.call(NBD_CMD_WRITE, 4 * CHUNK + 3, 100, payload=b"\x5a" * 100)
    assert err == 0, err
    model[4 * CHUNK + 3:4 * CHUNK + 103] = b"\x5a" * 100

with section("raw: unknown command type 99 -> EINVAL, connection continues"):
    err, _ = r.call(99, 0, 512)
    assert err == errno.EINVAL, "unknown command: error %d, want EINVAL (22)" % err
    assert r.read_ok(0, 4096) == model[0:4096]

with section("raw: write with an unknown flag bit -> EINVAL, payload consumed, nothing written"):
    err, _ = r.call(NBD_CMD_WRITE, 4 * CHUNK, 512, flags=1 << 10, payload=b"\xee" * 512)
    assert err == errno.EINVAL, "write with flag 0x400: error %d, want EINVAL (22)" % err
    assert r.read_ok(4 * CHUNK, 4096) == model[4 * CHUNK:4 * CHUNK + 4096], \
        "write with an unknown flag changed the data"

with section("raw: read with an unknown flag bit -> EINVAL with no payload, connection continues"):
    err, _ = r.call(NBD_CMD_READ, 0, 4096, flags=1 << 12)
    assert err == errno.EINVAL, "read with flag 0x1000: error %d, want EINVAL (22)" % err
    assert r.read_ok(CHUNK - 10, 20) == model[CHUNK - 10:CHUNK + 10]

with section("raw: flags not applicable to the command -> EINVAL (NO_HOLE on write, REQ_ONE on read)"):
    err, _ = r.call(NBD_CMD_WRITE, 4 * CHUNK, 16, flags=2, payload=b"\xdd" * 16)
    ok_write = err == 0
    if ok_write:
        model[4 * CHUNK:4 * CHUNK + 16] = b"\xdd" * 16
    err2, _ = r.call(NBD_CMD_READ, 0, 16, flags=8)
    if err2 == 0:
        r.recv(16)
    assert r.read_ok(4 * CHUNK, 4096) == model[4 * CHUNK:4 * CHUNK + 4096]
    assert err == errno.EINVAL, "write with NO_HOLE: error %d, want EINVAL (22)" % err
    assert err2 == errno.EINVAL, "read with REQ_ONE: error %d, want EINVAL (22)" % err2

with section("raw: write crossing the end (payload sent) -> ENOSPC, connection continues"):
    err, _ = r.call(NBD_CMD_WRITE, SIZE - 100, 200, payload=b"\xcc" * 200)
    assert err == errno.ENOSPC, "write crossing end: error %d, want ENOSPC (28)" % err
    assert r.read_ok(SIZE - 200, 200) == model[SIZE - 200:SIZE]

with section("raw: 64 pipelined reads, replies matched by cookie"):
    cks = {}
    for i in range(64):
        off = rng.randrange(SIZE - 4096)
        cks[r.send(NBD_CMD_READ, off, 4096)] = off
    for _ in range(64):
        magic, err, ck = struct.unpack(">IIQ", r.recv(16))
        assert magic == SIMPLE_MAGIC and err == 0 and ck in cks, (hex(magic), err, ck)
        assert r.recv(4096) == model[cks[ck]:cks[ck] + 4096], "pipelined read %d" % ck
        del cks[ck]

with section("raw: 300 pipelined 4 KiB writes (more than --max-inflight's 256) all answered"):
    cks = {}
    data = {}
    for i in range(300):
        off = 2 * CHUNK + i * 4096 + 3
        data[off] = pattern(30000 + i, 4096)
        cks[r.send(NBD_CMD_WRITE, off, 4096, payload=data[off])] = off
    for n in range(300):
        try:
            magic, err, ck = struct.unpack(">IIQ", r.recv(16))
        except EOFError as e:
            raise AssertionError("server closed the connection after %d of 300 replies "
                                 "(blockd.log: bad magic?): %s" % (n, e))
        assert magic == SIMPLE_MAGIC and err == 0 and ck in cks, (hex(magic), err, ck)
        off = cks.pop(ck)
        model[off:off + 4096] = data[off]
    assert r.read_ok(2 * CHUNK, 301 * 4096) == model[2 * CHUNK:2 * CHUNK + 301 * 4096]

with section("raw: 16 pipelined 128 KiB writes in one send, then half a request header: all answered"):
    # After a large write blockd reads the next header alone, so that its
    # payload goes straight into a request buffer.  Sixteen of them come in
    # one send, the last followed by 10 bytes of a header: every write must
    # be written and answered while the rest of that header has not come.
    base, n, wlen = 5 * CHUNK, 16, 128 * 1024
    cks, data, blob = {}, {}, []
    for i in range(n):
        off = base + i * wlen
        data[off] = pattern(31000 + i, wlen)
        r.cookie += 1
        cks[r.cookie] = off
        blob.append(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, r.cookie, off, wlen) + data[off])
    r.cookie += 1
    rd = struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, r.cookie, base, n * wlen)
    r.s.sendall(b"".join(blob) + rd[:10])
    for k in range(n):
        try:
            magic, err, ck = struct.unpack(">IIQ", r.recv(16))
        except socket.timeout:
            raise AssertionError("%d of %d large writes answered; the rest waited for the "
                                 "rest of the next header" % (k, n))
        assert magic == SIMPLE_MAGIC and err == 0 and ck in cks, (hex(magic), err, ck)
        off = cks.pop(ck)
        model[off:off + wlen] = data[off]
    r.s.sendall(rd[10:])
    err, got = r.reply(r.cookie, n * wlen)
    assert err == 0 and got == model[base:base + n * wlen], "the 16 large writes read back differ"

with section("raw: flush then NBD_CMD_DISC: flush answered, then the server closes"):
    r.close()
    r = Raw(EDGE)
    ck = r.send(NBD_CMD_FLUSH, 0, 0)
    r.send(NBD_CMD_DISC, 0, 0)
    err, _ = r.reply(ck)
    assert err == 0, "flush before disc: %d" % err
    r.wait_closed()
    r.close()

with section("raw: garbage instead of a request (bad magic) -> that connection dropped, others served"):
    r = Raw(EDGE)
    r.s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(100))
    r.wait_closed()
    r.close()
    daemon_serves("bad magic")

with section("raw: write header with a partial payload, then close (FIN, and RST)"):
    r = Raw(SCRATCH)
    r.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 65536) + b"\x77" * 1000)
    r.close()
    r = Raw(SCRATCH)
    r.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 65536) + b"\x77" * 1000)
    r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.close()
    r = Raw(SCRATCH)                             # half a request header
    r.s.sendall(struct.pack(">IHHQ", REQ_MAGIC, 0, NBD_CMD_READ, 1))
    r.close()
    daemon_serves("partial requests")

with section("raw: a large write cut off after some of its pieces were written (FIN, and RST)"):
    # with a pause, the pieces blockd has are written before the end; without
    # one, the connection usually fails while they are on the disk
    for rst, pause in ((False, 0.2), (True, 0.2)) + ((False, 0), (True, 0)) * 10:
        r = Raw(SCRATCH)
        r.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 4 * MiB)
                    + b"\x78" * (1536 * 1024))
        time.sleep(pause)
        if rst:
            r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.close()
    daemon_serves("large writes cut off")

def structured_replies(r):
    """Read structured reply chunks until the server closes: {cookie: [DONE
    chunks seen, data bytes]}."""
    seen = {}
    while True:
        try:
            hdr = r.recv(20)
        except EOFError:
            return seen
        magic, flags, typ, cookie, length = struct.unpack(">IHHQI", hdr)
        assert magic == STRUCTURED_MAGIC, "reply magic %x" % magic
        r.recv(length)
        assert typ == 1, "chunk type %d, want OFFSET_DATA" % typ
        d = seen.setdefault(cookie, [0, 0])
        d[0] += flags & 1
        d[1] += length - 8


with section("raw: large reads in pieces, cut off in the middle of their replies (RST), or drained"):
    # blockd is sending a read's chunks while it reads its next pieces; a
    # client that goes away leaves pieces on the disk and chunks in a send.
    # A close with replies unread is a reset; with a pause or without.
    reads = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, i + 1, i * 4 * MiB, 4 * MiB)
                     for i in range(4))
    for pause in (0.2,) + (0,) * 10:
        r = Raw(SCRATCH, structured=True)
        r.s.sendall(reads)
        r.recv(MiB + 12345)
        time.sleep(pause)
        r.close()
    # The client shuts its side after the requests: blockd answers all four
    # (each in 8 chunks, one with DONE), then closes.
    for _ in range(3):
        r = Raw(SCRATCH, structured=True)
        r.s.sendall(reads)
        r.s.shutdown(socket.SHUT_WR)
        seen = structured_replies(r)
        assert seen == {i + 1: [1, 4 * MiB] for i in range(4)}, seen
        r.close()
    # a client without structured replies gets a large read whole
    r = Raw(EDGE)
    assert r.read_ok(0, 4 * MiB) == model[:4 * MiB], "4 MiB read with a simple reply differs"
    r.close()
    daemon_serves("large reads cut off")

with section("raw: 200 writes in flight, replies never read, then RST"):
    r = Raw(SCRATCH)
    r.s.sendall(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, i + 1, i * 65536, 65536)
                         + os.urandom(65536) for i in range(200)))
    r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.close()
    daemon_serves("writes abandoned in flight")

with section("raw: 300 reads whose replies fill the socket, client never reads, then close"):
    r = Raw(SCRATCH)
    r.s.sendall(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, i + 1, i * 65536, 65536)
                         for i in range(300)))
    time.sleep(0.5)
    r.close()
    daemon_serves("reads abandoned in flight")

with section("raw: disconnect at every stage of the handshake; bad client flags dropped"):
    for cut in ("greeting", "flags", "option-header", "option-data", "bad-client-flags"):
        s = socket.create_connection((HOST, PORT), timeout=10)
        if cut != "greeting":
            s.recv(18)
        if cut in ("option-header", "option-data"):
            s.sendall(struct.pack(">I", 1))
        if cut == "option-header":
            s.sendall(b"IHAVEOPT\0\0\0")
        if cut == "option-data":
            s.sendall(b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, 100) + b"\0\0\0\x05sc")
        if cut == "bad-client-flags":
            s.sendall(struct.pack(">I", 0x80000001))
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise AssertionError("unknown client flags: server did not drop the connection")
        s.close()
    daemon_serves("handshake cut short")

with section("raw: option with an absurd length (4 GiB-1) -> refused or dropped, daemon unharmed"):
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.recv(18)
    s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, 0xffffffff)
              + b"\0" * 64)
    time.sleep(0.3)
    s.close()
    daemon_serves("huge option length")

with section("libnbd client submitting 300 aio writes, SIGKILLed without waiting"):
    child = subprocess.Popen([sys.executable, "-c", r"""
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
bufs = [nbd.Buffer.from_bytearray(bytearray(os.urandom(65536))) for i in range(300)]
for i, b in enumerate(bufs):
    h.aio_pwrite(b, i * 65536)
for i in range(20):
    h.poll(0)                  # push some of them out
print("submitted", flush=True)
sys.stdin.read()               # wait to be killed
""", uri(SCRATCH)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"submitted"
    child.send_signal(signal.SIGKILL)
    child.wait()
    daemon_serves("client killed")

with section("libnbd client: aio writes then shutdown(SHUTDOWN_ABANDON_PENDING)"):
    hs = connect(SCRATCH, strict=True)
    bufs = [nbd.Buffer.from_bytearray(bytearray(os.urandom(65536))) for i in range(300)]
    for i, b in enumerate(bufs):
        hs.aio_pwrite(b, i * 65536)
    hs.poll(0)
    hs.shutdown(nbd.SHUTDOWN_ABANDON_PENDING)
    del hs
    daemon_serves("client gone mid-request")

with section("final: the whole edge volume equals the model, on a fresh connection"):
    h.flush()
    h.shutdown()
    h = connect(strict=True)
    check(0, SIZE, "whole volume at the end")
    h.shutdown()

if FAILED:
    print("nbd-edges: %d group(s) failed: %s" % (len(FAILED), "; ".join(FAILED)), flush=True)
    sys.exit(1)
print("nbd-edges: all checks passed", flush=True)
