#!/bin/sh
# tests/integration/test-api.sh — blockd's HTTP API (docs/API.md) with curl:
# create/get/list/grow/delete, the VOLUME object, list filters and order,
# delete refused while an NBD client is connected and forced, and a table of
# bad requests that must each get a 4xx with a JSON error body and leave
# the daemon's state unchanged.
. "$(dirname "$0")/lib.sh"
need curl nbdsh
$PY -c 'import nbd' 2>/dev/null || skip "skipped: $PY has no libnbd bindings (python3-libnbd)"

start_blockd
A=$BLOCKD_API

VOLKEYS="['allocated', 'attached', 'attachments', 'connections', 'created', 'id', 'multi_attach', 'name', 'nbd_uri', 'size', 'snapshots', 'source_snapshot', 'status', 'type']"

echo "health, pool"
api GET /v1/health; expect 200 health
jcheck 'j["status"] == "ok"' health
api GET /v1/pool; expect 200 pool
jcheck 'j["chunk_size"] == 1048576 and j["volumes"] == 0 and j["free"] == j["capacity"] - j["allocated"]' pool

echo "create: 201 and the VOLUME object"
api POST /v1/volumes '{"name": "data1", "size": "1G"}'; expect 201 "create data1"
jcheck "sorted(j) == $VOLKEYS" "create fields"
jcheck 'j["name"] == "data1" and j["size"] == 1 << 30 and j["allocated"] == 0 and j["type"] == "standard"' create
jcheck 'j["status"] == "available" and j["connections"] == 0' "create status"
jcheck "j['nbd_uri'] == 'nbd://127.0.0.1:$NBD_PORT/data1'" "create nbd_uri"
jcheck 'len(j["id"]) == 36 and j["id"].count("-") == 4' "create id is a UUID"
jcheck '__import__("re").fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", j["created"])' "created is RFC 3339 UTC"
ID1=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/body")
sleep 1.1     # distinct "created" seconds for sort=created
api POST /v1/volumes '{"name": "web-01", "size": 536870912, "type": "standard"}'; expect 201 "create web-01"
jcheck 'j["size"] == 512 << 20' "integer size"
api POST /v1/volumes '{"name": "web-02.boot", "size": "3GiB"}'; expect 201 "create web-02.boot"
jcheck 'j["size"] == 3 << 30' "GiB suffix"
api POST /v1/volumes '{"name": "DB_2", "size": "0.5K"}'; expect 201 "create DB_2"
jcheck 'j["size"] == 512' "0.5K"
api POST /v1/volumes '{"name": "x63xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "size": "1.5g"}'
expect 201 "63-character name"
jcheck 'j["size"] == 1610612736' "1.5g"
api POST /v1/volumes '{"name": "huge", "size": "256T"}'; expect 201 "256 TiB, the maximum (thin)"
jcheck 'j["size"] == 256 << 40' "256T"

echo "get by name and by id"
api GET /v1/volumes/data1; expect 200 "get by name"
jcheck "sorted(j) == $VOLKEYS and j['id'] == '$ID1'" "get by name"
api GET "/v1/volumes/$ID1"; expect 200 "get by id"
jcheck 'j["name"] == "data1"' "get by id"

echo "list: all, prefix, status, sort, order"
names () { $PY -c 'import json,sys; print(" ".join(v["name"] for v in json.load(open(sys.argv[1]))["volumes"]))' "$T/body"; }
api GET /v1/volumes; expect 200 list
jcheck "all(sorted(v) == $VOLKEYS for v in j['volumes'])" "list fields"
[ "$(names)" = "DB_2 data1 huge web-01 web-02.boot x63xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" ] \
    || [ "$(names)" = "data1 DB_2 huge web-01 web-02.boot x63xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" ] \
    || fail "list by name: $(names)"
api GET "/v1/volumes?prefix=web-"; expect 200 "list prefix"
[ "$(names)" = "web-01 web-02.boot" ] || fail "prefix=web-: $(names)"
api GET "/v1/volumes?prefix=nothing"; expect 200 "list prefix, no match"
jcheck 'j == {"volumes": []}' "empty list"
api GET "/v1/volumes?sort=size&order=desc"; expect 200 "list by size desc"
[ "$(names)" = "huge web-02.boot x63xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx data1 web-01 DB_2" ] \
    || fail "sort=size&order=desc: $(names)"
api GET "/v1/volumes?sort=size"; expect 200 "list by size"
[ "$(names)" = "DB_2 web-01 data1 x63xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx web-02.boot huge" ] \
    || fail "sort=size: $(names)"
api GET "/v1/volumes?sort=created&order=asc"; expect 200 "list by created"
[ "$(names | cut -d' ' -f1)" = data1 ] || fail "sort=created: data1 (made a second earlier) first: $(names)"
api GET "/v1/volumes?sort=created&order=desc"; expect 200 "list by created desc"
[ "$(names | awk '{print $NF}')" = data1 ] || fail "sort=created&order=desc: data1 last: $(names)"
api GET "/v1/volumes?status=available&prefix=d"; expect 200 "list status=available"
[ "$(names)" = "data1" ] || fail "status=available&prefix=d: $(names)"
api GET "/v1/volumes?status=in-use"; expect 200 "list status=in-use"
jcheck 'j == {"volumes": []}' "nothing in use yet"

echo "PATCH: grow, same size, shrink refused"
api PATCH /v1/volumes/data1 '{"size": "2G"}'; expect 200 "grow"
jcheck 'j["size"] == 2 << 30 and j["name"] == "data1"' grow
api PATCH "/v1/volumes/$ID1" '{"size": 3221225472}'; expect 200 "grow by id"
jcheck 'j["size"] == 3 << 30' "grow by id"
api PATCH /v1/volumes/data1 '{"size": "3G"}'; expect 200 "resize to the same size"
api PATCH /v1/volumes/data1 '{"size": "1G"}'; experr 400 invalid_argument "shrink"
grep -q -i 'shrink\|grow\|smaller' "$T/body" || fail "shrink message does not say why: $(cat "$T/body")"
api PATCH /v1/volumes/data1 '{"size": "3G", "name": "other"}'; experr 400 invalid_argument "PATCH with an unknown field"
api PATCH /v1/volumes/data1 '{}'; experr 400 invalid_argument "PATCH without size"
api PATCH /v1/volumes/nosuch '{"size": "5G"}'; experr 404 not_found "PATCH unknown volume"
api GET /v1/volumes/data1; expect 200 "get after PATCHes"
jcheck 'j["size"] == 3 << 30' "size after refused PATCHes"

echo "conflicts and unknown volumes"
api POST /v1/volumes '{"name": "data1", "size": "1G"}'; experr 409 conflict "duplicate name"
api GET /v1/volumes/nosuch; experr 404 not_found "get unknown"
grep -q nosuch "$T/body" || fail "not-found message does not name the volume: $(cat "$T/body")"
api GET /v1/volumes/00000000-0000-4000-8000-000000000000; experr 404 not_found "get unknown id"
api DELETE /v1/volumes/nosuch; experr 404 not_found "delete unknown"

echo "delete: 204, then 404"
api DELETE /v1/volumes/DB_2; expect 204 "delete"
[ ! -s "$T/body" ] || fail "204 with a body: $(cat "$T/body")"
api DELETE /v1/volumes/DB_2; experr 404 not_found "delete twice"
api GET /v1/volumes/DB_2; experr 404 not_found "get deleted"
api DELETE /v1/volumes/huge; expect 204 "delete huge"

echo "delete while an NBD client is connected: 409, then force: 204 and the client is cut off"
# The client reads every 0.1 s; it exits 0 once the server has cut it off.
$PY - "$(uri web-01)" "$T/client.ready" >"$T/client.out" 2>&1 <<'EOF' &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"x" * 4096, 0)
open(sys.argv[2], "w").close()
for i in range(200):
    try:
        h.pread(4096, 0)
    except nbd.Error as e:
        print("disconnected:", e)
        sys.exit(0)
    time.sleep(0.1)
print("still connected after 20 s")
sys.exit(1)
EOF
CLIENT=$!
i=0
until [ -f "$T/client.ready" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "NBD client did not connect: $(cat "$T/client.out")"; sleep 0.1
done
api GET /v1/volumes/web-01; expect 200 "get in-use"
jcheck 'j["status"] == "in-use" and j["connections"] == 1' "status while connected"
jcheck 'j["allocated"] == 1 << 20' "allocated after one 4 KiB write (one chunk)"
api GET "/v1/volumes?status=in-use"; expect 200 "list in-use"
[ "$(names)" = web-01 ] || fail "status=in-use: $(names)"
api GET "/v1/volumes?status=available&prefix=web"; expect 200 "list available"
[ "$(names)" = web-02.boot ] || fail "status=available&prefix=web: $(names)"
api DELETE /v1/volumes/web-01; experr 409 conflict "delete in use"
api GET /v1/volumes/web-01; expect 200 "still there after a refused delete"
api DELETE "/v1/volumes/web-01?force=false"; experr 409 conflict "delete in use, force=false"
api DELETE "/v1/volumes/web-01?force=true"; expect 204 "forced delete"
rc=0
wait $CLIENT || rc=$?
[ $rc -eq 0 ] || fail "NBD client was not disconnected by a forced delete: $(cat "$T/client.out")"
api GET /v1/volumes/web-01; experr 404 not_found "get after forced delete"
nbdsh -c "h.connect_uri('$(uri web-01)')" >/dev/null 2>&1 && fail "connect to a deleted volume succeeded"
api GET /v1/pool; expect 200 pool
jcheck 'j["volumes"] == 3 and j["allocated"] == 0' "pool after deletes (web-01's chunk returned)"

echo "bad requests: 4xx with a JSON error, state unchanged"
api GET /v1/volumes; cp "$T/body" "$T/before.json"
# bad STATUS CODE METHOD PATH [BODY [CONTENT-TYPE]]: the request gets STATUS
# with the error body; failures are collected (so one run lists them all) and
# a volume created by mistake is deleted again.
BAD=0
bad () {
    s=$1 c=$2
    shift 2
    api "$@"
    if ! (experr "$s" "$c" "$*") >"$T/bad.out" 2>&1; then
        head -n 1 "$T/bad.out" | tr '\n' ' ' | cut -c1-400
        echo
        BAD=$((BAD + 1))
        if [ "$st" = 201 ]; then
            curl -s -o /dev/null -X DELETE "$A/v1/volumes/$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/body")"
        fi
    fi
}
for size in 0 -1 1000 18446744073709551616 '"18446744073709551616"' '"10X"' '""' 1.5 '"1.5"' '"abc"' \
            '"257T"' 281474976711168 '"-1G"' '" 1G"' '"1G "' '"1 G"' '"0x100000"' '"1e9"' null true \
            '[1]' '{"v": 1}' '"1.2345K"'; do
    bad 400 invalid_argument POST /v1/volumes "{\"name\": \"bad\", \"size\": $size}"
done
for name in '""' '"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"' '"a/b"' '"a@b"' \
            '"a b"' '"\u0001"' '"a\u0000b"' '".hidden"' '"-x"' '"é"' '"a%2Fb"' '"a\nb"' 12 null '["a"]'; do
    bad 400 invalid_argument POST /v1/volumes "{\"name\": $name, \"size\": \"1G\"}"
done
printf '{"name": "a\377b", "size": "1G"}' >"$T/badutf8"
bad 400 invalid_argument POST /v1/volumes @"$T/badutf8"
printf '{"name": "ok\300\200", "size": "1G"}' >"$T/overlong"
bad 400 invalid_argument POST /v1/volumes @"$T/overlong"
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G", "color": "red"}'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G", "type": "nosuchtype"}'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G", "type": ""}'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G", "type": 7}'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad"}'
bad 400 invalid_argument POST /v1/volumes '{"size": "1G"}'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G"'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": }'
bad 400 invalid_argument POST /v1/volumes '{name: "bad", size: "1G"}'
bad 400 invalid_argument POST /v1/volumes '[{"name": "bad", "size": "1G"}]'
bad 400 invalid_argument POST /v1/volumes '"bad"'
bad 400 invalid_argument POST /v1/volumes ''
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G"} trailing'
bad 400 invalid_argument POST /v1/volumes '{"name": "bad", "size": "1G"}{}'
bad 400 invalid_argument GET "/v1/volumes?status=busy"
bad 400 invalid_argument GET "/v1/volumes?sort=color"
bad 400 invalid_argument GET "/v1/volumes?order=up"
bad 400 invalid_argument PATCH /v1/volumes/data1 '{"size": "10X"}'
bad 400 invalid_argument PATCH /v1/volumes/data1 '{"size": 0}'
bad 400 invalid_argument PATCH /v1/volumes/data1 '{"size": "512T"}'
bad 400 invalid_argument PATCH /v1/volumes/data1 'not json'
# any content type is accepted when the body is JSON (a bare `curl -d` works)
api POST /v1/volumes '{"name": "ctype1", "size": "1G"}' application/x-www-form-urlencoded
expect 201 "a JSON body sent as a form"
api DELETE /v1/volumes/ctype1
expect 204 "delete ctype1"
bad 405 method_not_allowed PUT /v1/volumes '{"name": "bad", "size": "1G"}'
bad 405 method_not_allowed DELETE /v1/volumes
bad 405 method_not_allowed POST /v1/volumes/data1 '{"size": "5G"}'
bad 405 method_not_allowed PUT /v1/volumes/data1 '{"size": "5G"}'
bad 405 method_not_allowed POST /v1/pool '{}'
bad 404 not_found GET /v1/nope
bad 404 not_found GET /v2/volumes
bad 404 not_found GET /
bad 404 not_found GET /v1/volumes/data1/extra
bad 404 not_found GET /v1/volumes/..%2Fpool
head -c 70000 /dev/zero | tr '\0' ' ' >"$T/big"
printf '{"name": "bad", "size": "1G"}' >>"$T/big"
bad 413 payload_too_large POST /v1/volumes @"$T/big"
$PY -c 'import sys; sys.stdout.write("{\"name\": \"bad\", \"size\": \"1G\", \"type\": \"" + "x" * 100000 + "\"}")' >"$T/big2"
bad 413 payload_too_large POST /v1/volumes @"$T/big2"
echo "  (also: a header-only request with a huge Content-Length)"
st=$(curl -s -o "$T/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -H 'Content-Length: 10000000000' --max-time 3 "$A/v1/volumes" 2>/dev/null) || true
case $st in 4??) ;; *) echo "FAIL: Content-Length 10000000000 without a body: HTTP $st (000: no answer in 3 s), want 413 at once"; BAD=$((BAD + 1)) ;; esac
echo "  (also: a request line of 100 KB)"
long=$(head -c 100000 /dev/zero | tr '\0' a)
st=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 5 "$A/v1/volumes/$long" 2>/dev/null) || true
case $st in 4??) ;; *) echo "FAIL: 100 KB URL: HTTP $st, want 4xx"; BAD=$((BAD + 1)) ;; esac

kill -0 "$BLOCKD_PID" 2>/dev/null || fail "blockd died during the bad-request table"
[ $BAD -eq 0 ] || fail "$BAD bad request(s) were not refused as documented (listed above)"
api GET /v1/volumes; expect 200 "list after the table"
cmp -s "$T/body" "$T/before.json" || fail "state changed by bad requests: before $(cat "$T/before.json") after $(cat "$T/body")"
api GET /v1/volumes/bad; experr 404 not_found "no volume named bad was created"

stop_blockd
check_store
echo "PASS test-api"
