#!/usr/bin/python3
# tests/integration/nbd-edges.py — NBD protocol edge cases against a live
# blockd, driven by libnbd (python bindings) and by a hand-written raw-socket
# client for what libnbd will not send.  Run by test-nbdsh-edges.sh:
#
#   /usr/bin/python3 nbd-edges.py HOST PORT EDGE SCRATCH
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

import nbd

HOST, PORT, EDGE, SCRATCH = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
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


def expect_error(what, want, fn, *args, **kw):
    """fn(*args) must fail with an NBD error whose errno is in want."""
    if isinstance(want, int):
        want = (want,)
    try:
        r = fn(*args, **kw)
    except nbd.Error as e:
        if e.errno not in want:
            raise AssertionError("%s: got errno %s (%s), want %s" % (
                what, e.errno and errno.errorcode.get(e.errno, e.errno), e.string,
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
        # resynchronise the model so later groups test their own things
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


# ---- a fresh volume reads as zeros ------------------------------------------
step("fresh volume reads as zeros")
check(0, SIZE, "fresh volume")

# ---- the last byte ------------------------------------------------------------
step("last byte: write and read")
write(SIZE - 1, b"\xab")
check(SIZE - 1, 1, "last byte")
write(SIZE - 4096, pattern(1, 4096))
check(SIZE - 4096, 4096, "last 4096 bytes")
check(SIZE - 3 * CHUNK, 3 * CHUNK - 0, "tail")

# ---- requests crossing or beyond the end ----------------------------------------
step("read crossing the end -> EINVAL, connection survives")
expect_error("read [SIZE-1, +2)", errno.EINVAL, h.pread, 2, SIZE - 1)
alive()
expect_error("read [SIZE-4096, +8192)", errno.EINVAL, h.pread, 8192, SIZE - 4096)
alive()
step("write crossing the end -> ENOSPC, nothing written, connection survives")
expect_error("write [SIZE-1, +2)", errno.ENOSPC, h.pwrite, b"\x11\x22", SIZE - 1)
alive()
expect_error("write [SIZE-512, +4096)", errno.ENOSPC, h.pwrite, b"\x33" * 4096, SIZE - 512)
alive()
check(SIZE - 4096, 4096, "tail after refused writes (a refused write must not write)")
step("offset at and beyond the end -> errors")
expect_error("read 1 at SIZE", errno.EINVAL, h.pread, 1, SIZE)
expect_error("read 512 at SIZE+1M", errno.EINVAL, h.pread, 512, SIZE + MiB)
expect_error("read 512 at 2^63", errno.EINVAL, h.pread, 512, 1 << 63)
expect_error("write 1 at SIZE", errno.ENOSPC, h.pwrite, b"x", SIZE)
expect_error("write 512 at 2^62", errno.ENOSPC, h.pwrite, b"x" * 512, 1 << 62)
alive()
step("offset + length wrapping past 2^64 -> errors (no overflow in bounds checks)")
expect_error("read 1024 at 2^64-512", (errno.EINVAL,), h.pread, 1024, (1 << 64) - 512)
alive()
expect_error("write 1024 at 2^64-512", (errno.ENOSPC, errno.EINVAL), h.pwrite, b"w" * 1024, (1 << 64) - 512)
alive()
expect_error("trim 2^32-1 at 2^64-4096", (errno.EINVAL,), h.trim, (1 << 32) - 1, (1 << 64) - 4096)
expect_error("zero 2^32-1 at 2^64-4096", (errno.ENOSPC, errno.EINVAL), h.zero, (1 << 32) - 1, (1 << 64) - 4096)
expect_error("block_status 4096 at 2^64-1024", (errno.EINVAL,), h.block_status, 4096,
             (1 << 64) - 1024, lambda *a: 0)
alive()
step("trim / write_zeroes / block_status crossing the end -> EINVAL / ENOSPC / EINVAL")
expect_error("trim crossing end", errno.EINVAL, h.trim, 8192, SIZE - 4096)
expect_error("zero crossing end", errno.ENOSPC, h.zero, 8192, SIZE - 4096)
expect_error("zero NO_HOLE crossing end", errno.ENOSPC, h.zero, 8192, SIZE - 4096, nbd.CMD_FLAG_NO_HOLE)
expect_error("block_status at SIZE", errno.EINVAL, h.block_status, 4096, SIZE, lambda *a: 0)
alive()
check(SIZE - 4096, 4096, "tail after refused trim/zero")

# ---- oversize requests ------------------------------------------------------------
step("read larger than the advertised maximum (32 MiB) -> error or data; connection survives")
big = h.get_block_size(nbd.SIZE_MAXIMUM)
assert big == 32 * MiB, big
try:
    got = h.pread(big + 4096, 0) if SIZE >= big + 4096 else None
except nbd.Error as e:
    assert e.errno in (errno.EINVAL, errno.EOVERFLOW, errno.ENOMEM), e
alive()

# ---- unaligned I/O against the model ------------------------------------------------
step("unaligned writes and reads: 1 byte, 511 bytes at odd offsets, across chunk boundaries")
for i in range(40):
    off = rng.randrange(SIZE)
    write(off, bytes([rng.randrange(256)]))
for i in range(40):
    off = rng.randrange(1, SIZE - 600) | 1
    write(off, pattern(100 + i, 511))
for b in range(1, SIZE // CHUNK):
    edge = b * CHUNK
    write(edge - 1, b"\xc1\xc2")                         # 2 bytes straddling the boundary
    write(edge - 300, pattern(200 + b, 1000))            # 1000 bytes across it
write(CHUNK - 1, pattern(300, 2 * CHUNK + 2))            # 3 chunks touched, ends unaligned
write(3 * CHUNK + 4095, pattern(301, 4097))
for i in range(60):
    off = rng.randrange(SIZE - 5000)
    n = rng.randrange(1, 5000)
    check(off, n, "unaligned read [%d, +%d)" % (off, n))
check(CHUNK - 7, 2 * CHUNK + 14, "read across two chunk boundaries")
check(0, SIZE, "whole volume after unaligned writes")

# ---- zero-length requests --------------------------------------------------------------
step("zero-length read/write/trim/zero/block_status: success or error, connection survives")
for what, fn in (("read 0", lambda: h.pread(0, 4096)),
                 ("write 0", lambda: h.pwrite(b"", 4096)),
                 ("trim 0", lambda: h.trim(0, 4096)),
                 ("zero 0", lambda: h.zero(0, 4096)),
                 ("read 0 at SIZE", lambda: h.pread(0, SIZE)),
                 ("block_status 0", lambda: h.block_status(0, 4096, lambda *a: 0))):
    try:
        fn()
    except nbd.Error as e:
        print("    %s: error %s" % (what, e.string))
    alive(name="after " + what)
check(0, SIZE, "whole volume after zero-length requests")

# ---- FUA and flush ----------------------------------------------------------------------
step("FUA write, flush")
write(5 * CHUNK + 12345, pattern(400, 70000), nbd.CMD_FLAG_FUA)
write(2 * CHUNK - 100, pattern(401, 200), nbd.CMD_FLAG_FUA)
h.flush()
check(5 * CHUNK, CHUNK, "after FUA")
step("FUA on trim and write_zeroes accepted")
h.zero(1000, 5 * CHUNK + 20000, nbd.CMD_FLAG_FUA)
model[5 * CHUNK + 20000:5 * CHUNK + 21000] = bytes(1000)
check(5 * CHUNK, CHUNK, "after zero FUA")

# ---- trim -------------------------------------------------------------------------------
step("trim whole chunks and partial ranges, then read zeros")
for c in range(SIZE // CHUNK):               # every chunk has data now
    write(c * CHUNK + 4096, pattern(500 + c, 8192))
h.trim(2 * CHUNK, 1 * CHUNK)                 # chunk 1, exactly
model[CHUNK:3 * CHUNK][:] = model[CHUNK:3 * CHUNK]  # no-op, clarity
model[1 * CHUNK:2 * CHUNK] = bytes(CHUNK)
h.trim(3 * CHUNK + 777, 3 * CHUNK + 100)     # inside chunk 3
model[3 * CHUNK + 100:3 * CHUNK + 100 + 3 * CHUNK + 777] = bytes(3 * CHUNK + 777)  # chunks 3..6 partly
check(0, SIZE, "whole volume after trims (blockd's trim makes zeros)")

# ---- write_zeroes ---------------------------------------------------------------------------
step("write_zeroes: plain, NO_HOLE, FAST_ZERO; aligned and unaligned")
write(0, pattern(600, CHUNK))                # chunk 0 full of data
write(7 * CHUNK, pattern(601, CHUNK))        # chunk 7 full of data
write(4 * CHUNK, pattern(602, CHUNK))        # chunk 4 full of data
h.zero(CHUNK, 7 * CHUNK)                     # whole chunk, may unmap
model[7 * CHUNK:8 * CHUNK] = bytes(CHUNK)
h.zero(CHUNK, 4 * CHUNK, nbd.CMD_FLAG_NO_HOLE)  # whole chunk, must stay allocated
model[4 * CHUNK:5 * CHUNK] = bytes(CHUNK)
h.zero(513, 1001)                            # unaligned, inside chunk 0
model[1001:1514] = bytes(513)
h.zero(3000, CHUNK - 1500, nbd.CMD_FLAG_NO_HOLE)  # unaligned, across chunk 0/1
model[CHUNK - 1500:CHUNK + 1500] = bytes(3000)
check(0, SIZE, "whole volume after write_zeroes")
for what, cnt, off in (("FAST_ZERO unaligned", 4321, 12345),
                       ("FAST_ZERO whole chunk", CHUNK, 0),
                       ("FAST_ZERO|NO_HOLE", 8192, 5 * CHUNK)):
    flags = nbd.CMD_FLAG_FAST_ZERO | (nbd.CMD_FLAG_NO_HOLE if "NO_HOLE" in what else 0)
    try:
        h.zero(cnt, off, flags)
        model[off:off + cnt] = bytes(cnt)
        print("    %s: done" % what)
    except nbd.Error as e:
        assert e.errno == errno.ENOTSUP, "%s: %s (want success or ENOTSUP)" % (what, e)
        print("    %s: ENOTSUP" % what)
    check(max(0, off - 4096), cnt + 8192, what + " (an ENOTSUP must not change data)")
check(0, SIZE, "whole volume after fast zeroes")

# ---- block status ---------------------------------------------------------------------------
step("block_status: hole|zero for unmapped chunks, data for written ones")
h.flush()
write(6 * CHUNK, pattern(700, CHUNK))        # chunk 6: data
h.trim(CHUNK, 2 * CHUNK)                     # chunk 2: hole
model[2 * CHUNK:3 * CHUNK] = bytes(CHUNK)
h.zero(CHUNK, 6 * CHUNK)                     # chunk 6 zeroed without NO_HOLE


def extents(off, n):
    """[(offset, length, flags)] covering [off, off+n), chunk-by-chunk as the server says."""
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


ext = extents(0, SIZE)
step("    " + " ".join("%d+%d:%d" % x for x in ext))
assert ext[-1][0] + ext[-1][1] >= SIZE, "extents do not reach the end"
assert all(ext[i][0] + ext[i][1] == ext[i + 1][0] for i in range(len(ext) - 1)), "extents not contiguous"
for c, want, why in ((0, {0}, "written data"),
                     (1, {0}, "written data (partly zeroed with NO_HOLE)"),
                     (2, {3}, "trimmed whole chunk"),
                     (6, {3}, "write_zeroes on a whole chunk (no NO_HOLE)")):
    got = flags_over(ext, c * CHUNK, (c + 1) * CHUNK)
    assert got == want, "chunk %d (%s): block status flags %s, want %s" % (c, why, got, want)
got = flags_over(ext, 4 * CHUNK, 5 * CHUNK)
assert not any(f & nbd.STATE_HOLE for f in got), \
    "chunk 4 was zeroed with NO_HOLE: must stay allocated, block status says %s" % got
for (o, ln, fl) in ext:                      # any extent claiming ZERO must read as zeros
    if fl & nbd.STATE_ZERO:
        hi = min(o + ln, SIZE)
        assert model[o:hi] == bytes(hi - o), "extent %d+%d says zero but the model has data" % (o, ln)
step("block_status with REQ_ONE, and at an unaligned offset")
got = []
h.block_status(3 * CHUNK, 2 * CHUNK + 5,
               lambda ctx, o, e, err: got.append(list(e)) or 0, nbd.CMD_FLAG_REQ_ONE)
assert len(got) == 1 and len(got[0]) == 2 and got[0][1] == 3 and 0 < got[0][0] <= 3 * CHUNK, got
got = []
h.block_status(100, SIZE - 100, lambda ctx, o, e, err: got.append(list(e)) or 0)
assert got and got[0][0] == 100 and got[0][1] in (0, 2, 3), "last 100 bytes: %r" % got
check(0, SIZE, "whole volume after block status")

# ---- many concurrent requests --------------------------------------------------------------
step("400 concurrent aio_pwrite with distinct unaligned patterns, then 400 aio_pread")
NSLOT = 400
slot = SIZE // NSLOT
ios = []
for i in range(NSLOT):
    n = rng.randrange(1, slot - 64)
    off = i * slot + rng.randrange(slot - n)
    data = pattern(10000 + i, n)
    ios.append((off, data))
cookies = []
bufs = []
for off, data in ios:
    b = nbd.Buffer.from_bytearray(bytearray(data))
    bufs.append(b)
    flags = nbd.CMD_FLAG_FUA if off % 7 == 0 else 0
    cookies.append(h.aio_pwrite(b, off, flags=flags))
    model[off:off + len(data)] = data
peak = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c), "aio_pwrite cookie %d not completed" % c
step("    (%d in flight at the peak)" % peak)
rbufs = [nbd.Buffer(len(data)) for off, data in ios]
cookies = [h.aio_pread(rb, off) for rb, (off, data) in zip(rbufs, ios)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c, rb, (off, data) in zip(cookies, rbufs, ios):
    assert h.aio_command_completed(c)
    assert rb.to_bytearray() == data, "aio read back at %d (+%d) differs" % (off, len(data))
step("mixed aio: writes, reads of other ranges, flushes, trims, zeroes all in flight together")
cookies = []
keep = []
for i in range(300):
    k = i % 5
    off = rng.randrange(SIZE - 70000)
    n = rng.randrange(1, 65536)
    # ranges are disjoint per batch so the order of completion does not matter
    off = (i * (SIZE // 300)) + rng.randrange(SIZE // 300 - 65536)
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
        cookies.append(h.aio_flush())
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
for x in keep:
    if isinstance(x, tuple):
        rb, off, want = x
        assert rb.to_bytearray() == want, "concurrent aio read at %d differs" % off
check(0, SIZE, "whole volume after concurrent aio")

# ---- two connections -------------------------------------------------------------------------
step("two connections see each other's writes once acknowledged")
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
h2.shutdown()

# ---- raw protocol client -----------------------------------------------------------------------
NBD_OPT_GO = 7
NBD_OPT_STRUCTURED_REPLY = 8
NBD_REP_ACK, NBD_REP_INFO = 1, 3
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_FLUSH = 0, 1, 2, 3
REQ_MAGIC, SIMPLE_MAGIC = 0x25609513, 0x67446698


class Raw:
    """A minimal fixed-newstyle NBD client with simple replies."""

    def __init__(self, name):
        self.s = socket.create_connection((HOST, PORT), timeout=10)
        magic, opt, hflags = struct.unpack(">8s8sH", self.recv(18))
        assert magic == b"NBDMAGIC" and opt == b"IHAVEOPT", (magic, opt)
        assert hflags & 1, "server is not fixed newstyle"
        cflags = 1 | (hflags & 2)                  # FIXED_NEWSTYLE, NO_ZEROES if offered
        self.s.sendall(struct.pack(">I", cflags))
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
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, self.cookie, off, length) + payload)
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

    def close(self):
        self.s.close()


step("raw client: handshake, read, write")
r = Raw(EDGE)
assert r.size == SIZE, (r.size, SIZE)
assert r.read_ok(4 * CHUNK + 1, 5000) == model[4 * CHUNK + 1:4 * CHUNK + 5001]
err, _ = r.call(NBD_CMD_WRITE, 4 * CHUNK + 3, 100, payload=b"\x5a" * 100)
assert err == 0, err
model[4 * CHUNK + 3:4 * CHUNK + 103] = b"\x5a" * 100
step("raw: unknown command type 99 -> EINVAL, connection continues")
err, _ = r.call(99, 0, 512)
assert err == errno.EINVAL, "unknown command: error %d, want EINVAL (22)" % err
assert r.read_ok(0, 4096) == model[0:4096]
step("raw: write with an unknown flag bit -> EINVAL, payload consumed, nothing written")
err, _ = r.call(NBD_CMD_WRITE, 4 * CHUNK, 512, flags=1 << 10, payload=b"\xee" * 512)
assert err == errno.EINVAL, "write with flag 0x400: error %d, want EINVAL (22)" % err
assert r.read_ok(4 * CHUNK, 4096) == model[4 * CHUNK:4 * CHUNK + 4096], \
    "write with an unknown flag changed the data"
step("raw: read with an unknown flag bit -> EINVAL with no payload, connection continues")
err, _ = r.call(NBD_CMD_READ, 0, 4096, flags=1 << 12)
assert err == errno.EINVAL, "read with flag 0x1000: error %d, want EINVAL (22)" % err
assert r.read_ok(CHUNK - 10, 20) == model[CHUNK - 10:CHUNK + 10]
step("raw: flags valid only on other commands -> EINVAL (NO_HOLE on write, REQ_ONE on read)")
err, _ = r.call(NBD_CMD_WRITE, 4 * CHUNK, 16, flags=2, payload=b"\xdd" * 16)
assert err == errno.EINVAL, "write with NO_HOLE: error %d, want EINVAL (22)" % err
err, _ = r.call(NBD_CMD_READ, 0, 16, flags=8)
assert err == errno.EINVAL, "read with REQ_ONE: error %d, want EINVAL (22)" % err
assert r.read_ok(4 * CHUNK, 4096) == model[4 * CHUNK:4 * CHUNK + 4096]
step("raw: write crossing the end (payload sent) -> ENOSPC, connection continues")
err, _ = r.call(NBD_CMD_WRITE, SIZE - 100, 200, payload=b"\xcc" * 200)
assert err == errno.ENOSPC, "write crossing end: error %d, want ENOSPC (28)" % err
assert r.read_ok(SIZE - 200, 200) == model[SIZE - 200:SIZE]
step("raw: pipelined requests, replies matched by cookie")
cks = {}
for i in range(64):
    off = rng.randrange(SIZE - 4096)
    cks[r.send(NBD_CMD_READ, off, 4096)] = off
for _ in range(64):
    magic, err, ck = struct.unpack(">IIQ", r.recv(16))
    assert magic == SIMPLE_MAGIC and err == 0 and ck in cks, (hex(magic), err, ck)
    assert r.recv(4096) == model[cks[ck]:cks[ck] + 4096], "pipelined read %d" % ck
    del cks[ck]
step("raw: NBD_CMD_DISC closes cleanly")
r.send(NBD_CMD_FLUSH, 0, 0)
r.send(NBD_CMD_DISC, 0, 0)
magic, err, ck = struct.unpack(">IIQ", r.recv(16))
assert err == 0, "flush before disc: %d" % err
r.s.settimeout(10)
assert r.s.recv(1) == b"", "server sent more after NBD_CMD_DISC"
r.close()


def daemon_serves(what):
    hh = connect(strict=True)
    off = rng.randrange(SIZE - 4096)
    assert hh.pread(4096, off) == model[off:off + 4096], "after %s: data differs" % what
    hh.shutdown()


step("raw: garbage instead of a request (bad magic) -> server drops that connection, serves others")
r = Raw(EDGE)
r.s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(100))
r.s.settimeout(10)
try:
    while r.s.recv(4096):
        pass                                  # the server may say nothing; it must close
except ConnectionResetError:
    pass
r.close()
daemon_serves("bad magic")

step("raw: write header with a partial payload, then close")
r = Raw(SCRATCH)
r.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 65536) + b"\x77" * 1000)
r.close()
r = Raw(SCRATCH)
r.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 65536) + b"\x77" * 1000)
r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST
r.close()
step("raw: half a request header, then close")
r = Raw(SCRATCH)
r.s.sendall(struct.pack(">IHHQ", REQ_MAGIC, 0, NBD_CMD_READ, 1))
r.close()
daemon_serves("partial payload")

step("raw: 200 writes in flight, replies never read, then RST")
r = Raw(SCRATCH)
buf = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_WRITE, i + 1, i * 65536, 65536) + os.urandom(65536)
               for i in range(200))
r.s.sendall(buf)
r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
r.close()
step("raw: 300 reads in flight (replies fill the socket), client never reads, then close")
r = Raw(SCRATCH)
r.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
r.s.sendall(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, i + 1, 0, 1 << 20)
                     for i in range(300)))
time.sleep(0.5)
r.close()
daemon_serves("requests abandoned in flight")

step("raw: disconnect during the handshake at every stage")
for cut in ("greeting", "flags", "option-header", "option-data"):
    s = socket.create_connection((HOST, PORT), timeout=10)
    if cut != "greeting":
        s.recv(18)
        s.sendall(struct.pack(">I", 1 if cut != "flags" else 0x80000001))
    if cut == "option-header":
        s.sendall(b"IHAVEOPT\0\0\0")
    if cut == "option-data":
        s.sendall(b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, 100) + b"\0\0\0\x05sc")
    s.close()
daemon_serves("handshake cut short")

step("raw: option with an absurd length (4 GiB-1) -> refused or dropped, not an allocation")
s = socket.create_connection((HOST, PORT), timeout=10)
s.recv(18)
s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, 0xffffffff) + b"\0" * 64)
s.settimeout(10)
try:
    while s.recv(4096):
        pass
except (ConnectionResetError, socket.timeout):
    pass
s.close()
daemon_serves("huge option length")

step("libnbd client submitting 300 aio writes, then killed without waiting")
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
step("libnbd client: aio writes then shutdown(ABANDON_PENDING)")
hs = connect(SCRATCH, strict=True)
bufs = [nbd.Buffer.from_bytearray(bytearray(os.urandom(65536))) for i in range(300)]
for i, b in enumerate(bufs):
    hs.aio_pwrite(b, i * 65536)
hs.poll(0)
hs.shutdown(nbd.SHUTDOWN_ABANDON_PENDING)
del hs
daemon_serves("clients gone mid-request")

# ---- final comparison of the whole edge volume ----------------------------------------------------
step("final: whole edge volume equals the model, on a fresh connection")
h.flush()
h.shutdown()
h = connect(strict=True)
check(0, SIZE, "whole volume at the end")
h.shutdown()
print("nbd-edges: all checks passed", flush=True)
