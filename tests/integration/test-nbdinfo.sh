#!/bin/sh
# tests/integration/test-nbdinfo.sh — what blockd advertises in the NBD
# handshake, as nbdinfo (libnbd) sees it: export size, every flag, block
# size constraints, meta contexts, the export list, and the error for an
# export that does not exist.
. "$(dirname "$0")/lib.sh"
need nbdinfo

start_blockd
ctl volume create big --size 1G >/dev/null
ctl volume create odd --size 1000448 >/dev/null     # 1954 * 512, not a multiple of 4096

# check_info NAME SIZE: nbdinfo --json on the export shows SIZE and the flags
check_info () {
    echo "nbdinfo --json $(uri "$1")"
    nbdinfo --json "$(uri "$1")" >"$T/info.json" || fail "nbdinfo $1 failed"
    $PY - "$T/info.json" "$1" "$2" <<'EOF' || fail "nbdinfo --json $1: $(cat "$T/info.json")"
import json, sys
j = json.load(open(sys.argv[1]))
name, size = sys.argv[2], int(sys.argv[3])
assert j["protocol"] == "newstyle-fixed", j["protocol"]
assert j["structured"] is True, "structured replies not negotiated"
assert len(j["exports"]) == 1, j["exports"]
e = j["exports"][0]
want = {
    "export-name": name,
    "export-size": size,
    "can_flush": True, "can_fua": True, "can_trim": True, "can_zero": True,
    "can_fast_zero": True, "can_multi_conn": True, "can_df": True,
    "is_read_only": False, "is_rotational": False,
    "block_size_minimum": 1, "block_size_preferred": 4096,
    "block_size_maximum": 33554432,
}
bad = {k: (e.get(k, "<missing>"), v) for k, v in want.items() if e.get(k, "<missing>") != v}
assert not bad, "got != want: %r" % bad
assert "base:allocation" in e["contexts"], e["contexts"]
assert e["uri"].endswith("/" + name), e["uri"]
EOF
}

check_info big 1073741824
check_info odd 1000448

echo "nbdinfo --size"
[ "$(nbdinfo --size "$(uri odd)")" = 1000448 ] || fail "nbdinfo --size odd"
[ "$(nbdinfo --size "$(uri big)")" = 1073741824 ] || fail "nbdinfo --size big"

echo "nbdinfo --list shows both volumes"
nbdinfo --list --json "$(uri big)" >"$T/list.json" || fail "nbdinfo --list failed"
$PY - "$T/list.json" <<'EOF' || fail "nbdinfo --list: $(cat "$T/list.json")"
import json, sys
j = json.load(open(sys.argv[1]))
got = {e["export-name"]: e["export-size"] for e in j["exports"]}
assert got == {"big": 1073741824, "odd": 1000448}, got
EOF
nbdinfo --list "$(uri big)" >"$T/list.txt" || fail "nbdinfo --list (text) failed"
grep -q 'export="big"' "$T/list.txt" || fail "--list text lacks big: $(cat "$T/list.txt")"
grep -q 'export="odd"' "$T/list.txt" || fail "--list text lacks odd: $(cat "$T/list.txt")"

echo "unknown export is refused, naming it"
rc=0
LIBNBD_DEBUG=1 nbdinfo "$(uri nosuchvol)" >"$T/nope.out" 2>"$T/nope.err" || rc=$?
[ $rc -ne 0 ] || fail "nbdinfo on an unknown export succeeded: $(cat "$T/nope.out")"
grep -v '^libnbd: debug' "$T/nope.err" | grep -q nosuchvol \
    || fail "nbdinfo error does not name the export: $(cat "$T/nope.err")"
# the server's own message (NBD_REP_ERR_UNKNOWN text) names the volume too
grep 'server error message' "$T/nope.err" | grep -q '"nosuchvol"' \
    || fail "server error message does not name the export: $(grep 'server error' "$T/nope.err")"

echo "after a resize, a new connection sees the new size"
ctl volume resize odd --size 2M >/dev/null
[ "$(nbdinfo --size "$(uri odd)")" = 2097152 ] || fail "size after resize: $(nbdinfo --size "$(uri odd)")"

echo "daemon still healthy"
curl -sf "$BLOCKD_API/v1/health" >/dev/null || fail "health"
stop_blockd
check_store
echo "PASS test-nbdinfo"
