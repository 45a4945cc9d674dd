#!/bin/sh
# tests/integration/test-blockctl.sh — blockctl against an in-memory fake of
# blockd's HTTP API (tests/integration/fake-api.py, the contract of
# docs/API.md): text and --json output of every command, the exit codes
# (1 server error, 2 usage error, 3 unreachable) and their one-line messages.
set -e
cd "$(dirname "$0")/../.."

PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
    echo "SKIP test-blockctl: $PY is missing (needed for the fake API server)" >&2
    exit 77
fi
BLOCKCTL=${BUILD:-build}/blockctl
if [ ! -x "$BLOCKCTL" ]; then
    echo "FAIL test-blockctl: $BLOCKCTL is not built (make $BLOCKCTL)" >&2
    exit 1
fi

TMP=$(mktemp -d)
FAKE_PID=
cleanup () {
    if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || :; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail () { echo "FAIL test-blockctl: $*" >&2; exit 1; }

free_port () {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PORT=$(free_port)
DEAD_PORT=$(free_port)          # nothing listens there
API=http://127.0.0.1:$PORT
DEAD_API=http://127.0.0.1:$DEAD_PORT
LOG=$TMP/requests.log
unset BLOCKD_API

"$PY" tests/integration/fake-api.py "$PORT" "$LOG" &
FAKE_PID=$!
i=0
until "$BLOCKCTL" --api "$API" pool show >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "fake API did not start on port $PORT"
    kill -0 "$FAKE_PID" 2>/dev/null || fail "fake API exited"
    sleep 0.1
done

# run CMD...: stdout to $TMP/out, stderr to $TMP/err, exit code in $rc.
run () {
    "$@" >"$TMP/out" 2>"$TMP/err" && rc=0 || rc=$?
}
ctl () { run "$BLOCKCTL" --api "$API" "$@"; }

# ok: the last command succeeded quietly on stderr.
ok () {
    [ "$rc" -eq 0 ] || fail "$1: exit $rc, stderr: $(cat "$TMP/err")"
    [ ! -s "$TMP/err" ] || fail "$1: unexpected stderr: $(cat "$TMP/err")"
}
# err CODE LINE: the last command exited CODE with exactly LINE on stderr
# and nothing on stdout.
err () {
    [ "$rc" -eq "$1" ] || fail "expected exit $1, got $rc (stderr: $(cat "$TMP/err"))"
    printf '%s\n' "$2" | cmp -s - "$TMP/err" \
        || fail "stderr: expected [$2], got [$(cat "$TMP/err")]"
    [ ! -s "$TMP/out" ] || fail "unexpected stdout on error: $(cat "$TMP/out")"
}
# has LINE: stdout contains LINE as a whole line.
has () { grep -qxF -- "$1" "$TMP/out" || fail "no line [$1] in: $(cat "$TMP/out")"; }
# json EXPR: EXPR (python, over the JSON on stdout as j) is true.
json () {
    "$PY" -c "import json, sys; j = json.load(sys.stdin); sys.exit(0 if ($1) else 1)" \
        <"$TMP/out" || fail "JSON check [$1] failed on: $(cat "$TMP/out")"
}
# sent LINE: the fake received exactly the request LINE last.
sent () {
    last=$(tail -n 1 "$LOG")
    [ "$last" = "$1" ] || fail "request: expected [$1], got [$last]"
}

# ---- help
run "$BLOCKCTL" --help; ok "--help"
grep -q '^Usage: blockctl' "$TMP/out" || fail "--help has no usage"
run "$BLOCKCTL" help; ok "help"
grep -q '^Usage: blockctl' "$TMP/out" || fail "help has no usage"
run "$BLOCKCTL" volume --help; ok "volume --help"
grep -q 'blockctl volume create NAME --size SIZE' "$TMP/out" || fail "volume --help"

# ---- create, in text and JSON, global options before and after
ctl volume create data1 --size 10G; ok "create"
sent 'POST /v1/volumes {"name":"data1","size":"10G"}'
[ "$(cut -d: -f1 "$TMP/out" | tr '\n' ' ')" = \
  "id name size allocated type status connections created nbd_uri " ] \
    || fail "show keys: $(cat "$TMP/out")"
has "name: data1"
has "size: 10G (10737418240 bytes)"
has "allocated: 0 (0 bytes)"
has "type: standard"
has "status: available"
has "connections: 0"
has "nbd_uri: nbd://127.0.0.1:10809/data1"

run "$BLOCKCTL" volume create web-01 --size 1.5G --type ssd --json --api "$API"
ok "create --json after the subcommand"
sent 'POST /v1/volumes {"name":"web-01","size":"1.5G","type":"ssd"}'
json 'j["name"] == "web-01" and j["size"] == 1610612736 and j["type"] == "ssd" and j["status"] == "available"'

run env BLOCKD_API="$API" "$BLOCKCTL" volume create db --size 512; ok "BLOCKD_API"
has "size: 512 (512 bytes)"
run env BLOCKD_API="$DEAD_API" "$BLOCKCTL" --api "$API" volume show db; ok "--api over BLOCKD_API"

# ---- list
ctl volume list; ok "list"
[ "$(wc -l <"$TMP/out")" -eq 4 ] || fail "list: 4 lines expected: $(cat "$TMP/out")"
[ "$(awk '{print $1, $3, $4, $5, $6}' "$TMP/out" | tr '\n' ';')" = \
  "NAME SIZE ALLOCATED TYPE STATUS;data1 10G 0 standard available;db 512 0 standard available;web-01 1.5G 0 ssd available;" ] \
    || fail "list table: $(cat "$TMP/out")"
# every column starts where its header starts
"$PY" - "$TMP/out" <<'EOF' || fail "list columns not aligned: $(cat "$TMP/out")"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
for l in lines[1:]:
    assert [m.start() for m in re.finditer(r"\S+", l)] == starts, l
assert all(l == l.rstrip() for l in lines)
EOF

ctl volume list --sort size --reverse; ok "list --sort size --reverse"
sent 'GET /v1/volumes?sort=size&order=desc '
[ "$(awk 'NR > 1 {print $1}' "$TMP/out" | tr '\n' ' ')" = "data1 web-01 db " ] \
    || fail "list by size desc: $(cat "$TMP/out")"

ctl volume list --prefix web --json; ok "list --prefix --json"
sent 'GET /v1/volumes?prefix=web '
json '[v["name"] for v in j["volumes"]] == ["web-01"]'

ctl volume list --status in-use; ok "list --status in-use (empty)"
printf 'NAME  ID  SIZE  ALLOCATED  TYPE  STATUS  CREATED\n' | cmp -s - "$TMP/out" \
    || fail "empty list: $(cat "$TMP/out")"

# ---- show by id, resize
ctl volume show data1 --json; ok "show --json"
ID=$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])' <"$TMP/out")
ctl volume show "$ID"; ok "show by id"
has "id: $ID"
has "name: data1"

ctl volume resize data1 --size 20G; ok "resize"
sent 'PATCH /v1/volumes/data1 {"size":"20G"}'
has "size: 20G (21474836480 bytes)"
ctl --json volume resize data1 --size 21G; ok "resize --json"
json 'j["name"] == "data1" and j["size"] == 21 << 30'
ctl volume resize data1 --size 1G
err 1 'blockctl: volume "data1": cannot shrink from 22548578304 to 1073741824 bytes (volumes only grow)'

# ---- pool
ctl pool show; ok "pool show"
has "volumes: 3"
has "chunk_size: 1M (1048576 bytes)"
ctl pool show --json; ok "pool show --json"
json 'j["volumes"] == 3 and j["free"] == j["capacity"] - j["allocated"]'

# ---- delete: refused while in use, then forced
"$PY" -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1] + "/_fake/volumes/data1/connections", b"{\"connections\": 1}", {"Content-Type": "application/json"}, method="PUT"))' "$API"
ctl volume list --status in-use; ok "list in-use"
[ "$(awk 'NR > 1 {print $1, $6}' "$TMP/out")" = "data1 in-use" ] || fail "in-use: $(cat "$TMP/out")"
ctl volume delete data1
err 1 'blockctl: volume "data1" is in use by 1 NBD client(s); disconnect them or delete with force'
ctl volume delete data1 --force; ok "delete --force"
sent 'DELETE /v1/volumes/data1?force=true '
[ "$(cat "$TMP/out")" = 'deleted volume "data1"' ] || fail "delete: $(cat "$TMP/out")"
ctl --json volume delete web-01; ok "delete --json"
json 'j == {"deleted": "web-01"}'

# ---- errors reported by the server: exit 1, its message
ctl volume show nope
err 1 'blockctl: volume "nope" not found'
ctl volume create db --size 1G
err 1 'blockctl: volume "db" already exists'

# ---- usage errors: exit 2, no request sent
before=$(wc -l <"$LOG")
ctl volume create x --size 10Q
err 2 'blockctl: volume "x": size "10Q" is invalid (use a number of bytes or a number with a K, M, G, T or P suffix, e.g. 10G)'
ctl volume create x --size 1000
err 2 'blockctl: volume "x": size "1000" is invalid (must be a positive multiple of 512 bytes)'
ctl volume resize db --size 0
err 2 'blockctl: volume "db": size "0" is invalid (must be a positive multiple of 512 bytes)'
ctl volume create
err 2 'blockctl: volume create: missing NAME (usage: blockctl volume create NAME --size SIZE [--type TYPE])'
ctl volume create x
err 2 'blockctl: volume create: missing --size (usage: blockctl volume create NAME --size SIZE [--type TYPE])'
ctl volume resize db
err 2 'blockctl: volume resize: missing --size (usage: blockctl volume resize NAME --size SIZE)'
ctl volume show
err 2 'blockctl: volume show: missing NAME (usage: blockctl volume show NAME)'
ctl volume delete
err 2 'blockctl: volume delete: missing NAME (usage: blockctl volume delete NAME [--force])'
ctl volume create -bad --size 1G
err 2 'blockctl: volume create: unknown option "-bad" (see "blockctl volume --help")'
ctl volume create .bad --size 1G
err 2 "blockctl: volume name \".bad\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
ctl volume list --bogus
err 2 'blockctl: volume list: unknown option "--bogus" (see "blockctl volume --help")'
ctl volume list --status busy
err 2 'blockctl: volume list: --status must be "available" or "in-use", not "busy"'
ctl volume frob
err 2 'blockctl: volume: unknown subcommand "frob" (create, list, show, resize or delete)'
ctl frob
err 2 'blockctl: unknown command "frob" (commands: volume, pool; try "blockctl --help")'
run "$BLOCKCTL"
err 2 'blockctl: missing command (try "blockctl --help")'
run "$BLOCKCTL" volume list --api
err 2 'blockctl: option --api needs a value (e.g. --api http://127.0.0.1:10810)'
[ "$(wc -l <"$LOG")" -eq "$before" ] || fail "a usage error sent a request"

# ---- blockd unreachable: exit 3
run "$BLOCKCTL" --api "$DEAD_API" volume list
err 3 "blockctl: cannot reach blockd at $DEAD_API: Connection refused (is blockd running? use --api or BLOCKD_API)"
run env BLOCKD_API="$DEAD_API/" "$BLOCKCTL" volume show db --json
err 3 "blockctl: cannot reach blockd at $DEAD_API: Connection refused (is blockd running? use --api or BLOCKD_API)"

echo "PASS test-blockctl"
