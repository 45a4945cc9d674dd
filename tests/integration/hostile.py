#!/usr/bin/python3
"""tests/integration/hostile.py — NBD clients that break the rules, on raw
sockets, each checked against what doc/proto.md says the server must do.

  hostile.py cases HOST PORT VOLUME [CASE...]
        run the hostile cases (all, or those named) against VOLUME (>= 1 MiB)
  hostile.py hold HOST PORT IDLE SLOW SECONDS STATUSFILE
        open IDLE connections that never send a byte and SLOW ones that send
        one byte a second, hold them SECONDS, write how many the server
        closed (with their ages) to STATUSFILE every second
  hostile.py flood HOST PORT N
        open N connections at once; print how many the server accepted
        (sent the greeting) and how many it closed without one

Under nbdsh (STEADY_STOP and STEADY_OUT defined, handle h connected), it is
the steady client of test-nbd-hostile.sh: verified writes and reads until the
file STEADY_STOP exists, then "ops N errors E max_latency S" in STEADY_OUT.
"""
import os
import random
import select
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT, OPT_EXTENDED_HEADERS = 8, 10, 11
REP_ACK, REP_INFO = 1, 3
ERR = 1 << 31
REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_TOO_BIG = ERR | 1, ERR | 3, ERR | 6, ERR | 9
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS = range(8)
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16
EINVAL, ENOSPC = 22, 28
REPLY_TYPE_ERROR = (1 << 15) + 1

TIMEOUT = 10.0


class Closed(Exception):
    pass


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cookie = 0
        self.structured = False

    def rx(self, n):
        b = b""
        while len(b) < n:
            try:
                c = self.s.recv(n - len(b))
            except ConnectionResetError:
                c = b""
            if not c:
                raise Closed(f"closed after {len(b)} of {n} bytes")
            b += c
        return b

    def tx(self, b):
        self.s.sendall(b)

    def close(self):
        self.s.close()

    def greeting(self):
        magic, opt, hflags = struct.unpack(">QQH", self.rx(18))
        assert magic == NBDMAGIC and opt == OPT_MAGIC, "bad greeting"
        assert hflags & 1, "server is not fixed newstyle"
        return hflags

    def start(self, flags=3):
        self.greeting()
        self.tx(struct.pack(">I", flags))

    def opt(self, o, data=b"", length=None):
        self.tx(struct.pack(">QII", OPT_MAGIC, o, len(data) if length is None else length) + data)

    def reply(self):
        magic, o, typ, ln = struct.unpack(">QIII", self.rx(20))
        assert magic == REP_MAGIC, f"option reply magic {magic:#x}"
        return o, typ, self.rx(ln)

    def go(self, name, structured=True, expect_ok=True):
        if structured and not self.structured:
            self.opt(OPT_STRUCTURED_REPLY)
            o, typ, _ = self.reply()
            assert (o, typ) == (OPT_STRUCTURED_REPLY, REP_ACK)
            self.structured = True
        name = name.encode() if isinstance(name, str) else name
        self.opt(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        size = None
        while True:
            o, typ, data = self.reply()
            assert o == OPT_GO, f"reply to option {o} while waiting for NBD_OPT_GO"
            if typ == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                size = struct.unpack(">Q", data[2:10])[0]
            if typ == REP_ACK:
                assert expect_ok, "NBD_OPT_GO succeeded unexpectedly"
                return size
            if typ & ERR:
                assert not expect_ok, f"NBD_OPT_GO failed: {typ:#x} {data!r}"
                return typ

    def request(self, cmd, offset=0, length=0, flags=0, payload=b""):
        self.cookie += 1
        self.tx(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, self.cookie, offset, length) + payload)
        return self.cookie

    def result(self, cookie, read_len=0):
        """Returns (error, data) of the reply to cookie."""
        magic = struct.unpack(">I", self.rx(4))[0]
        if magic == SIMPLE_MAGIC:
            err, ck = struct.unpack(">IQ", self.rx(12))
            assert ck == cookie, f"reply to cookie {ck}, expected {cookie}"
            data = self.rx(read_len) if err == 0 and read_len else b""
            return err, data
        assert magic == STRUCT_MAGIC, f"reply magic {magic:#x}"
        err, data = 0, b""
        while True:
            flags, typ, ck, ln = struct.unpack(">HHQI", self.rx(16))
            assert ck == cookie, f"reply to cookie {ck}, expected {cookie}"
            body = self.rx(ln)
            if typ & (1 << 15):
                err = struct.unpack(">I", body[:4])[0]
            elif typ == 1:
                data += body[8:]
            elif typ == 2:                       # OFFSET_HOLE: reads as zeros
                data += bytes(struct.unpack(">I", body[8:12])[0])
            if flags & 1:
                return err, data
            magic = struct.unpack(">I", self.rx(4))[0]
            assert magic == STRUCT_MAGIC

    def expect_closed(self, within=5.0, what=""):
        """The server must close: no reply bytes, EOF within the time."""
        self.s.settimeout(within)
        t0 = time.monotonic()
        try:
            b = self.s.recv(65536)
        except ConnectionResetError:
            b = b""
        except socket.timeout:
            raise AssertionError(f"{what}: the server did not close within {within} s")
        assert b == b"", f"{what}: the server sent {len(b)} bytes instead of closing: {b[:40]!r}"
        return time.monotonic() - t0


# ---- the cases --------------------------------------------------------------
def case_bad_client_flags(a):
    """Client flags the server does not know: MUST close (proto.md)."""
    c = Conn(a.host, a.port)
    c.start(flags=0xFFFFFFFF)
    c.expect_closed(what="unknown client flags")


def case_bad_option_magic(a):
    """An option without IHAVEOPT: the stream cannot be trusted, close."""
    c = Conn(a.host, a.port)
    c.start()
    c.tx(b"IHAVEOPX" + struct.pack(">II", OPT_GO, 0))
    c.expect_closed(what="bad option magic")


def case_request_before_negotiation(a):
    """A transmission request straight after the greeting: its first four
    bytes are read as client flags (unknown ones), so the server closes
    without a reply."""
    c = Conn(a.host, a.port)
    c.greeting()
    c.tx(struct.pack(">IHHQQI", REQ_MAGIC, 0, READ, 1, 0, 512))
    c.expect_closed(what="request before negotiation")
    c = Conn(a.host, a.port)        # and after the flags, before any option
    c.start()
    c.tx(struct.pack(">IHHQQI", REQ_MAGIC, 0, READ, 1, 0, 512))
    c.expect_closed(what="request instead of an option")


def case_unknown_options(a):
    """Unknown options get NBD_REP_ERR_UNSUP and the haggling goes on."""
    c = Conn(a.host, a.port)
    c.start()
    for o, data in ((99, b""), (0x7FFFFFFF, b"some data"), (OPT_STARTTLS, b""),
                    (OPT_EXTENDED_HEADERS, b""), (4, b"")):
        c.opt(o, data)
        ro, typ, msg = c.reply()
        assert ro == o and typ == REP_ERR_UNSUP, f"option {o}: reply {typ:#x}"
        msg.decode("utf-8")
    c.go(a.volume)
    ck = c.request(READ, 0, 4096)
    err, data = c.result(ck, 4096)
    assert err == 0 and len(data) == 4096
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_option_length_stall(a):
    """An option that announces 100 MB, sends 1000 bytes and stalls: the
    handshake timeout (2 s in the test) drops it."""
    c = Conn(a.host, a.port)
    c.start()
    c.opt(OPT_GO, b"x" * 1000, length=100 << 20)
    t = c.expect_closed(within=8.0, what="stalled 100 MB option")
    assert t >= 1.0, f"closed after {t:.1f} s, before the handshake timeout"
    print(f"    stalled option dropped after {t:.1f} s")


def case_option_too_big(a):
    """An option longer than the server takes (sent in full): NBD_REP_ERR_TOO_BIG,
    and the connection goes on."""
    c = Conn(a.host, a.port)
    c.start()
    c.opt(OPT_GO, b"\0" * (1 << 20))
    o, typ, _ = c.reply()
    assert (o, typ) == (OPT_GO, REP_ERR_TOO_BIG), f"1 MiB option: reply {typ:#x}"
    c.go(a.volume)
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_option_length_lies_short(a):
    """NBD_OPT_GO whose inner name length runs past the option: an error,
    and the connection goes on."""
    c = Conn(a.host, a.port)
    c.start()
    c.opt(OPT_GO, struct.pack(">I", 4000) + b"disk" + b"\0\0")
    o, typ, _ = c.reply()
    assert typ == REP_ERR_INVALID, f"reply {typ:#x}"
    c.opt(OPT_INFO, struct.pack(">I", 0) + struct.pack(">H", 5) + b"\0\0")
    o, typ, _ = c.reply()
    assert typ == REP_ERR_INVALID, f"reply {typ:#x}"
    c.go(a.volume)
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_long_export_name(a):
    """Names over 4096 bytes (a MUST NOT in proto.md): NBD_OPT_GO gets an
    error reply and the connection goes on; NBD_OPT_EXPORT_NAME cannot
    reply, so the server closes."""
    c = Conn(a.host, a.port)
    c.start()
    typ = c.go("n" * 5000, structured=False, expect_ok=False)
    assert typ in (REP_ERR_INVALID, REP_ERR_TOO_BIG), f"5000-byte name: {typ:#x}"
    typ = c.go("n" * 4096, structured=False, expect_ok=False)
    assert typ == REP_ERR_UNKNOWN, f"4096-byte unknown name: {typ:#x}"
    c.go(a.volume)
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")
    c = Conn(a.host, a.port)
    c.start()
    c.opt(OPT_EXPORT_NAME, b"n" * 5000)
    c.expect_closed(what="NBD_OPT_EXPORT_NAME with a 5000-byte name")


def case_write_too_big(a):
    """A 64 MiB WRITE (beyond the 32 MiB the spec says to accept): the
    server may hard-disconnect rather than swallow it; it must not crash,
    hang or reply with garbage."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    c.request(WRITE, 0, 64 << 20, payload=b"\xAA" * 65536)
    c.expect_closed(what="64 MiB write")


def case_read_too_big(a):
    """A 64 MiB READ: NBD_EINVAL (no data), the connection goes on — with
    structured and with simple replies."""
    for structured in (True, False):
        c = Conn(a.host, a.port)
        c.start()
        c.go(a.volume, structured=structured)
        ck = c.request(READ, 0, 64 << 20)
        err, data = c.result(ck)
        assert err == EINVAL and not data, f"64 MiB read: error {err}"
        ck = c.request(READ, 0, 512)
        err, data = c.result(ck, 512)
        assert err == 0 and len(data) == 512
        c.request(DISC)
        c.expect_closed(what="NBD_CMD_DISC")


def case_bad_flags(a):
    """Flags a command does not allow: NBD_EINVAL; a refused WRITE's payload
    is skipped (not written, not taken for the next header)."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    ck = c.request(WRITE, 0, 4096, payload=b"\x11" * 4096)
    assert c.result(ck)[0] == 0
    bad = [
        (WRITE, 0, 4096, NO_HOLE, b"\x22" * 4096),
        (WRITE, 0, 4096, DF, b"\x22" * 4096),
        (WRITE, 0, 4096, FAST_ZERO, b"\x22" * 4096),
        (WRITE, 0, 4096, 1 << 12, b"\x22" * 4096),
        (READ, 0, 512, REQ_ONE, b""),
        (READ, 0, 512, 1 << 15, b""),
        (TRIM, 0, 4096, FAST_ZERO, b""),
        (FLUSH, 0, 0, DF, b""),
        (WRITE_ZEROES, 0, 4096, DF, b""),
        (BLOCK_STATUS, 0, 4096, 0, b""),     # no meta context was selected
        (CACHE, 0, 4096, 0, b""),            # not advertised
        (0x1234, 0, 0, 0, b""),              # unknown command
    ]
    for cmd, off, ln, fl, payload in bad:
        ck = c.request(cmd, off, ln, fl, payload)
        err, _ = c.result(ck)
        assert err == EINVAL, f"command {cmd} flags {fl:#x}: error {err}, expected NBD_EINVAL"
    ck = c.request(READ, 0, 4096)
    err, data = c.result(ck, 4096)
    assert err == 0 and data == b"\x11" * 4096, "a refused write changed the data"
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")
    # DF without structured replies was not negotiated either
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume, structured=False)
    ck = c.request(READ, 0, 512, DF)
    assert c.result(ck)[0] == EINVAL
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_bounds(a):
    """Beyond the end: NBD_ENOSPC for writes (SHOULD), NBD_EINVAL for reads."""
    c = Conn(a.host, a.port)
    c.start()
    size = c.go(a.volume)
    ck = c.request(WRITE, size - 512, 1024, payload=b"\0" * 1024)
    assert c.result(ck)[0] == ENOSPC
    ck = c.request(READ, 2 ** 64 - 512, 1024)
    assert c.result(ck)[0] == EINVAL
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_vanish_mid_payload(a):
    """The client goes away half way through a WRITE payload, and half way
    through a header."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    c.request(WRITE, 0, 1 << 20, payload=b"\x33" * 1000)
    c.close()
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    c.tx(struct.pack(">IHH", REQ_MAGIC, 0, READ))
    c.close()
    c = Conn(a.host, a.port)
    c.start()
    c.opt(OPT_GO, b"\0\0\0\4di")
    c.close()


def answers(c, reads):
    """Replies in any order until every cookie of reads ({cookie: read
    length}) is answered: {cookie: (error, data)}; a read's data chunks
    are put in place by their offsets."""
    done, partial = {}, {}
    while len(done) < len(reads):
        magic = struct.unpack(">I", c.rx(4))[0]
        if magic == SIMPLE_MAGIC:
            err, ck = struct.unpack(">IQ", c.rx(12))
            assert ck in reads and ck not in done, f"reply to cookie {ck}"
            done[ck] = (err, c.rx(reads[ck]) if err == 0 else b"")
            continue
        assert magic == STRUCT_MAGIC, f"reply magic {magic:#x}"
        flags, typ, ck, ln = struct.unpack(">HHQI", c.rx(16))
        assert ck in reads and ck not in done, f"reply to cookie {ck}"
        body = c.rx(ln)
        err, chunks = partial.pop(ck, (0, []))
        if typ & (1 << 15):
            err = struct.unpack(">I", body[:4])[0]
        elif typ == 1:                           # OFFSET_DATA
            chunks.append((struct.unpack(">Q", body[:8])[0], body[8:]))
        elif typ == 2:                           # OFFSET_HOLE: reads as zeros
            off, n = struct.unpack(">QI", body[:12])
            chunks.append((off, bytes(n)))
        if flags & 1:
            done[ck] = (err, b"".join(d for _, d in sorted(chunks)))
        else:
            partial[ck] = (err, chunks)
    return done


PRIMED = 832 << 10


def prime(c):
    """A large WRITE answered: blockd now reads the connection's next
    header on its own, behind that payload, so that the next large WRITE's
    payload goes straight into its buffer, with the header after it linked."""
    ck = c.request(WRITE, PRIMED, 128 << 10, payload=b"\x30" * (128 << 10))
    assert c.result(ck) == (0, b""), "a large WRITE"


def case_vanish_in_last_piece(a):
    """The client goes away in the last part of a large WRITE's payload, the
    part whose receive the next header's is linked behind: the connection is
    closed, and the server goes on serving others."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    prime(c)
    c.request(WRITE, 0, 128 << 10, payload=b"\x35" * ((128 << 10) - 1000))
    c.close()
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    ck = c.request(READ, 0, 4096)
    assert c.result(ck, 4096)[0] == 0
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_large_writes_in_a_row(a):
    """Large WRITEs sent back to back, with small requests between them and
    a payload that comes in two parts: every request is answered, and what
    was written reads back.  A large WRITE and nothing after it is answered
    too: the receive of a next header behind it holds nothing up."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    prime(c)
    K = 1024
    writes = [(0, 128 * K, 0x41), (128 * K, 4 * K, 0x42), (132 * K, 256 * K, 0x43),
              (388 * K, 68 * K, 0x44), (456 * K, 192 * K, 0x45)]
    reads, out = {}, b""
    for i, (off, ln, b) in enumerate(writes):
        c.cookie += 1
        reads[c.cookie] = 0
        out += struct.pack(">IHHQQI", REQ_MAGIC, 0, WRITE, c.cookie, off, ln) + bytes([b]) * ln
        if i == 1:
            c.cookie += 1
            reads[c.cookie] = 0
            out += struct.pack(">IHHQQI", REQ_MAGIC, 0, FLUSH, c.cookie, 0, 0)
            c.cookie += 1
            reads[c.cookie] = 128 * K
            primed = c.cookie
            out += struct.pack(">IHHQQI", REQ_MAGIC, 0, READ, c.cookie, PRIMED, 128 * K)
    c.tx(out[:200 * K])
    time.sleep(0.2)
    c.tx(out[200 * K:])
    got = answers(c, reads)
    assert all(e == 0 for e, _ in got.values()), "a request failed"
    assert got[primed][1] == b"\x30" * (128 * K), "the READ between the writes"
    ck = c.request(WRITE, 648 * K, 128 * K, payload=b"\x46" * (128 * K))
    assert c.result(ck) == (0, b""), "a large WRITE alone"
    ck = c.request(READ, 0, 776 * K)
    err, data = c.result(ck, 776 * K)
    want = b"".join(bytes([b]) * ln for _, ln, b in writes) + b"\x46" * (128 * K)
    assert err == 0 and data == want, "the writes do not read back"
    c.request(DISC)
    c.expect_closed(what="NBD_CMD_DISC")


def case_bad_request_magic(a):
    """A request with a bad magic: the stream is out of sync, hard disconnect."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    c.tx(struct.pack(">IHHQQI", 0x12345678, 0, READ, 1, 0, 512))
    c.expect_closed(what="bad request magic")


def case_abort(a):
    """NBD_OPT_ABORT: the server MUST reply with NBD_REP_ACK, then close."""
    c = Conn(a.host, a.port)
    c.start()
    c.opt(OPT_ABORT)
    o, typ, _ = c.reply()
    assert (o, typ) == (OPT_ABORT, REP_ACK)
    c.expect_closed(what="NBD_OPT_ABORT")


def case_pipelined_disc(a):
    """Requests pipelined beyond max-inflight, then NBD_CMD_DISC: every
    request sent before the DISC must be answered (proto.md: the server
    handles all outstanding requests before closing).  Run with
    --max-inflight 4."""
    c = Conn(a.host, a.port)
    c.start()
    c.go(a.volume)
    n = 64
    c.tx(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, READ, i + 1, 0, 4096) for i in range(n))
         + struct.pack(">IHHQQI", REQ_MAGIC, 0, DISC, 0, 0, 0))
    c.s.shutdown(socket.SHUT_WR)
    got = 0
    try:
        for i in range(n):
            c.cookie = i + 1
            magic = c.rx(4)
            flags, typ, ck, ln = struct.unpack(">HHQI", c.rx(16))
            c.rx(ln)
            got += 1
    except Closed:
        pass
    assert got == n, f"{n} READs then NBD_CMD_DISC: only {got} replies before the server closed"


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}


class Args:
    pass


def run_cases(argv):
    a = Args()
    a.host, a.port, a.volume = argv[0], int(argv[1]), argv[2]
    names = argv[3:] or [n for n in CASES if n != "pipelined_disc"]
    failed = 0
    for n in names:
        t0 = time.monotonic()
        try:
            CASES[n](a)
            print(f"  ok   {n} ({time.monotonic() - t0:.1f} s)")
        except Exception as e:         # report every case, then fail
            failed += 1
            print(f"  FAIL {n}: {type(e).__name__}: {e}")
    return 1 if failed else 0


# ---- many connections ---------------------------------------------------------
def hold(host, port, idle, slow, seconds, status):
    socks = []
    for i in range(idle + slow):
        s = socket.create_connection((host, port), timeout=10)
        s.setblocking(False)
        socks.append([s, i >= idle, time.monotonic(), None, 0])   # sock, slow, opened, closed_at, sent
    t0 = time.monotonic()
    open_ = list(socks)
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        now = time.monotonic()
        for e in open_:
            s = e[0]
            if e[3] is not None:
                continue
            try:
                while True:           # swallow the greeting, notice EOF
                    b = s.recv(4096)
                    if not b:
                        e[3] = now
                        break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                e[3] = now
            if e[3] is None and e[1]:
                try:
                    s.send(b"\0")     # client flags, one byte a second
                    e[4] += 1
                except OSError:
                    e[3] = now
        closed_idle = sum(1 for e in socks if e[3] is not None and not e[1])
        closed_slow = sum(1 for e in socks if e[3] is not None and e[1])
        with open(status + ".tmp", "w") as f:
            f.write(f"elapsed {now - t0:.0f} open {len(socks) - closed_idle - closed_slow} "
                    f"closed_idle {closed_idle} closed_slow {closed_slow}\n")
        os.rename(status + ".tmp", status)
    for e in socks:
        e[0].close()


def flood(host, port, n):
    socks = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
    greeted = refused = 0
    for s in socks:
        s.settimeout(5)
        try:
            b = s.recv(18)
            if len(b) == 18:
                greeted += 1
            else:
                refused += 1
        except (ConnectionResetError, socket.timeout):
            refused += 1
    print(f"greeted {greeted} refused {refused}")
    for s in socks:
        s.close()


# ---- the steady client (under nbdsh) -------------------------------------------
def steady(h, stop, out):
    size = h.get_size()
    rng = random.Random(1)
    ops = errors = 0
    worst = 0.0
    while not os.path.exists(stop):
        off = rng.randrange(0, size // 4096 - 16) * 4096
        ln = rng.choice((4096, 65536))
        data = bytes([ops & 0xFF]) * ln
        t0 = time.monotonic()
        h.pwrite(data, off)
        back = h.pread(ln, off)
        worst = max(worst, time.monotonic() - t0)
        if back != data:
            errors += 1
        ops += 1
        if ops % 64 == 0:
            h.flush()
    with open(out, "w") as f:
        f.write(f"ops {ops} errors {errors} max_latency {worst:.3f}\n")


if "h" in globals() and "STEADY_STOP" in globals():
    steady(h, STEADY_STOP, STEADY_OUT)    # noqa: F821 (nbdsh defines them)
elif __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "cases":
        sys.exit(run_cases(sys.argv[2:]))
    elif mode == "hold":
        hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             float(sys.argv[6]), sys.argv[7])
    elif mode == "flood":
        flood(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        print(__doc__)
        sys.exit(2)
