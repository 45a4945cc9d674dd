#!/bin/sh
# tests/integration/test-blockctl.sh — blockctl against an in-memory fake of
# blockd's HTTP API (tests/integration/fake-api.py, the contract of
# docs/API.md): text and --json output of every command (volumes, snapshots,
# clones, rollback, the pool), the exit codes (1 server error, 2 usage
# error, 3 unreachable) and their one-line messages.
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
# keys K1 K2...: the text output is "key: value" lines with exactly these keys.
keys () {
    [ "$(cut -d: -f1 "$TMP/out" | tr '\n' ' ')" = "$* " ] \
        || fail "keys: expected [$*] in: $(cat "$TMP/out")"
}
# out TEXT: stdout is exactly TEXT (printf format, e.g. 'a\nb\n').
out () {
    printf "$1" | cmp -s - "$TMP/out" || fail "stdout: expected [$(printf "$1")], got [$(cat "$TMP/out")]"
}
# aligned: every column of the table on stdout starts where its header
# starts, and no line has trailing blanks.
aligned () {
    "$PY" - "$TMP/out" <<'EOF' || fail "table columns not aligned: $(cat "$TMP/out")"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
for l in lines[1:]:
    assert [m.start() for m in re.finditer(r"\S+", l)] == starts, l
assert all(l == l.rstrip() for l in lines)
EOF
}
# fake WHAT VOLUME JSON: a test hook of the fake (PUT /_fake/volumes/VOLUME/WHAT).
fake () {
    "$PY" -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1] + "/_fake/volumes/" + sys.argv[2] + "/" + sys.argv[3], sys.argv[4].encode(), {"Content-Type": "application/json"}, method="PUT"))' "$API" "$2" "$1" "$3"
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
  "id name size allocated type status connections created nbd_uri snapshots " ] \
    || fail "show keys: $(cat "$TMP/out")"
has "name: data1"
has "size: 10G (10737418240 bytes)"
has "allocated: 0 (0 bytes)"
has "type: standard"
has "status: available"
has "connections: 0"
has "nbd_uri: nbd://127.0.0.1:10809/data1"
has "snapshots: 0"

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
printf 'NAME  ID  SIZE  ALLOCATED  TYPE  STATUS  ATTACHED-TO  CREATED\n' | cmp -s - "$TMP/out" \
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
fake connections data1 '{"connections": 1}'
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

# ---- snapshots: create, show, list (text and --json); the fake's volumes
# have 1 MiB chunks, and "fake write" marks the chunks a client wrote.
ctl volume create vm1 --size 8M --json; ok "create vm1"
VM1_ID=$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])' <"$TMP/out")
json 'j["snapshots"] == 0 and j["source_snapshot"] is None'
ctl volume show vm1; ok "show vm1"
keys id name size allocated type status connections created nbd_uri snapshots
has "snapshots: 0"
fake write vm1 '{"offset": 0, "length": 4096}'

ctl snapshot create vm1 a; ok "snapshot create"
sent 'POST /v1/volumes/vm1/snapshots {"name":"a"}'
keys id name volume volume_id size referenced exclusive created nbd_uri
has "name: a"
has "volume: vm1"
has "volume_id: $VM1_ID"
has "size: 8M (8388608 bytes)"
has "referenced: 1M (1048576 bytes)"
has "exclusive: 0 (0 bytes)"
has "nbd_uri: nbd://127.0.0.1:10809/vm1@a"
grep -Eq '^id: [0-9a-f-]{36}$' "$TMP/out" || fail "snapshot id: $(cat "$TMP/out")"
grep -Eq '^created: [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$' "$TMP/out" || fail "snapshot created: $(cat "$TMP/out")"

fake write vm1 '{"offset": 2097152, "length": 2097152}'
ctl --json snapshot create vm1 b; ok "snapshot create --json"
json 'j["name"] == "b" and j["volume"] == "vm1" and j["volume_id"] == "'"$VM1_ID"'" and j["size"] == 8 << 20 and j["referenced"] == 3 << 20 and j["exclusive"] == 0 and j["nbd_uri"] == "nbd://127.0.0.1:10809/vm1@b"'
ctl snapshot create vm1 a
err 1 'blockctl: snapshot "vm1@a" already exists'
ctl snapshot create nope a
err 1 'blockctl: volume "nope" not found'
ctl volume show vm1; ok "show vm1 with snapshots"
has "snapshots: 2"
fake write vm1 '{"offset": 7340032, "length": 512}'

ctl snapshot show vm1@a; ok "snapshot show"
sent 'GET /v1/snapshots/vm1@a '
keys id name volume volume_id size referenced exclusive created nbd_uri
has "referenced: 1M (1048576 bytes)"
ctl snapshot show vm1@a --json; ok "snapshot show --json"
json 'j["name"] == "a" and j["volume"] == "vm1" and j["referenced"] == 1 << 20'
ctl snapshot show vm1@zz
err 1 'blockctl: snapshot "vm1@zz" not found'

ctl volume create vm2 --size 1G; ok "create vm2"
ctl snapshot create vm2 s1; ok "snapshot create vm2 s1"
ctl snapshot list; ok "snapshot list"
sent 'GET /v1/snapshots '
[ "$(wc -l <"$TMP/out")" -eq 4 ] || fail "snapshot list: 4 lines expected: $(cat "$TMP/out")"
[ "$(awk '{print $1, $3, $4, $5}' "$TMP/out" | tr '\n' ';')" = \
  "NAME SIZE REFERENCED EXCLUSIVE;vm1@a 8M 1M 0;vm1@b 8M 3M 0;vm2@s1 1G 0 0;" ] \
    || fail "snapshot list table: $(cat "$TMP/out")"
head -n 1 "$TMP/out" | grep -qx 'NAME  *ID  *SIZE  REFERENCED  EXCLUSIVE  CREATED' \
    || fail "snapshot list header: $(head -n 1 "$TMP/out")"
aligned
ctl snapshot list vm1 --json; ok "snapshot list VOL --json"
sent 'GET /v1/snapshots?volume=vm1 '
json '[(s["volume"], s["name"]) for s in j["snapshots"]] == [("vm1", "a"), ("vm1", "b")]'
ctl snapshot list nope; ok "snapshot list, none"
out 'NAME  ID  SIZE  REFERENCED  EXCLUSIVE  CREATED\n'

# ---- snapshot diff: between snapshots, against the live volume
ctl snapshot diff vm1@a vm1@b; ok "diff"
sent 'GET /v1/snapshots/vm1@a/diff?to=vm1@b '
out '2097152 2097152\n1 range, 2097152 bytes changed\n'
ctl snapshot diff vm1@a vm1; ok "diff against the volume"
sent 'GET /v1/snapshots/vm1@a/diff?to=vm1 '
out '2097152 2097152\n7340032 1048576\n2 ranges, 3145728 bytes changed\n'
ctl --json snapshot diff vm1@a vm1; ok "diff --json"
json 'j == {"from": "vm1@a", "to": "vm1", "ranges": [{"offset": 2097152, "length": 2097152}, {"offset": 7340032, "length": 1048576}], "changed_bytes": 3145728}'
ctl snapshot diff vm1@b vm1@b; ok "diff, nothing changed"
out '0 ranges, 0 bytes changed\n'
ctl snapshot diff vm1@a vm2@s1
err 1 'blockctl: "vm1@a" and "vm2@s1" are not of the same volume history'
ctl snapshot diff vm1@zz vm1
err 1 'blockctl: snapshot "vm1@zz" not found'

# ---- clones
ctl volume create c1 --from-snapshot vm1@b; ok "clone"
sent 'POST /v1/volumes {"name":"c1","from_snapshot":"vm1@b"}'
keys id name size allocated type status connections created nbd_uri source_snapshot snapshots
has "name: c1"
has "size: 8M (8388608 bytes)"
has "source_snapshot: vm1@b"
has "snapshots: 0"
ctl --json volume create c2 --type ssd --from-snapshot=vm1@a --size 16M; ok "clone --json --size --type"
sent 'POST /v1/volumes {"name":"c2","from_snapshot":"vm1@a","size":"16M","type":"ssd"}'
json 'j["name"] == "c2" and j["source_snapshot"] == "vm1@a" and j["size"] == 16 << 20 and j["type"] == "ssd" and j["snapshots"] == 0'
ctl volume create c3 --from-snapshot vm1@a --size 1M
err 1 'blockctl: volume "c3": size 1048576 is smaller than snapshot "vm1@a" (8388608 bytes)'
ctl volume create c3 --from-snapshot vm1@nope
err 1 'blockctl: snapshot "vm1@nope" not found'
ctl volume create c1 --from-snapshot vm1@a
err 1 'blockctl: volume "c1" already exists'
ctl snapshot create c1 x; ok "snapshot of a clone"
ctl snapshot diff vm1@b c1@x; ok "diff a clone's snapshot with its source"
out '0 ranges, 0 bytes changed\n'

# ---- rollback: by name and by VOL@SNAP; refused while in use
ctl volume rollback vm1 --to a; ok "rollback"
sent 'POST /v1/volumes/vm1/rollback {"snapshot":"a"}'
keys id name size allocated type status connections created nbd_uri snapshots
has "name: vm1"
has "snapshots: 2"
ctl snapshot diff vm1@a vm1; ok "diff after rollback"
out '0 ranges, 0 bytes changed\n'
ctl snapshot show vm1@b; ok "later snapshots stay after a rollback"
ctl volume rollback --json vm1 --to vm1@b; ok "rollback --json to VOL@SNAP"
sent 'POST /v1/volumes/vm1/rollback {"snapshot":"vm1@b"}'
json 'j["name"] == "vm1" and j["snapshots"] == 2'
fake connections vm1 '{"connections": 1}'
ctl volume rollback vm1 --to a
err 1 'blockctl: volume "vm1" is in use by 1 NBD client(s); disconnect them before rolling back'
fake connections vm1 '{"connections": 0}'
ctl volume rollback vm1 --to zz
err 1 'blockctl: snapshot "zz" not found'

# ---- snapshot delete; snapshots outlive their volume
ctl snapshot delete vm1@a; ok "snapshot delete"
sent 'DELETE /v1/snapshots/vm1@a '
out 'deleted snapshot "vm1@a"\n'
ctl --json snapshot delete vm2@s1; ok "snapshot delete --json"
json 'j == {"deleted": "vm2@s1"}'
ctl snapshot delete vm1@a
err 1 'blockctl: snapshot "vm1@a" not found'
ctl volume delete vm1; ok "delete a volume with a snapshot"
ctl snapshot list vm1; ok "list the snapshots of a deleted volume"
[ "$(awk 'NR > 1 {print $1}' "$TMP/out")" = "vm1@b" ] || fail "snapshots after volume delete: $(cat "$TMP/out")"
ctl snapshot show vm1@b --json; ok "show the snapshot of a deleted volume"
json 'j["volume"] == "vm1" and j["volume_id"] == "'"$VM1_ID"'"'

# ---- snapshot usage errors: exit 2, no request sent
before=$(wc -l <"$LOG")
run "$BLOCKCTL" snapshot --help; ok "snapshot --help"
grep -q 'blockctl snapshot diff VOL@SNAP VOL@SNAP2|VOL' "$TMP/out" || fail "snapshot --help: $(cat "$TMP/out")"
run "$BLOCKCTL" help snapshot; ok "help snapshot"
grep -q 'blockctl snapshot create VOL SNAP' "$TMP/out" || fail "help snapshot: $(cat "$TMP/out")"
run "$BLOCKCTL" --help; ok "--help lists snapshots"
grep -q 'volume create NAME --from-snapshot VOL@SNAP' "$TMP/out" || fail "--help: no clone"
grep -q 'volume rollback NAME --to SNAP' "$TMP/out" || fail "--help: no rollback"
ctl snapshot
err 2 'blockctl: snapshot: missing subcommand (create, list, show, delete or diff; see "blockctl snapshot --help")'
ctl snapshot frob
err 2 'blockctl: snapshot: unknown subcommand "frob" (create, list, show, delete or diff)'
ctl snapshot create
err 2 'blockctl: snapshot create: missing VOLUME (usage: blockctl snapshot create VOLUME SNAPSHOT)'
ctl snapshot create vm2
err 2 'blockctl: snapshot create: missing SNAPSHOT (usage: blockctl snapshot create VOLUME SNAPSHOT)'
ctl snapshot create vm2 a b
err 2 'blockctl: snapshot create: unexpected argument "b" (see "blockctl snapshot --help")'
ctl snapshot create vm2 .a
err 2 "blockctl: snapshot name \".a\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
ctl snapshot create 'vm 2' a
err 2 "blockctl: volume name \"vm 2\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
ctl snapshot create vm2 a@b
err 2 "blockctl: snapshot name \"a@b\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
BADREF="is invalid (use VOLUME@SNAPSHOT, e.g. data1@s1: two names of 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
for ref in vm2 vm2@ @s1 vm2@s1@x vm2@.s1 -v@s1 "vm2@s 1"; do
    ctl snapshot show -- "$ref"
    err 2 "blockctl: snapshot \"$ref\" $BADREF"
done
ctl snapshot delete vm2
err 2 "blockctl: snapshot \"vm2\" $BADREF"
ctl snapshot show
err 2 'blockctl: snapshot show: missing VOLUME@SNAPSHOT (usage: blockctl snapshot show VOLUME@SNAPSHOT)'
ctl snapshot delete
err 2 'blockctl: snapshot delete: missing VOLUME@SNAPSHOT (usage: blockctl snapshot delete VOLUME@SNAPSHOT)'
ctl snapshot delete vm1@b --bogus
err 2 'blockctl: snapshot delete: unknown option "--bogus" (see "blockctl snapshot --help")'
ctl snapshot list .x
err 2 "blockctl: volume name \".x\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
ctl snapshot list vm1 vm2
err 2 'blockctl: snapshot list: unexpected argument "vm2" (see "blockctl snapshot --help")'
ctl snapshot diff
err 2 'blockctl: snapshot diff: missing VOLUME@SNAPSHOT (usage: blockctl snapshot diff VOLUME@SNAPSHOT VOLUME@SNAPSHOT|VOLUME)'
ctl snapshot diff vm1@b
err 2 'blockctl: snapshot diff: missing the second snapshot or volume (usage: blockctl snapshot diff VOLUME@SNAPSHOT VOLUME@SNAPSHOT|VOLUME)'
ctl snapshot diff vm1 vm1@b
err 2 "blockctl: snapshot \"vm1\" $BADREF"
ctl snapshot diff vm1@b vm1@
err 2 "blockctl: snapshot \"vm1@\" $BADREF"
ctl snapshot diff vm1@b .x
err 2 "blockctl: volume name \".x\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
ctl volume create c9 --from-snapshot vm1
err 2 "blockctl: snapshot \"vm1\" $BADREF"
ctl volume create c9 --from-snapshot vm1@b --size 1000
err 2 'blockctl: volume "c9": size "1000" is invalid (must be a positive multiple of 512 bytes)'
ctl volume create c9 --from-snapshot
err 2 'blockctl: volume create: option --from-snapshot needs a value'
ctl volume rollback
err 2 'blockctl: volume rollback: missing NAME (usage: blockctl volume rollback NAME --to SNAPSHOT)'
ctl volume rollback vm2
err 2 'blockctl: volume rollback: missing --to (usage: blockctl volume rollback NAME --to SNAPSHOT)'
ctl volume rollback vm2 --to .s
err 2 "blockctl: snapshot name \".s\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
ctl volume rollback vm2 --to vm2@
err 2 "blockctl: snapshot \"vm2@\" $BADREF"
ctl volume rollback vm2 --to --json
err 2 "blockctl: snapshot name \"--json\" is invalid (use 1-63 characters from A-Z a-z 0-9 . _ -, not starting with '.' or '-')"
[ "$(wc -l <"$LOG")" -eq "$before" ] || fail "a snapshot usage error sent a request"

# ---- usage errors: exit 2, no request sent
before=$(wc -l <"$LOG")
ctl volume create x --size 10Q
err 2 'blockctl: volume "x": size "10Q" is invalid (use a number of bytes or a number with a K, M, G, T or P suffix, e.g. 10G)'
ctl volume create x --size 1000
err 2 'blockctl: volume "x": size "1000" is invalid (must be a positive multiple of 512 bytes)'
ctl volume resize db --size 0
err 2 'blockctl: volume "db": size "0" is invalid (must be a positive multiple of 512 bytes)'
ctl volume create
err 2 'blockctl: volume create: missing NAME (usage: blockctl volume create NAME --size SIZE [--type TYPE] [--multi-attach])'
ctl volume create x
err 2 'blockctl: volume create: missing --size (usage: blockctl volume create NAME --size SIZE [--type TYPE] [--multi-attach])'
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
err 2 'blockctl: volume: unknown subcommand "frob" (create, list, show, stats, resize, rollback, delete, import or export)'
ctl frob
err 2 'blockctl: unknown command "frob" (commands: volume, snapshot, pool; try "blockctl --help")'
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
run "$BLOCKCTL" --api "$DEAD_API" snapshot diff vm1@a vm1
err 3 "blockctl: cannot reach blockd at $DEAD_API: Connection refused (is blockd running? use --api or BLOCKD_API)"

echo "PASS test-blockctl"
