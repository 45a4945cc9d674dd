#!/bin/sh
# Clones and rollback: a clone reads its snapshot's data and is independent
# of it and of the source volume in both directions; clones of clones; a
# clone outlives its source snapshot and volume; rollback gives a volume a
# snapshot's contents back, keeps later snapshots, is refused (409) while an
# NBD client is connected; nothing leaks; the store checks clean.
. "$(dirname "$0")/lib.sh"
need nbdsh
start_blockd --chunk-size 1M
M=1048576
failures= nfail=0
soft_fail () { echo "FAIL: $*"; nfail=$((nfail + 1)); failures="$failures
  $*"; }
vol_field () { curl -sf "$BLOCKD_API/v1/volumes/$1" | $PY -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
no_leak () {
    l=$(pool_field leaked)
    [ "$l" = 0 ] || soft_fail "pool leaked $l bytes $*"
}

# put EXPORT "OFF:LEN:BYTE ...": write LEN bytes of BYTE at OFF (bytes), then flush
put () {
    SPEC=$2 nbdsh -u "$(uri "$1")" -c "
import os
for spec in os.environ['SPEC'].split():
    off, n, b = spec.split(':')
    h.pwrite(bytes([int(b, 0)]) * int(n), int(off))
h.flush()
" || fail "writing to $1"
}
# expect EXPORT "OFF:LEN:BYTE ..." [what]: each range reads as BYTE
expect () {
    SPEC=$2 nbdsh -u "$(uri "$1")" -c "
import os
bad = []
for spec in os.environ['SPEC'].split():
    off, n, b = spec.split(':')
    got = h.pread(int(n), int(off))
    if got != bytes([int(b, 0)]) * int(n):
        bad.append('%s+%s reads %s, expected 0x%02x' % (off, n, sorted(set(got))[:4], int(b, 0)))
if bad:
    raise SystemExit('; '.join(bad))
" || soft_fail "${3:-$1 reads wrong data}"
}

# ------------------------------------------------------------ clones
echo "== clone reads its snapshot"
ctl volume create src --size 64M >/dev/null
put src "0:$M:0xa1 $((5 * M + 100)):5000:0xa2 $((63 * M)):$M:0xa3"
ctl snapshot create src s1 >/dev/null
put src "0:4096:0xb1 $((20 * M)):$M:0xb2"
ctl volume create c1 --from-snapshot src@s1 >"$T/c1.txt" || fail "clone from src@s1"
grep -q '^source_snapshot: src@s1$' "$T/c1.txt" || soft_fail "clone shows: $(cat "$T/c1.txt")"
[ "$(vol_field c1 source_snapshot)" = src@s1 ] || soft_fail "c1 source_snapshot is $(vol_field c1 source_snapshot)"
[ "$(vol_field c1 size)" = $((64 * M)) ] || soft_fail "c1 size $(vol_field c1 size)"
[ "$(vol_field c1 allocated)" = 0 ] || soft_fail "a fresh clone has allocated $(vol_field c1 allocated), expected 0"
A="0:$M:0xa1 $((5 * M + 100)):5000:0xa2 $((63 * M)):$M:0xa3 $((20 * M)):$M:0 $((5 * M)):100:0"
expect c1 "$A" "clone c1 does not read src@s1's data"

echo "== clone writes are its own"
put c1 "0:8192:0xc1 $((5 * M + 50)):100:0xc2 $((30 * M)):$M:0xc3 $((63 * M + 4096)):1:0xc4"
expect c1 "0:8192:0xc1 8192:$((M - 8192)):0xa1 $((5 * M + 50)):100:0xc2 $((5 * M + 150)):4950:0xa2 $((30 * M)):$M:0xc3 $((63 * M)):4096:0xa3 $((63 * M + 4096)):1:0xc4 $((63 * M + 4097)):1:0xa3" \
    "clone c1 does not read its own writes over the snapshot's data"
expect src@s1 "$A" "writes to clone c1 changed snapshot src@s1"
expect src "0:4096:0xb1 4096:$((M - 4096)):0xa1 $((20 * M)):$M:0xb2 $((30 * M)):$M:0 $((5 * M + 100)):5000:0xa2" \
    "writes to clone c1 changed the source volume src"
[ "$(vol_field c1 allocated)" = $((4 * M)) ] || soft_fail "c1 allocated $(vol_field c1 allocated) after writing to 4 chunks"
# and writes to the source do not reach the clone
put src "$((63 * M)):4096:0xb3"
expect c1 "$((63 * M)):4096:0xa3" "a write to src reached clone c1"
no_leak "after clone writes"

echo "== clone sizes"
ctl volume create c1big --from-snapshot src@s1 --size 128M >/dev/null || soft_fail "clone with a larger size"
expect c1big "0:4096:0xa1 $((64 * M)):$M:0 $((127 * M)):$M:0" "larger clone c1big reads wrong"
put c1big "$((100 * M)):4096:0xd1"
expect c1big "$((100 * M)):4096:0xd1"
rc=0; ctl volume create c1small --from-snapshot src@s1 --size 32M >/dev/null 2>&1 || rc=$?
[ $rc -eq 1 ] || soft_fail "clone smaller than its snapshot: exit $rc, expected 1 (400)"
rc=0; ctl volume create cx --from-snapshot src@nope >/dev/null 2>&1 || rc=$?
[ $rc -eq 1 ] || soft_fail "clone of a missing snapshot: exit $rc, expected 1 (404)"
code=$(curl -s -o "$T/r.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
       -d '{"name": "c1", "from_snapshot": "src@s1"}' "$BLOCKD_API/v1/volumes")
[ "$code" = 409 ] || soft_fail "clone onto an existing name: HTTP $code, expected 409"

echo "== clone of a clone"
ctl snapshot create c1 t1 >/dev/null
put c1 "$((40 * M)):4096:0xc5 0:4096:0xc6"
ctl volume create c2 --from-snapshot c1@t1 >/dev/null || fail "clone of a clone"
[ "$(vol_field c2 source_snapshot)" = c1@t1 ] || soft_fail "c2 source_snapshot $(vol_field c2 source_snapshot)"
C1T1="0:8192:0xc1 8192:4096:0xa1 $((5 * M + 150)):4950:0xa2 $((30 * M)):$M:0xc3 $((40 * M)):4096:0 $((63 * M)):4096:0xa3 $((63 * M + 4096)):1:0xc4"
expect c2 "$C1T1" "clone of a clone c2 does not read c1@t1"
put c2 "8192:4096:0xe1 $((30 * M)):4096:0xe2 $((50 * M)):4096:0xe3"
expect c2 "8192:4096:0xe1 $((30 * M)):4096:0xe2 $((30 * M + 4096)):4096:0xc3 $((50 * M)):4096:0xe3 0:8192:0xc1" "c2 reads wrong after its writes"
expect c1@t1 "$C1T1" "writes to c2 changed c1@t1"
expect c1 "0:4096:0xc6 4096:4096:0xc1 8192:4096:0xa1 $((30 * M)):$M:0xc3 $((40 * M)):4096:0xc5 $((50 * M)):4096:0" "writes to c2 changed c1"
expect src@s1 "$A" "writes to c2 changed src@s1"
# diff works along the clone's history
ctl --json snapshot diff c1@t1 c2 >"$T/d.json" || soft_fail "diff c1@t1 -> c2"
$PY -c '
import json, sys
d = json.load(open(sys.argv[1]))
chunks = set()
for r in d["ranges"]:
    chunks |= set(range(r["offset"] >> 20, (r["offset"] + r["length"]) >> 20))
assert chunks == {0, 30, 50}, "diff c1@t1 -> c2: chunks %s, expected [0, 30, 50]" % sorted(chunks)
' "$T/d.json" || soft_fail "diff along a clone"
no_leak "after a clone of a clone"

echo "== clones outlive their sources"
ctl snapshot delete src@s1 >/dev/null || fail "delete src@s1 while cloned"
no_leak "after deleting a cloned snapshot"
expect c1 "8192:4096:0xa1 $((5 * M + 150)):4950:0xa2 $((63 * M)):4096:0xa3" "c1 lost data when src@s1 was deleted"
expect c1big "0:4096:0xa1 $((100 * M)):4096:0xd1" "c1big lost data when src@s1 was deleted"
[ "$(vol_field c1 source_snapshot)" = src@s1 ] || echo "  note: c1 source_snapshot after its deletion: $(vol_field c1 source_snapshot)"
ctl volume delete src >/dev/null || fail "delete src"
no_leak "after deleting the source volume"
expect c1 "8192:4096:0xa1 $((5 * M + 150)):4950:0xa2 $((63 * M)):4096:0xa3 $((30 * M)):$M:0xc3" "c1 lost data when src was deleted"
ctl snapshot delete c1@t1 >/dev/null
ctl volume delete c1 >/dev/null
no_leak "after deleting c1 and c1@t1"
expect c2 "0:8192:0xc1 8192:4096:0xe1 12288:4096:0xa1 $((5 * M + 150)):4950:0xa2 $((30 * M + 4096)):4096:0xc3 $((63 * M)):4096:0xa3 $((63 * M + 4096)):1:0xc4" \
    "c2 lost data when c1 and its snapshot were deleted"
# every ancestor is gone: overwriting data c2 still inherits must free the old chunk
put c2 "$((5 * M)):4096:0xe4 $((63 * M)):4096:0xe5"
expect c2 "$((5 * M)):4096:0xe4 $((5 * M + 4096)):1000:0xa2 $((63 * M)):4096:0xe5 $((63 * M + 4096)):1:0xc4"
no_leak "after c2 overwrote chunks inherited from deleted ancestors (they are seen by nobody now)"
c2alloc=$(vol_field c2 allocated)
ctl volume delete c1big >/dev/null
ctl volume delete c2 >/dev/null
alloc=$(pool_field allocated)
[ "$alloc" = 0 ] || soft_fail "pool allocated $alloc after deleting every clone and snapshot"

# ------------------------------------------------------------ rollback
echo "== rollback"
ctl volume create rb --size 32M >/dev/null
put rb "0:$M:0x0a $((4 * M + 10)):10:0x0a"
ctl snapshot create rb s1 >/dev/null
put rb "0:4096:0x0b $((8 * M)):$M:0x0b"
ctl snapshot create rb s2 >/dev/null
put rb "0:4096:0x0c $((12 * M)):4096:0x0c $((4 * M + 10)):10:0x0c"
RA="0:$M:0x0a $((4 * M + 10)):10:0x0a $((8 * M)):$M:0 $((12 * M)):4096:0"
RB="0:4096:0x0b 4096:4096:0x0a $((4 * M + 10)):10:0x0a $((8 * M)):$M:0x0b $((12 * M)):4096:0"
RC="0:4096:0x0c 4096:4096:0x0a $((4 * M + 10)):10:0x0c $((8 * M)):$M:0x0b $((12 * M)):4096:0x0c"
expect rb "$RC"
ctl volume rollback rb --to s1 >/dev/null || fail "rollback rb to s1"
expect rb "$RA" "rb does not read s1's data after rollback to s1"
expect rb@s2 "$RB" "rb@s2 changed by the rollback to s1"
expect rb@s1 "$RA" "rb@s1 changed by the rollback"
[ "$(vol_field rb snapshots)" = 2 ] || soft_fail "rb has $(vol_field rb snapshots) snapshots after rollback, expected 2"
no_leak "after rollback"

echo "== rollback refused while a client is connected"
nbdsh -u "$(uri rb)" -c 'import time; time.sleep(4)' &
holder=$!
n=0
until [ "$(vol_field rb connections)" -ge 1 ]; do
    n=$((n + 1)); [ $n -lt 100 ] || fail "the nbdsh client never showed as connected"; sleep 0.05
done
rc=0; ctl volume rollback rb --to s2 >"$T/rb.out" 2>&1 || rc=$?
[ $rc -eq 1 ] || soft_fail "rollback with a client connected: exit $rc, expected 1"
grep -qi 'connect' "$T/rb.out" || soft_fail "rollback refusal does not say why: $(cat "$T/rb.out")"
echo "  blockctl: $(cat "$T/rb.out")"
code=$(curl -s -o "$T/r.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
       -d '{"snapshot": "s2"}' "$BLOCKD_API/v1/volumes/rb/rollback")
[ "$code" = 409 ] || soft_fail "rollback with a client connected: HTTP $code, expected 409"
grep -q '"conflict"' "$T/r.json" || soft_fail "rollback refusal body: $(cat "$T/r.json")"
expect rb "$RA" "a refused rollback changed the volume"
wait $holder || fail "the holding nbdsh client failed"
n=0
until [ "$(vol_field rb connections)" = 0 ]; do
    n=$((n + 1)); [ $n -lt 100 ] || fail "the connection count did not drop to 0"; sleep 0.05
done

echo "== rollback again, write, snapshot"
ctl volume rollback rb --to rb@s2 >/dev/null || fail "rollback rb to rb@s2 after the client left"
expect rb "$RB" "rb does not read s2's data after rollback to rb@s2"
put rb "$((16 * M)):4096:0x0d 0:512:0x0d"
ctl snapshot create rb s3 >/dev/null || fail "snapshot after rollback"
RD="0:512:0x0d 512:3584:0x0b 4096:4096:0x0a $((8 * M)):$M:0x0b $((16 * M)):4096:0x0d"
expect rb@s3 "$RD" "snapshot taken after a rollback"
put rb "0:4096:0x0e"
expect rb@s3 "$RD" "rb@s3 changed by a write"
ctl volume rollback rb --to s1 >/dev/null || fail "second rollback to s1"
expect rb "$RA" "rb after the second rollback to s1"
expect rb@s3 "$RD" "rb@s3 after the second rollback"
expect rb@s2 "$RB" "rb@s2 after the second rollback"
rc=0; ctl volume rollback rb --to nope >/dev/null 2>&1 || rc=$?
[ $rc -eq 1 ] || soft_fail "rollback to a missing snapshot: exit $rc, expected 1"
# rolling back to a snapshot of another volume is not a rollback
ctl volume create other --size 32M >/dev/null
put other "0:4096:0x77"
ctl snapshot create other o1 >/dev/null
rc=0; ctl volume rollback rb --to other@o1 >/dev/null 2>&1 || rc=$?
[ $rc -ne 0 ] || soft_fail "rollback of rb to other@o1 (another volume's snapshot) succeeded"
expect rb "$RA" "rb after a refused rollback to another volume's snapshot"
# a rolled-back volume can be cloned from, and its snapshots deleted
ctl volume create rbc --from-snapshot rb@s3 >/dev/null || soft_fail "clone of a snapshot taken after a rollback"
expect rbc "$RD"
ctl snapshot delete rb@s1 >/dev/null
ctl snapshot delete rb@s2 >/dev/null
expect rb "$RA" "rb after deleting the snapshot it was rolled back to"
expect rbc "$RD" "rbc after deleting rb's snapshots"
put rb "0:4096:0x0f $((4 * M)):4096:0x0f"
no_leak "after writing over chunks of a deleted snapshot a volume was rolled back to"
no_leak "at the end"
echo "  pool: $(curl -sf "$BLOCKD_API/v1/pool" | tr -d ' \n')"
stop_blockd
check_store
cat "$T/check.out"
[ -z "$failures" ] || fail "$nfail check(s) failed:$failures"
echo "PASS test-clones"
