#!/usr/bin/python3
"""tests/integration/fake-api.py -- an in-memory fake of blockd's HTTP API.

Usage: fake-api.py PORT [REQUEST_LOG]

Serves the contract of docs/API.md on 127.0.0.1:PORT so that blockctl can be
tested before (and independently of) the real daemon.  Each request is
appended to REQUEST_LOG as one line "METHOD PATH BODY" so that a test can
check what blockctl sent.

One test hook, outside /v1 so it cannot be mistaken for the API:
  PUT /_fake/volumes/{name}/connections  {"connections": N}
pretends N NBD clients are connected (status "in-use" when N > 0).
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
volumes = {}                 # id -> VOLUME dict
created_count = 0


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
                return 200, v
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
                return 200, v
            force = query.get("force", ["false"])[-1] == "true"
            if v["connections"] > 0 and not force:
                raise ApiError("conflict",
                               f"volume \"{v['name']}\" is in use by "
                               f"{v['connections']} NBD client(s); disconnect "
                               "them or delete with force")
            del volumes[v["id"]]
            return 204, None
        if len(parts) == 4 and parts[0] == "_fake" and parts[3] == "connections":
            v = find(parts[2])
            v["connections"] = int(self.json_body(raw)["connections"])
            v["status"] = "in-use" if v["connections"] else "available"
            return 200, v
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
        return 200, {"volumes": out}

    def create(self, raw):
        global created_count
        body = self.json_body(raw)
        name = body.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError("invalid_argument",
                           f"volume name {json.dumps(name)} is invalid (use 1-63 "
                           "characters from A-Z a-z 0-9 . _ -, not starting "
                           "with '.' or '-')")
        if "size" not in body:
            raise ApiError("invalid_argument", f"volume \"{name}\": size is missing")
        size = parse_size(body["size"], f"volume \"{name}\"")
        vtype = body.get("type", "standard")
        if any(v["name"] == name for v in volumes.values()):
            raise ApiError("conflict", f"volume \"{name}\" already exists")
        created = EPOCH + timedelta(seconds=created_count)
        created_count += 1
        v = {"id": str(uuid.uuid4()), "name": name, "size": size,
             "allocated": 0, "type": vtype, "status": "available",
             "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "connections": 0, "nbd_uri": f"nbd://127.0.0.1:10809/{name}"}
        volumes[v["id"]] = v
        return 201, v

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
