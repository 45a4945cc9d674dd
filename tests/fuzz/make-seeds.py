#!/usr/bin/python3
"""tests/fuzz/make-seeds.py — write the seed corpora of the fuzz targets.

    /usr/bin/python3 tests/fuzz/make-seeds.py      # rewrites tests/fuzz/corpus/

Each seed is a valid (or deliberately broken) conversation in the format
its target reads (see the comment at the top of tests/fuzz/fuzz-*.c):
  handshake  the client's bytes after the greeting: flags, options, requests
  requests   transmission-phase bytes after the harness's own NBD_OPT_GO
             (structured replies and base:allocation are negotiated)
  api        a JSON request body (sent to POST /v1/volumes and PATCH
             /v1/volumes/disk)
Seeds are small so that libFuzzer's mutations stay fast; the volume the NBD
targets use is "disk", 16 MiB.
"""
import os
import struct
import sys

OPT_MAGIC = 0x49484156454F5054
REQ_MAGIC = 0x25609513
DISK = b"disk"
SIZE = 16 << 20

(OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_PEEK_EXPORT, OPT_STARTTLS, OPT_INFO,
 OPT_GO, OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT,
 OPT_EXTENDED_HEADERS) = range(1, 12)
INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = range(4)
(READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS) = range(8)
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16


def flags(f=3):
    return struct.pack(">I", f)


def opt(o, data=b"", length=None):
    return struct.pack(">QII", OPT_MAGIC, o, len(data) if length is None else length) + data


def go_data(name=DISK, infos=()):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + \
        b"".join(struct.pack(">H", i) for i in infos)


def meta_data(name=DISK, queries=(b"base:allocation",)):
    return struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries)) + \
        b"".join(struct.pack(">I", len(q)) + q for q in queries)


def req(cmd, offset=0, length=0, fl=0, cookie=None, payload=None):
    global _cookie
    if cookie is None:
        _cookie += 1
        cookie = _cookie
    h = struct.pack(">IHHQQI", REQ_MAGIC, fl, cmd, cookie, offset, length)
    if cmd == WRITE and payload is None:
        payload = bytes((offset + i) * 7 & 0xFF for i in range(length))
    return h + (payload or b"")


_cookie = 0
MODERN = flags() + opt(OPT_STRUCTURED_REPLY) + opt(OPT_SET_META_CONTEXT, meta_data())

_cookie = 0
HANDSHAKE = {
    "go-plain": flags() + opt(OPT_GO, go_data()) + req(READ, 0, 512) + req(DISC),
    "go-modern": MODERN + opt(OPT_GO, go_data(infos=(INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE)))
    + req(WRITE, 4096, 64) + req(BLOCK_STATUS, 0, SIZE) + req(READ, 4096, 64, DF) + req(DISC),
    "export-name": flags(1) + opt(OPT_EXPORT_NAME, DISK) + req(READ, 0, 512) + req(FLUSH) + req(DISC),
    "export-name-unknown": flags() + opt(OPT_EXPORT_NAME, b"nope"),
    "list-abort": flags() + opt(OPT_LIST) + opt(OPT_LIST, b"x") + opt(OPT_ABORT),
    "info": flags() + opt(OPT_INFO, go_data(infos=(INFO_EXPORT, INFO_NAME, 99)))
    + opt(OPT_INFO, go_data(b"nope")) + opt(OPT_GO, go_data(b"")) + opt(OPT_GO, go_data()),
    "list-meta": flags() + opt(OPT_STRUCTURED_REPLY)
    + opt(OPT_LIST_META_CONTEXT, meta_data(queries=(b"base:",)))
    + opt(OPT_LIST_META_CONTEXT, meta_data(queries=()))
    + opt(OPT_LIST_META_CONTEXT, meta_data(queries=(b"qemu:dirty-bitmap:x", b"base:allocation")))
    + opt(OPT_ABORT),
    "meta-wrong-export": flags() + opt(OPT_SET_META_CONTEXT, meta_data()) + opt(OPT_STRUCTURED_REPLY)
    + opt(OPT_SET_META_CONTEXT, meta_data(b"other")) + opt(OPT_GO, go_data())
    + req(BLOCK_STATUS, 0, 4096) + req(DISC),
    "unsupported": flags() + opt(99) + opt(OPT_STARTTLS) + opt(OPT_EXTENDED_HEADERS)
    + opt(OPT_PEEK_EXPORT) + opt(OPT_STRUCTURED_REPLY, b"xx") + opt(OPT_ABORT),
    "malformed-go": flags() + opt(OPT_GO, struct.pack(">I", 100) + DISK + b"\0\0")
    + opt(OPT_GO, go_data() + b"\0") + opt(OPT_GO, go_data(b"di\0sk")) + opt(OPT_GO, b"\0\0")
    + opt(OPT_SET_META_CONTEXT, struct.pack(">I", 4) + DISK + struct.pack(">II", 2, 100)),
    "oversized-option": flags() + opt(OPT_GO, b"A" * 100, length=70000),
    "bad-option-magic": flags() + b"IHAVEOPX" + struct.pack(">II", OPT_GO, 0),
    "bad-client-flags": flags(0xFF) + opt(OPT_GO, go_data()),
    "flags-only": flags(),
    "long-name": flags() + opt(OPT_GO, go_data(b"n" * 4097)),
    # the snapshot disk@s1 is a read-only export
    "go-snapshot": MODERN[:4] + opt(OPT_STRUCTURED_REPLY)
    + opt(OPT_SET_META_CONTEXT, meta_data(b"disk@s1")) + opt(OPT_GO, go_data(b"disk@s1"))
    + req(READ, 0, 4096) + req(WRITE, 0, 512) + req(TRIM, 0, 4096) + req(WRITE_ZEROES, 0, 4096)
    + req(BLOCK_STATUS, 0, SIZE) + req(FLUSH) + req(DISC),
    "info-snapshot": flags() + opt(OPT_INFO, go_data(b"disk@s1", (INFO_NAME, INFO_DESCRIPTION)))
    + opt(OPT_GO, go_data(b"disk@nope")) + opt(OPT_EXPORT_NAME, b"disk@s1") + req(READ, 0, 512)
    + req(WRITE, 0, 16, FUA) + req(DISC),
}

_cookie = 0     # each table numbers its requests from 1: seeds stay stable
REQUESTS = {
    "write-read-flush": req(WRITE, 0, 512) + req(READ, 0, 512) + req(FLUSH) + req(DISC),
    "unaligned": req(WRITE, 12345, 1000) + req(READ, 11000, 3000) + req(WRITE, SIZE - 7, 7)
    + req(READ, SIZE - 100, 100),
    "trim-zero": req(WRITE, 1 << 20, 256) + req(TRIM, 1 << 20, 1 << 20)
    + req(WRITE_ZEROES, 0, 8192, NO_HOLE) + req(WRITE_ZEROES, 3 << 20, 2 << 20, FAST_ZERO)
    + req(WRITE_ZEROES, 5 << 20, 1 << 20),
    "block-status": req(WRITE, 2 << 20, 100) + req(BLOCK_STATUS, 0, SIZE)
    + req(BLOCK_STATUS, 2 << 20, 4096, REQ_ONE) + req(BLOCK_STATUS, SIZE - 1, 0),
    "fua-cache": req(WRITE, 4096, 128, FUA) + req(CACHE, 0, 4096) + req(FLUSH, fl=FUA)
    + req(TRIM, 0, 4096, FUA),
    "bounds": req(READ, SIZE, 0) + req(READ, SIZE - 1, 2) + req(WRITE, SIZE, 1)
    + req(WRITE_ZEROES, SIZE - 4096, 8192) + req(TRIM, 2**64 - 512, 1024)
    + req(READ, 2**63, 512),
    "zero-length": req(READ, 0, 0) + req(WRITE, 0, 0) + req(TRIM, 100, 0) + req(WRITE_ZEROES, 0, 0)
    + req(BLOCK_STATUS, 0, 0),
    "bad-flags": req(READ, 0, 512, 0x80) + req(99, 0, 0) + req(WRITE, 0, 16, NO_HOLE)
    + req(READ, 0, 512, REQ_ONE) + req(FLUSH, 0, 512) + req(WRITE_ZEROES, 0, 512, DF),
    "df-read": req(WRITE, 8192, 300) + req(READ, 8000, 600, DF) + req(READ, 0, 1 << 20),
    "bad-magic-mid": req(READ, 0, 512) + b"\x25\x60\x95\x14" + b"\0" * 24,
    "write-too-big": req(READ, 0, 512) + struct.pack(">IHHQQI", REQ_MAGIC, 0, WRITE, 77, 0, 64 << 20)
    + b"x" * 100,
    "read-too-big": req(READ, 0, (32 << 20) + 1) + req(READ, 0, SIZE) + req(DISC),
    "partial-header": req(READ, 0, 512) + req(READ, 0, 512)[:20],
    "payload-cut": req(WRITE, 0, 4096)[:28 + 1000],
    "same-cookie": req(WRITE, 0, 512, cookie=1) + req(READ, 0, 512, cookie=1)
    + req(READ, 512, 512, cookie=1) + req(DISC),
    "after-disc": req(READ, 0, 512) + req(DISC) + req(READ, 0, 512),
}

API = {
    "create": b'{"name": "v1", "size": "1G"}',
    "create-bytes-type": b'{"name": "v2", "size": 1048576, "type": "ssd"}',
    "resize": b'{"size": "32M"}',
    "resize-bytes": b'{"size": 33554432}',
    "not-json": b'{"name": "v1", "size": ',
    "bad-name": b'{"name": "bad/name", "size": "1G"}',
    "size-zero": b'{"name": "x", "size": 0}',
    "size-negative": b'{"name": "x", "size": -512}',
    "size-suffix": b'{"name": "x", "size": "1Q"}',
    "size-huge": b'{"name": "x", "size": 18446744073709551615}',
    "size-unaligned": b'{"name": "x", "size": 1000}',
    "nul-in-name": b'{"name": "x\\u0000y", "size": "1G"}',
    "exists": b'{"name": "disk", "size": "1G"}',
    "bad-type": b'{"name": "x", "size": "1G", "type": "gold"}',
    "unknown-field": b'{"name": "x", "size": "1G", "extra": 1}',
    "array": b'[1, 2]',
    "trailing": b'{"size": "1G"} x',
    "not-utf8": b'{"name": "\xff\xfe\x80", "size": "1G"}',
    "utf8": '{"name": "\u00e9t\u00e9", "size": "1G"}'.encode(),
    "name-number": b'{"name": 5, "size": "1G"}',
    "empty": b'',
    "too-large": b'{"name": "x", "size": "300T"}',
    "clone": b'{"name": "c1", "size": 0, "from_snapshot": "disk@s1"}',
    "clone-bigger": b'{"name": "c2", "size": "1G", "from_snapshot": "disk@s1"}',
    "clone-unknown": b'{"name": "c3", "size": 0, "from_snapshot": "nope@x"}',
    "snapshot": b'{"name": "s2"}',
    "snapshot-exists": b'{"name": "s1"}',
}


def write(root, name, seeds):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    for k, v in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)
    print(f"{d}: {len(seeds)} seeds")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    write(root, "fuzz-handshake", HANDSHAKE)
    write(root, "fuzz-requests", REQUESTS)
    write(root, "fuzz-api", API)


if __name__ == "__main__":
    main()
