#!/usr/bin/python3
"""tests/integration/fake-api.py -- an in-memory fake of blockd's HTTP API.

Usage: fake-api.py PORT [REQUEST_LOG]

Serves the contract of docs/API.md on 127.0.0.1:PORT so that blockctl can be
tested before (and independently of) the real daemon.  Each request is
appended to REQUEST_LOG as one line "METHOD PATH BODY" so that a test can
check what blockctl sent.

Test hooks, outside /v1 so they cannot be mistaken for the API:
  PUT /_fake/volumes/{name}/connections  {"connections": N}
pretends N NBD clients are connected (status "in-use" when N > 0);
  PUT /_fake/volumes/{name}/write  {"offset": N, "length": M}
pretends a client wrote those bytes, so that snapshot diffs have ranges.

Volume data is modelled chunk by chunk: each written chunk holds a token,
new on every write, that snapshots and clones copy; two chunks differ when
their tokens do.  Snapshot "referenced" counts the chunks it holds;
"exclusive" is always 0.
"""
import json
import re
import sys
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "0.1.0"
CAPACITY = 1 << 40           # 1 TiB pool
CHUNK = 1 << 20
MAX_SIZE = 256 << 40         # docs/API.md: at most 256 TiB
MAX_BODY = 1 << 20
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$")
SIZE_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?\s?(?:([KMGTPE])(?:i?B)?|B)?$",
                     re.IGNORECASE)
EPOCH = datetime(2026, 11, 26, 13, 0, 0, tzinfo=timezone.utc)

lock = Lock()
volumes = {}                 # id -> VOLUME dict, without "snapshots"
snapshots = {}               # id -> SNAPSHOT dict
content = {}                 # volume or snapshot id -> {chunk: token}
history = {}                 # volume or snapshot id -> set of volume ids
created_count = 0
token_count = 0


class ApiError(Exception):
    STATUS = {"invalid_argument": 400, "not_found": 404,
              "method_not_allowed": 405, "conflict": 409,
              "payload_too_large": 413, "unsupported_media_type": 415,
              "no_space": 507, "internal": 500}

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = self.STATUS[code]


def parse_size(v, what):
    """Bytes from an integer or a "10G" string, checked like blockd does."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ApiError("invalid_argument",
                       f"{what}: size must be an integer or a string like \"10G\"")
    if isinstance(v, int):
        n = v
    else:
        m = SIZE_RE.match(v)
        if not m:
            raise ApiError("invalid_argument",
                           f"{what}: size \"{v}\" is invalid (use bytes or a "
                           "number with a K, M, G, T or P suffix, e.g. 10G)")
        whole, frac, unit = m.group(1), m.group(2) or "", (m.group(3) or "")
        shift = 10 * ("KMGTPE".index(unit.upper()) + 1) if unit else 0
        if frac and not shift:
            raise ApiError("invalid_argument",
                           f"{what}: size \"{v}\" is invalid (a fraction needs a suffix)")
        n = int(whole) << shift
        if frac:
            n += (int(frac) << shift) // (10 ** len(frac))
    if n <= 0 or n % 512:
        raise ApiError("invalid_argument",
                       f"{what}: size {v} is invalid (must be a positive "
                       "multiple of 512 bytes)")
    if n > MAX_SIZE:
        raise ApiError("invalid_argument",
                       f"{what}: size {v} is too large (at most 256T)")
    return n


def find(ref):
    for v in volumes.values():
        if v["id"] == ref or v["name"] == ref:
            return v
    raise ApiError("not_found", f"volume \"{ref}\" not found")


def view(v):
    """The VOLUME object as the API shows it."""
    return dict(v, snapshots=sum(1 for s in snapshots.values()
                                 if s["volume_id"] == v["id"]))


def snap_ref(s):
    return f"{s['volume']}@{s['name']}"


def find_snapshot(ref, volume=None):
    """A snapshot by "VOL@SNAP" or id, or by bare name among the snapshots
    of VOLUME (a VOLUME dict) when one is given."""
    if "@" in ref:
        vol, name = ref.split("@", 1)
        hits = [s for s in snapshots.values()
                if s["volume"] == vol and s["name"] == name]
        # a deleted volume's name may be reused: prefer the live volume's
        hits.sort(key=lambda s: (s["volume_id"] in volumes, s["created"]))
        if hits:
            return hits[-1]
    else:
        for s in snapshots.values():
            if s["id"] == ref or (volume is not None and s["name"] == ref
                                  and s["volume_id"] == volume["id"]):
                return s
    raise ApiError("not_found", f"snapshot \"{ref}\" not found")


def next_created():
    global created_count
    created = EPOCH + timedelta(seconds=created_count)
    created_count += 1
    return created.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_name(what, name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError("invalid_argument",
                       f"{what} name {json.dumps(name)} is invalid (use 1-63 "
                       "characters from A-Z a-z 0-9 . _ -, not starting "
                       "with '.' or '-')")


def write(v, offset, length):
    """Pretend bytes [OFFSET, OFFSET+LENGTH) of volume V were written."""
    global token_count
    for c in range(offset // CHUNK, (offset + length + CHUNK - 1) // CHUNK):
        token_count += 1
        content[v["id"]][c] = token_count


def diff_ranges(a, b, size):
    """Chunk-granular ranges where contents A and B differ, within SIZE."""
    chunks = sorted(c for c in set(a) | set(b) if a.get(c) != b.get(c)
                    and c * CHUNK < size)
    ranges = []
    for c in chunks:
        end = min((c + 1) * CHUNK, size)
        if ranges and ranges[-1]["offset"] + ranges[-1]["length"] == c * CHUNK:
            ranges[-1]["length"] = end - ranges[-1]["offset"]
        else:
            ranges.append({"offset": c * CHUNK, "length": end - c * CHUNK})
    return ranges


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-blockd/" + VERSION

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj):
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ApiError("payload_too_large", "request body is larger than 1 MiB")
        raw = self.rfile.read(n) if n else b""
        return raw

    def json_body(self, raw):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/json":
            raise ApiError("unsupported_media_type",
                           "send the request body as Content-Type: application/json")
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise ApiError("invalid_argument", f"request body is not valid JSON: {e}")
        if not isinstance(body, dict):
            raise ApiError("invalid_argument", "request body must be a JSON object")
        return body

    def handle_any(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        try:
            raw = self.read_body()
            if self.server.log:
                with open(self.server.log, "a") as f:
                    f.write(f"{method} {self.path} {raw.decode(errors='replace')}\n")
            with lock:
                status, obj = self.route(method, parts, query, raw)
        except ApiError as e:
            status, obj = e.status, {"error": {"code": e.code, "message": e.message}}
        self.send_json(status, obj)

    def route(self, method, parts, query, raw):
        def allow(*methods):
            if method not in methods:
                raise ApiError("method_not_allowed",
                               f"{method} is not allowed on /{'/'.join(parts)} "
                               f"(use {', '.join(methods)})")
        if parts == ["v1", "health"]:
            allow("GET")
            return 200, {"status": "ok", "version": VERSION}
        if parts == ["v1", "pool"]:
            allow("GET")
            alloc = sum(v["allocated"] for v in volumes.values())
            return 200, {"capacity": CAPACITY, "allocated": alloc,
                         "free": CAPACITY - alloc, "chunk_size": CHUNK,
                         "volumes": len(volumes), "data_dir": "/var/lib/blockd"}
        if parts == ["v1", "volumes"]:
            allow("GET", "POST")
            return self.list(query) if method == "GET" else self.create(raw)
        if len(parts) == 3 and parts[:2] == ["v1", "volumes"]:
            allow("GET", "PATCH", "DELETE")
            v = find(parts[2])
            if method == "GET":
                return 200, view(v)
            if method == "PATCH":
                body = self.json_body(raw)
                if "size" not in body:
                    raise ApiError("invalid_argument", "body needs \"size\"")
                n = parse_size(body["size"], f"volume \"{v['name']}\"")
                if n < v["size"]:
                    raise ApiError("invalid_argument",
                                   f"volume \"{v['name']}\": cannot shrink from "
                                   f"{v['size']} to {n} bytes (volumes only grow)")
                v["size"] = n
                return 200, view(v)
            force = query.get("force", ["false"])[-1] == "true"
            if v["connections"] > 0 and not force:
                raise ApiError("conflict",
                               f"volume \"{v['name']}\" is in use by "
                               f"{v['connections']} NBD client(s); disconnect "
                               "them or delete with force")
            del volumes[v["id"]]
            del content[v["id"]]
            return 204, None
        if len(parts) == 4 and parts[:2] == ["v1", "volumes"] \
                and parts[3] == "snapshots":
            allow("GET", "POST")
            v = find(parts[2])
            if method == "GET":
                return self.list_snapshots(lambda s: s["volume_id"] == v["id"])
            return self.create_snapshot(v, raw)
        if len(parts) == 4 and parts[:2] == ["v1", "volumes"] \
                and parts[3] == "rollback":
            allow("POST")
            return self.rollback(find(parts[2]), raw)
        if parts == ["v1", "snapshots"]:
            allow("GET")
            vol = query.get("volume", [None])[-1]
            return self.list_snapshots(lambda s: vol is None or s["volume"] == vol)
        if len(parts) == 3 and parts[:2] == ["v1", "snapshots"]:
            allow("GET", "DELETE")
            s = find_snapshot(parts[2])
            if method == "GET":
                return 200, s
            del snapshots[s["id"]]
            del content[s["id"]]
            return 204, None
        if len(parts) == 4 and parts[:2] == ["v1", "snapshots"] \
                and parts[3] == "diff":
            allow("GET")
            return self.diff(find_snapshot(parts[2]), query)
        if len(parts) == 4 and parts[0] == "_fake" and parts[3] == "connections":
            v = find(parts[2])
            v["connections"] = int(self.json_body(raw)["connections"])
            v["status"] = "in-use" if v["connections"] else "available"
            return 200, view(v)
        if len(parts) == 4 and parts[0] == "_fake" and parts[3] == "write":
            v = find(parts[2])
            body = self.json_body(raw)
            write(v, int(body["offset"]), int(body["length"]))
            return 200, view(v)
        raise ApiError("not_found", f"no such API path /{'/'.join(parts)}")

    def list(self, query):
        def one(key, allowed=None):
            val = query.get(key, [None])[-1]
            if val is not None and allowed and val not in allowed:
                raise ApiError("invalid_argument",
                               f"{key} must be one of {', '.join(allowed)}")
            return val
        prefix = one("prefix") or ""
        status = one("status", ["available", "in-use"])
        sort = one("sort", ["name", "size", "created"]) or "name"
        order = one("order", ["asc", "desc"]) or "asc"
        out = [v for v in volumes.values() if v["name"].startswith(prefix)
               and (status is None or v["status"] == status)]
        out.sort(key=lambda v: (v[sort], v["name"]), reverse=(order == "desc"))
        return 200, {"volumes": [view(v) for v in out]}

    def create(self, raw):
        body = self.json_body(raw)
        name = body.get("name")
        check_name("volume", name)
        src = None
        if body.get("from_snapshot") is not None:
            if not isinstance(body["from_snapshot"], str):
                raise ApiError("invalid_argument",
                               f"volume \"{name}\": from_snapshot must be a "
                               "string like \"data1@s1\"")
            src = find_snapshot(body["from_snapshot"])
        if "size" not in body and src is None:
            raise ApiError("invalid_argument", f"volume \"{name}\": size is missing")
        if "size" in body:
            size = parse_size(body["size"], f"volume \"{name}\"")
        else:
            size = src["size"]
        if src is not None and size < src["size"]:
            raise ApiError("invalid_argument",
                           f"volume \"{name}\": size {size} is smaller than "
                           f"snapshot \"{snap_ref(src)}\" ({src['size']} bytes)")
        vtype = body.get("type", "standard")
        if any(v["name"] == name for v in volumes.values()):
            raise ApiError("conflict", f"volume \"{name}\" already exists")
        v = {"id": str(uuid.uuid4()), "name": name, "size": size,
             "allocated": 0, "type": vtype, "status": "available",
             "created": next_created(),
             "connections": 0, "nbd_uri": f"nbd://127.0.0.1:10809/{name}",
             "source_snapshot": snap_ref(src) if src else None}
        volumes[v["id"]] = v
        content[v["id"]] = dict(content[src["id"]]) if src else {}
        history[v["id"]] = {v["id"]} | (history[src["id"]] if src else set())
        return 201, view(v)

    def list_snapshots(self, keep):
        out = [s for s in snapshots.values() if keep(s)]
        out.sort(key=lambda s: (s["volume"], s["created"], s["name"]))
        return 200, {"snapshots": out}

    def create_snapshot(self, v, raw):
        name = self.json_body(raw).get("name")
        check_name("snapshot", name)
        ref = f"{v['name']}@{name}"
        if any(s["volume_id"] == v["id"] and s["name"] == name
               for s in snapshots.values()):
            raise ApiError("conflict", f"snapshot \"{ref}\" already exists")
        s = {"id": str(uuid.uuid4()), "name": name, "volume": v["name"],
             "volume_id": v["id"], "size": v["size"],
             "created": next_created(),
             "referenced": min(len(content[v["id"]]) * CHUNK, v["size"]),
             "exclusive": 0, "nbd_uri": f"nbd://127.0.0.1:10809/{ref}"}
        snapshots[s["id"]] = s
        content[s["id"]] = dict(content[v["id"]])
        history[s["id"]] = set(history[v["id"]])
        return 201, s

    def rollback(self, v, raw):
        ref = self.json_body(raw).get("snapshot")
        if not isinstance(ref, str) or not ref:
            raise ApiError("invalid_argument",
                           f"volume \"{v['name']}\": body needs \"snapshot\"")
        s = find_snapshot(ref, v)
        if v["id"] not in history[s["id"]]:
            raise ApiError("invalid_argument",
                           f"snapshot \"{snap_ref(s)}\" is not a snapshot of "
                           f"volume \"{v['name']}\"")
        if v["connections"] > 0:
            raise ApiError("conflict",
                           f"volume \"{v['name']}\" is in use by "
                           f"{v['connections']} NBD client(s); disconnect "
                           "them before rolling back")
        content[v["id"]] = dict(content[s["id"]])
        v["size"] = s["size"]
        return 200, view(v)

    def diff(self, a, query):
        to = query.get("to", [None])[-1]
        if not to:
            raise ApiError("invalid_argument",
                           "diff needs ?to=VOL@SNAP or ?to=VOL")
        if "@" in to:
            b = find_snapshot(to)
            b_id, b_name, b_size = b["id"], snap_ref(b), b["size"]
        else:
            b = find(to)
            b_id, b_name, b_size = b["id"], b["name"], b["size"]
        if not history[a["id"]] & history[b_id]:
            raise ApiError("invalid_argument",
                           f"\"{snap_ref(a)}\" and \"{b_name}\" are not of "
                           "the same volume history")
        ranges = diff_ranges(content[a["id"]], content[b_id],
                             max(a["size"], b_size))
        return 200, {"from": snap_ref(a), "to": b_name, "ranges": ranges,
                     "changed_bytes": sum(r["length"] for r in ranges)}

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PUT(self):
        self.handle_any("PUT")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: fake-api.py PORT [REQUEST_LOG]")
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.log = sys.argv[2] if len(sys.argv) == 3 else None
    server.serve_forever()


if __name__ == "__main__":
    main()
