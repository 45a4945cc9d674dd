#!/bin/sh
# tests/integration/test-blockctl-live.sh — blockctl against a real blockd
# (test-blockctl.sh covers the same commands against a fake): create, list,
# show, resize, delete in text and --json; --api vs $BLOCKD_API; exit codes
# 1 (error from blockd), 2 (usage) and 3 (unreachable) with one-line
# messages; delete refused while an NBD client is connected, and --force.
. "$(dirname "$0")/lib.sh"
$PY -c 'import nbd' 2>/dev/null || skip "skipped: $PY has no libnbd bindings (python3-libnbd)"

start_blockd
API=$BLOCKD_API
DEAD_API=http://127.0.0.1:$(free_port)

has () { grep -qxF -- "$1" "$T/out" || fail "no line [$1] in: $(cat "$T/out")"; }
json () {
    $PY -c "import json, sys; j = json.load(sys.stdin); sys.exit(0 if ($1) else 1)" <"$T/out" \
        || fail "JSON check [$1] failed on: $(cat "$T/out")"
}

echo "create (text): every field"
run ctl volume create data1 --size 10G; ok "create"
[ "$(cut -d: -f1 "$T/out" | tr '\n' ' ')" = "id name size allocated type status connections created nbd_uri snapshots multi_attach attached_to " ] \
    || fail "create keys: $(cat "$T/out")"
has "name: data1"
has "size: 10G (10737418240 bytes)"
has "allocated: 0 (0 bytes)"
has "type: standard"
has "status: available"
has "connections: 0"
has "nbd_uri: $(uri data1)"
grep -Eq '^id: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' "$T/out" || fail "id: $(cat "$T/out")"
grep -Eq '^created: [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' "$T/out" || fail "created: $(cat "$T/out")"

echo "create --json, --api before and after the subcommand, BLOCKD_API"
run ctl volume create web-01 --size 1.5G --json; ok "create --json"
json 'j["name"] == "web-01" and j["size"] == 1610612736 and j["status"] == "available" and j["allocated"] == 0'
run env -u BLOCKD_API "$BLOCKCTL" --api "$API" volume create db --size 512; ok "--api first"
has "size: 512 (512 bytes)"
run env -u BLOCKD_API "$BLOCKCTL" volume show db --api "$API" --json; ok "--api last"
json 'j["name"] == "db" and j["size"] == 512'
run env BLOCKD_API="$API" "$BLOCKCTL" volume show db; ok "BLOCKD_API"
run env BLOCKD_API="$DEAD_API" "$BLOCKCTL" --api "$API" volume show db; ok "--api wins over BLOCKD_API"
run env BLOCKD_API="$API/" "$BLOCKCTL" volume show db; ok "BLOCKD_API with a trailing slash"

echo "list: table, --prefix, --sort size --reverse, --json"
run ctl volume list; ok "list"
[ "$(wc -l <"$T/out")" -eq 4 ] || fail "list: header + 3 rows expected: $(cat "$T/out")"
[ "$(awk '{print $1, $3, $4, $5, $6}' "$T/out" | tr '\n' ';')" = \
  "NAME SIZE ALLOCATED TYPE STATUS;data1 10G 0 standard available;db 512 0 standard available;web-01 1.5G 0 standard available;" ] \
    || fail "list table: $(cat "$T/out")"
$PY - "$T/out" <<'EOF' || fail "list columns not aligned: $(cat "$T/out")"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
for l in lines[1:]:
    assert [m.start() for m in re.finditer(r"\S+", l)] == starts, l
EOF
run ctl volume list --sort size --reverse; ok "list --sort size --reverse"
[ "$(awk 'NR > 1 {print $1}' "$T/out" | tr '\n' ' ')" = "data1 web-01 db " ] || fail "by size desc: $(cat "$T/out")"
run ctl volume list --prefix web --json; ok "list --prefix --json"
json '[v["name"] for v in j["volumes"]] == ["web-01"]'
run ctl volume list --status in-use; ok "list --status in-use, nothing connected"
[ "$(wc -l <"$T/out")" -eq 1 ] || fail "in-use list should be just the header: $(cat "$T/out")"

echo "show by name and by id; resize"
run ctl volume show data1 --json; ok "show --json"
ID=$($PY -c 'import json, sys; print(json.load(sys.stdin)["id"])' <"$T/out")
run ctl volume show "$ID"; ok "show by id"
has "id: $ID"
has "name: data1"
run ctl volume resize data1 --size 20G; ok "resize"
has "size: 20G (21474836480 bytes)"
run ctl --json volume resize data1 --size 21G; ok "resize --json"
json 'j["name"] == "data1" and j["size"] == 21 << 30'
[ "$(nbdinfo --size "$(uri data1)" 2>/dev/null || echo "$((21 << 30))")" = $((21 << 30)) ] || fail "NBD size after resize"
run ctl volume resize data1 --size 1G
err 1 "shrink"
grep -q 'data1' "$T/err" || fail "shrink message does not name the volume: $(cat "$T/err")"

echo "errors from blockd: exit 1"
run ctl volume show nope; err 1 "show unknown"
[ "$(cat "$T/err")" = 'blockctl: volume "nope" not found' ] || fail "show unknown: $(cat "$T/err")"
run ctl volume delete nope; err 1 "delete unknown"
run ctl volume resize nope --size 2G; err 1 "resize unknown"
run ctl volume create db --size 1G; err 1 "duplicate"
grep -q '"db"' "$T/err" || fail "duplicate message does not name it: $(cat "$T/err")"
run ctl volume show nope --json; err 1 "show unknown --json"

echo "usage errors: exit 2, nothing sent"
run ctl volume list --json; cp "$T/out" "$T/before.json"
run ctl volume create x --size 10Q; err 2 "bad size"
run ctl volume create x --size 1000; err 2 "size not a multiple of 512"
run ctl volume create x --size 0; err 2 "size 0"
run ctl volume create; err 2 "missing name"
run ctl volume create x; err 2 "missing --size"
run ctl volume resize db; err 2 "resize without --size"
run ctl volume show; err 2 "show without name"
run ctl volume delete; err 2 "delete without name"
run ctl volume create .bad --size 1G; err 2 "invalid name"
run ctl volume create 'a b' --size 1G; err 2 "name with a space"
run ctl volume list --status busy; err 2 "bad --status"
run ctl volume list --bogus; err 2 "unknown option"
run ctl volume frob; err 2 "unknown subcommand"
run ctl frob; err 2 "unknown command"
run ctl; err 2 "no command"
run ctl volume list --api; err 2 "--api without a value"
run ctl volume list --json; ok "list after usage errors"
cmp -s "$T/out" "$T/before.json" || fail "a usage error changed the state"

echo "blockd unreachable: exit 3"
run env -u BLOCKD_API "$BLOCKCTL" --api "$DEAD_API" volume list; err 3 "unreachable --api"
grep -qF "$DEAD_API" "$T/err" || fail "unreachable message does not name the URL: $(cat "$T/err")"
run env BLOCKD_API="$DEAD_API" "$BLOCKCTL" volume show db --json; err 3 "unreachable BLOCKD_API"
run env BLOCKD_API="http://127.0.0.1:1" "$BLOCKCTL" volume delete db; err 3 "unreachable port 1"
run ctl volume show db; ok "db still exists after the unreachable delete"

echo "delete refused while an NBD client is connected; list --status in-use; --force"
$PY - "$(uri web-01)" "$T/ready" >"$T/client.out" 2>&1 <<'EOF' &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open(sys.argv[2], "w").close()
for i in range(200):
    try:
        h.pread(512, 0)
    except nbd.Error as e:
        print("disconnected:", e)
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
EOF
CLIENT=$!
i=0
until [ -f "$T/ready" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "NBD client did not connect: $(cat "$T/client.out")"; sleep 0.1
done
run ctl volume list --status in-use; ok "list --status in-use"
[ "$(awk 'NR > 1 {print $1, $6}' "$T/out")" = "web-01 in-use" ] || fail "in-use: $(cat "$T/out")"
run ctl volume show web-01; ok "show in-use"
has "status: in-use"
has "connections: 1"
run ctl volume delete web-01; err 1 "delete in use"
[ "$(cat "$T/err")" = 'blockctl: volume "web-01" is in use by 1 NBD client(s); disconnect them or delete with force' ] \
    || grep -q 'web-01' "$T/err" || fail "delete in use message: $(cat "$T/err")"
grep -q -i 'force' "$T/err" || fail "delete-in-use message does not mention --force: $(cat "$T/err")"
run ctl volume show web-01; ok "still there"
run ctl volume delete web-01 --force; ok "delete --force"
[ "$(cat "$T/out")" = 'deleted volume "web-01"' ] || fail "delete --force output: $(cat "$T/out")"
rc=0
wait $CLIENT || rc=$?
[ $rc -eq 0 ] || fail "the NBD client was not disconnected: $(cat "$T/client.out")"
run ctl volume show web-01; err 1 "show after forced delete"
run ctl volume list --status in-use; ok "nothing in use"
[ "$(wc -l <"$T/out")" -eq 1 ] || fail "in-use after the client left: $(cat "$T/out")"

echo "delete (text and --json)"
run ctl --json volume delete db; ok "delete --json"
json 'j == {"deleted": "db"}'
run ctl volume delete data1; ok "delete"
[ "$(cat "$T/out")" = 'deleted volume "data1"' ] || fail "delete output: $(cat "$T/out")"
run ctl volume list --json; ok "list empty"
json 'j == {"volumes": []}'
run ctl pool show; ok "pool show"
has "volumes: 0"
has "allocated: 0 (0 bytes)"

stop_blockd
check_store
echo "PASS test-blockctl-live"
