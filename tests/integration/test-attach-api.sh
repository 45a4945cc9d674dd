#!/bin/sh
# tests/integration/test-attach-api.sh — attachment records (docs/API.md,
# "Attachments"): attach/detach, one instance at a time unless multi-attach,
# roles, delete refused while attached, list filters, bad requests, blockctl's
# view of them, and attach state surviving a restart and a kill -9.
. "$(dirname "$0")/lib.sh"
need curl

start_blockd

echo "attach: the record, status in-use, idempotent"
api POST /v1/volumes '{"name": "sys1", "size": "1G"}'; expect 201 "create sys1"
jcheck 'j["attached"] is False and j["attachments"] == [] and j["multi_attach"] is False' "fresh volume"
api POST /v1/volumes '{"name": "data1", "size": "1G"}'; expect 201 "create data1"
api POST /v1/volumes '{"name": "shared", "size": "1G", "multi_attach": true}'; expect 201 "create shared"
jcheck 'j["multi_attach"] is True' "multi_attach recorded"
api POST /v1/volumes/sys1/attach '{"instance": "vm1", "role": "system"}'; expect 200 "attach sys1"
jcheck 'j["attached"] and j["status"] == "in-use" and len(j["attachments"]) == 1' "attach sys1 body"
jcheck 'j["attachments"][0]["instance"] == "vm1" and j["attachments"][0]["role"] == "system"' "attach sys1 record"
jcheck '__import__("re").fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", j["attachments"][0]["since"])' "since is RFC 3339"
SINCE=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["attachments"][0]["since"])' "$T/body")
api POST /v1/volumes/sys1/attach '{"instance": "vm1", "role": "system"}'; expect 200 "attach again: idempotent"
jcheck "len(j['attachments']) == 1 and j['attachments'][0]['since'] == '$SINCE'" "attach again keeps the record"
api POST /v1/volumes/data1/attach '{"instance": "vm1"}'; expect 200 "attach data1 (role defaults to data)"
jcheck 'j["attachments"][0]["role"] == "data"' "default role"

echo "one instance at a time: 409 naming the holder"
api POST /v1/volumes/data1/attach '{"instance": "vm2", "role": "data"}'; experr 409 conflict "attach to a second instance"
jcheck '"vm1" in j["error"]["message"]' "the 409 names the holder"
api POST /v1/volumes/sys1/attach '{"instance": "vm1", "role": "data"}'; experr 409 conflict "same instance, other role"
api GET /v1/volumes/data1; jcheck '[a["instance"] for a in j["attachments"]] == ["vm1"]' "refused attach changed nothing"

echo "multi-attach"
api POST /v1/volumes/shared/attach '{"instance": "vm1"}'; expect 200 "shared on vm1"
api POST /v1/volumes/shared/attach '{"instance": "vm2"}'; expect 200 "shared on vm2"
jcheck '[a["instance"] for a in j["attachments"]] == ["vm1", "vm2"]' "shared on both"
api POST /v1/volumes/shared/detach '{}'; experr 409 conflict "detach without instance, two holders"
jcheck '"vm1" in j["error"]["message"] and "vm2" in j["error"]["message"]' "names both holders"

echo "delete refused while attached, even forced"
api DELETE /v1/volumes/data1; experr 409 conflict "delete attached"
jcheck '"vm1" in j["error"]["message"] and "detach" in j["error"]["message"]' "delete says why"
api DELETE '/v1/volumes/data1?force=true'; experr 409 conflict "force-delete attached"
api GET /v1/volumes/data1; expect 200 "still there"

echo "list filters"
names () { $PY -c 'import json,sys; print(" ".join(v["name"] for v in json.load(open(sys.argv[1]))["volumes"]))' "$T/body"; }
api POST /v1/volumes '{"name": "spare", "size": "1G"}'; expect 201 "create spare"
api GET '/v1/volumes?attached=true'; expect 200 "attached=true"
[ "$(names)" = "data1 shared sys1" ] || fail "attached=true: $(names)"
api GET '/v1/volumes?attached=false'; expect 200 "attached=false"
[ "$(names)" = "spare" ] || fail "attached=false: $(names)"
api GET '/v1/volumes?instance=vm2'; expect 200 "instance=vm2"
[ "$(names)" = "shared" ] || fail "instance=vm2: $(names)"
api GET '/v1/volumes?instance=vm1&attached=true'; expect 200 "instance=vm1"
[ "$(names)" = "data1 shared sys1" ] || fail "instance=vm1: $(names)"
api GET '/v1/volumes?status=available'; expect 200 "status=available"
[ "$(names)" = "spare" ] || fail "status=available (attached volumes are in use): $(names)"
api GET '/v1/volumes?attached=maybe'; experr 400 invalid_argument "attached=maybe"

echo "bad requests change nothing"
api POST /v1/volumes/spare/attach '{}'; experr 400 invalid_argument "no instance"
api POST /v1/volumes/spare/attach '{"instance": 7}'; experr 400 invalid_argument "instance not a string"
api POST /v1/volumes/spare/attach '{"instance": "-vm"}'; experr 400 invalid_argument "bad instance name"
api POST /v1/volumes/spare/attach '{"instance": "vm/1"}'; experr 400 invalid_argument "instance with a slash"
api POST /v1/volumes/spare/attach '{"instance": "vm1", "role": "root"}'; experr 400 invalid_argument "bad role"
api POST /v1/volumes/spare/attach '{"instance": "vm1", "mode": "rw"}'; experr 400 invalid_argument "unknown field"
api POST /v1/volumes/spare/attach '{"instance": "vm1"'; experr 400 invalid_argument "truncated JSON"
api POST /v1/volumes/nosuch/attach '{"instance": "vm1"}'; experr 404 not_found "unknown volume"
api GET /v1/volumes/spare/attach; expect 405 "GET attach"
api POST /v1/volumes '{"name": "x1", "size": "1G", "multi_attach": "yes"}'; experr 400 invalid_argument "multi_attach not a bool"
api POST /v1/volumes/spare/detach '{}'; experr 409 conflict "detach a volume attached nowhere"
api GET /v1/volumes/spare; jcheck 'j["attached"] is False and j["status"] == "available"' "spare unchanged"

echo "blockctl shows attachments and filters"
ctl volume show sys1 >"$T/out" || fail "blockctl volume show"
grep -qx "attached_to: vm1 (system, since $SINCE)" "$T/out" || fail "show: $(cat "$T/out")"
grep -qx "multi_attach: false" "$T/out" || fail "show multi_attach: $(cat "$T/out")"
ctl volume list --instance vm2 >"$T/out" || fail "list --instance"
[ "$(awk 'NR > 1 {print $1}' "$T/out")" = shared ] || fail "list --instance vm2: $(cat "$T/out")"
grep -q "vm1 (data), vm2 (data)" "$T/out" || fail "list shows both holders: $(cat "$T/out")"
ctl volume list --detached >"$T/out" || fail "list --detached"
[ "$(awk 'NR > 1 {print $1}' "$T/out")" = spare ] || fail "list --detached: $(cat "$T/out")"
ctl volume create multi2 --size 1M --multi-attach --json >"$T/body" || fail "create --multi-attach"
jcheck 'j["multi_attach"] is True' "blockctl create --multi-attach"

echo "attach state survives a restart and a kill -9"
stop_blockd
start_blockd
api GET /v1/volumes/sys1; expect 200 "sys1 after restart"
jcheck "j['attachments'] == [{'instance': 'vm1', 'role': 'system', 'since': '$SINCE'}]" "sys1 attachment after restart"
api GET /v1/volumes/shared; jcheck 'j["multi_attach"] and [a["instance"] for a in j["attachments"]] == ["vm1", "vm2"]' "shared after restart"
api POST /v1/volumes/shared/detach '{"instance": "vm1"}'; expect 200 "detach shared from vm1"
api POST /v1/volumes/spare/attach '{"instance": "vm3", "role": "system"}'; expect 200 "attach spare"
kill9_blockd
check_store
start_blockd
api GET /v1/volumes/shared; jcheck '[a["instance"] for a in j["attachments"]] == ["vm2"]' "detach survives kill -9"
api GET /v1/volumes/spare; jcheck '[(a["instance"], a["role"]) for a in j["attachments"]] == [("vm3", "system")]' "attach survives kill -9"

echo "detach, then delete works"
api POST /v1/volumes/data1/detach '{"instance": "vm2"}'; experr 409 conflict "detach from the wrong instance"
api POST /v1/volumes/data1/detach '{"instance": "vm1"}'; expect 200 "detach data1"
jcheck 'j["attached"] is False and j["status"] == "available"' "detached"
api DELETE /v1/volumes/data1; expect 204 "delete detached"
stop_blockd
check_store
echo "PASS test-attach-api"
