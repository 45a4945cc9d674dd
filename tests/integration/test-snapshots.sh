#!/bin/sh
# Snapshots: a snapshot reads exactly what its volume held when it was taken,
# whatever is written, trimmed or zeroed afterwards; its export is read-only
# (EPERM); it can be taken under fio load; block status and copies of it are
# sparse; a chain of 256 snapshots works; diff lists the chunks written
# between two points; pool space accounting is exact (checked against a
# chunk-level model); creating a snapshot does not depend on the data held.
. "$(dirname "$0")/lib.sh"
need nbdsh nbdinfo nbdcopy qemu-io qemu-img
MODEL=tests/integration/snap-model.py
CAPACITY=8G start_blockd --chunk-size 1M
M=1048576
SEED=${SEED:-$(date +%s)}
echo "seed $SEED"
failures= nfail=0
# soft_fail MSG: record a failure, go on with the other checks
soft_fail () { echo "FAIL: $*"; nfail=$((nfail + 1)); failures="$failures
  $*"; }

# --- space accounting against a chunk model (first: it needs an empty pool)
echo "== accounting"
$PY $MODEL accounting "nbd://127.0.0.1:$NBD_PORT" "$SEED" 160 || soft_fail "space accounting (seed $SEED)"

# --- qemu-io patterns before and after a snapshot
echo "== qemu-io patterns"
ctl volume create pat --size 64M >/dev/null
qio () {   # qio URI-EXPORT [-r] CMDS...: qemu-io, failing on any error or pattern mismatch
    _u=$(uri "$1"); shift
    _ro=; [ "$1" = -r ] && { _ro=-r; shift; }
    _args=; for _c in "$@"; do _args="$_args -c '$_c'"; done
    eval qemu-io $_ro -f raw $_args "'$_u'" >"$T/qio.out" 2>&1 || { cat "$T/qio.out"; return 1; }
    ! grep -qi -e 'fail' -e 'error' "$T/qio.out" || { cat "$T/qio.out"; return 1; }
}
qio pat 'write -P 0xa1 0 1M' 'write -P 0xa2 5M 64k' 'write -P 0xa3 9437000 3000' 'flush' \
    || fail "qemu-io writes to pat"
ctl snapshot create pat s1 >/dev/null
qio pat 'write -P 0xb1 0 64k' 'write -P 0xb2 5M 4k' 'write -P 0xb3 20M 1M' 'write -P 0xb4 9437100 100' \
    || fail "qemu-io writes after the snapshot"
qio pat@s1 -r 'read -P 0xa1 0 1M' 'read -P 0xa2 5M 64k' 'read -P 0xa3 9437000 3000' \
    'read -P 0 20M 1M' 'read -P 0 9436999 1' 'read -P 0 1M 4M' \
    || soft_fail "snapshot pat@s1 does not read the patterns written before it"
qio pat -r 'read -P 0xb1 0 64k' 'read -P 0xa1 64k 960k' 'read -P 0xb2 5M 4k' 'read -P 0xa2 5246976 61440' \
    'read -P 0xb3 20M 1M' 'read -P 0xa3 9437000 100' 'read -P 0xb4 9437100 100' 'read -P 0xa3 9437200 2800' \
    || soft_fail "live volume pat does not read its patterns"
# qemu-io writing to the snapshot is refused
if qemu-io -f raw -c 'write -P 0xee 0 4k' "$(uri pat@s1)" >"$T/qio.out" 2>&1 && ! grep -qi -e 'fail' -e 'error' -e 'denied' -e 'read-only' "$T/qio.out"; then
    soft_fail "qemu-io write to snapshot pat@s1 succeeded"
fi
qio pat@s1 -r 'read -P 0xa1 0 1M' || soft_fail "snapshot changed by a refused write"

# --- byte model: writes, trims, zeroes after snapshots never change them
echo "== byte model"
$PY $MODEL bytes "nbd://127.0.0.1:$NBD_PORT" "$SEED" || soft_fail "byte model (seed $SEED)"

# --- the snapshot export is read-only
echo "== read-only export"
nbdinfo --json "$(uri pat@s1)" >"$T/info.json" || fail "nbdinfo on a snapshot"
$PY -c '
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert e["is_read_only"] is True, "is_read_only is %r" % e["is_read_only"]
assert e["export-size"] == 64 << 20, e["export-size"]
' "$T/info.json" || soft_fail "nbdinfo: snapshot export not read-only"
nbdsh -u "$(uri pat@s1)" -c '
import errno
assert h.is_read_only()
# libnbd refuses on its own (the export says read-only) ...
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("libnbd sent a write to a read-only export")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
# ... and the server refuses too when the request is sent anyway
h.set_strict_mode(0)
bad = []
for name, f in [("write", lambda: h.pwrite(b"x" * 4096, 0)),
                ("unaligned write", lambda: h.pwrite(b"x" * 100, 4097)),
                ("trim", lambda: h.trim(1 << 20, 0)),
                ("write-zeroes", lambda: h.zero(4096, 0)),
                ("write-zeroes NO_HOLE", lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE))]:
    try:
        f()
        bad.append("%s succeeded" % name)
    except nbd.Error as e:
        if e.errnum != errno.EPERM:
            bad.append("%s failed with %s, not EPERM" % (name, errno.errorcode.get(e.errnum, e.errnum)))
assert h.pread(4096, 0) == b"\xa1" * 4096, "snapshot changed"
h.flush()   # a flush is harmless
if bad:
    raise SystemExit("snapshot export: " + "; ".join(bad))
' || soft_fail "writes, trims and zeroes to a snapshot export must fail with EPERM (docs/API.md, NBD spec)"

# --- a snapshot taken under fio load does not change afterwards
echo "== snapshot under fio"
if fio --enghelp 2>/dev/null | grep -qw nbd; then
    ctl volume create busy --size 256M >/dev/null
    nbdsh -u "$(uri busy)" -c 'h.pwrite(b"\x77" * (8 << 20), 0)'
    cat >"$T/busy.fio" <<EOF
[busy]
ioengine=nbd
uri=$(uri busy)
rw=randwrite
bs=4k
iodepth=16
size=256M
time_based=1
runtime=8
verify=0
randrepeat=0
EOF
    fio --output="$T/busy.out" "$T/busy.fio" >/dev/null 2>&1 &
    fiopid=$!
    sleep 3
    kill -0 $fiopid 2>/dev/null || { cat "$T/busy.out"; fail "fio ended early"; }
    ctl snapshot create busy mid >/dev/null || fail "snapshot under load"
    nbdcopy "$(uri busy@mid)" "$T/mid.img" || fail "nbdcopy of the snapshot under load"
    kill -0 $fiopid 2>/dev/null || echo "note: fio had ended before the copy was done"
    rc=0; wait $fiopid || rc=$?
    [ $rc -eq 0 ] || { cat "$T/busy.out"; fail "fio exited $rc"; }
    grep -E 'write: IOPS' "$T/busy.out" | sed 's/^ */  fio: /'
    qemu-img compare -f raw -F raw "$(uri busy@mid)" "$T/mid.img" >"$T/cmp.out" 2>&1 \
        || { cat "$T/cmp.out"; soft_fail "snapshot busy@mid changed while its volume was written"; }
    # the volume did change after the snapshot
    if qemu-img compare -q -f raw -F raw "$(uri busy)" "$T/mid.img" 2>/dev/null; then
        soft_fail "live volume busy is identical to its snapshot after 5 s of fio writes"
    fi
    rm -f "$T/mid.img"
    ctl volume delete busy >/dev/null
    ctl snapshot delete busy@mid >/dev/null
else
    echo "skipped: this fio has no nbd ioengine"
fi

# --- block status and sparse copies of a snapshot
echo "== block status and sparse copies"
ctl volume create sp --size 256M >/dev/null
nbdsh -u "$(uri sp)" -c '
M = 1 << 20
h.pwrite(b"\x31" * M, 0)               # chunk 0 whole
h.pwrite(b"\x32" * 4096, 10 * M + 8192) # 4k in chunk 10
h.pwrite(b"\x33" * (3 * M), 100 * M)    # chunks 100..102
h.pwrite(b"\x34" * 512, 255 * M - 512)  # the last 512 bytes of chunk 254
'
ctl snapshot create sp s >/dev/null
# afterwards: new data, trims and zeroes on the live volume only
nbdsh -u "$(uri sp)" -c '
M = 1 << 20
h.pwrite(b"\x41" * M, 50 * M)
h.trim(M, 0)
h.zero(3 * M, 100 * M)
'
nbdinfo --map --json "$(uri sp@s)" >"$T/map.json" || fail "nbdinfo --map on a snapshot"
qemu-img map -f raw --output=json "$(uri sp@s)" >"$T/qmap.json" || fail "qemu-img map on a snapshot"
$PY - "$T/map.json" "$T/qmap.json" <<'EOF' || soft_fail "block status of a snapshot"
import json, sys
M = 1 << 20
want = [(0, M), (10 * M, M), (100 * M, 3 * M), (254 * M, M)]
ext = json.load(open(sys.argv[1]))
data = []
for e in ext:
    if not (e["type"] & 1):       # not a hole
        if data and data[-1][0] + data[-1][1] == e["offset"]:
            data[-1] = (data[-1][0], data[-1][1] + e["length"])
        else:
            data.append((e["offset"], e["length"]))
assert data == want, "nbdinfo --map: data at %s, expected %s" % (data, want)
assert sum(e["length"] for e in ext) == 256 * M
q = json.load(open(sys.argv[2]))
qdata = []
for e in q:
    if e["data"]:
        if qdata and qdata[-1][0] + qdata[-1][1] == e["start"]:
            qdata[-1] = (qdata[-1][0], qdata[-1][1] + e["length"])
        else:
            qdata.append((e["start"], e["length"]))
assert qdata == want, "qemu-img map: data at %s, expected %s" % (qdata, want)
print("  block status: data exactly at %s" % ", ".join("%dM+%dM" % (o >> 20, l >> 20) for o, l in want))
EOF
nbdcopy "$(uri sp@s)" "$T/sp.img" || fail "nbdcopy of a snapshot"
qemu-img convert -f raw -O raw "$(uri sp@s)" "$T/sp2.img" || fail "qemu-img convert of a snapshot"
for f in sp.img sp2.img; do
    qemu-img compare -f raw -F raw "$(uri sp@s)" "$T/$f" >/dev/null || soft_fail "copy $f differs from sp@s"
    kb=$(du -k "$T/$f" | cut -f1)
    echo "  $f: $(( $(stat -c %s "$T/$f") >> 20 )) MiB, $kb KiB allocated (data in the snapshot: 5 MiB in chunks, ~4.5 MiB non-zero)"
    # at least the non-zero data, at most the data chunks and some slack
    [ "$kb" -ge 4000 ] && [ "$kb" -le 6144 ] || soft_fail "copy $f of sp@s is not sparse: $kb KiB allocated"
done
rm -f "$T/sp.img" "$T/sp2.img"

# --- a chain of 256 snapshots
echo "== chain of 256 snapshots"
$PY $MODEL chain "nbd://127.0.0.1:$NBD_PORT" 256 || soft_fail "chain of 256 snapshots"
leaked=$(pool_field leaked)
[ "$leaked" = 0 ] || soft_fail "pool leaked $leaked after the chain"

# --- diff
echo "== diff"
ctl volume create dv --size 64M >/dev/null
nbdsh -u "$(uri dv)" -c '
M = 1 << 20
h.pwrite(b"a" * 4096, 0); h.pwrite(b"a" * 4096, M + 5); h.pwrite(b"a" * M, 5 * M)
'
ctl snapshot create dv a >/dev/null
nbdsh -u "$(uri dv)" -c '
M = 1 << 20
h.pwrite(b"b" * 8192, 3 * M - 4096)  # straddles chunks 2 and 3
h.pwrite(b"b" * 1, 10 * M + 77)      # one byte in chunk 10
h.pwrite(b"b" * 4096, 5 * M)         # chunk 5 again
'
ctl snapshot create dv b >/dev/null
nbdsh -u "$(uri dv)" -c '
M = 1 << 20
h.pwrite(b"c" * 4096, 20 * M)   # a new chunk
h.trim(M, 0)                    # a whole chunk trimmed
h.zero(M, 11 * M)               # zeroes over a hole: reads the same, may or may not count
'
ctl snapshot create dv c >/dev/null
# check_diff FROM TO CHUNKS [OPTIONAL-CHUNKS]: the ranges cover exactly CHUNKS
# (plus possibly OPTIONAL-CHUNKS), chunk aligned, sorted, changed_bytes = sum
check_diff () {
    ctl --json snapshot diff "$1" "$2" >"$T/diff.json" || { soft_fail "blockctl snapshot diff $1 $2"; return; }
    $PY - "$T/diff.json" "$3" "${4:-}" <<'EOF' || soft_fail "diff $1 -> $2"
import json, sys
M = 1 << 20
d = json.load(open(sys.argv[1]))
want = {int(x) for x in sys.argv[2].split(",") if x}
maybe = {int(x) for x in sys.argv[3].split(",") if x}
got, last = set(), -1
for r in d["ranges"]:
    o, l = r["offset"], r["length"]
    assert o % M == 0 and l % M == 0 and l > 0, "range %d+%d is not chunk aligned" % (o, l)
    assert o > last, "ranges not sorted or overlapping: %s" % d["ranges"]
    last = o + l - 1
    got |= set(range(o // M, (o + l) // M))
assert d["changed_bytes"] == len(got) * M, "changed_bytes %d for %d chunks" % (d["changed_bytes"], len(got))
assert want <= got <= want | maybe, "%s -> %s: chunks %s, expected %s (or also %s)" % (
    d["from"], d["to"], sorted(got), sorted(want), sorted(maybe))
print("  diff %s -> %s: chunks %s" % (d["from"], d["to"], sorted(got)))
EOF
}
check_diff dv@a dv@b 2,3,5,10
check_diff dv@b dv@c 0,20 11
check_diff dv@a dv@c 0,2,3,5,10,20 11
check_diff dv@a dv 0,2,3,5,10,20 11
check_diff dv@c dv ""
check_diff dv@a dv@a ""
ctl snapshot diff dv@a dv >"$T/diff.txt" || soft_fail "blockctl snapshot diff (text)"
tail -n 1 "$T/diff.txt" | grep -Eq '^[0-9]+ ranges?, [0-9]+ bytes changed$' || soft_fail "diff text output: $(tail -n 1 "$T/diff.txt")"
# unrelated volumes cannot be diffed
rc=0; ctl snapshot diff dv@a pat@s1 >/dev/null 2>&1 || rc=$?
[ $rc -eq 1 ] || soft_fail "diff between unrelated volumes: exit $rc, expected 1 (400)"
ctl volume delete dv >/dev/null
for s in a b c; do ctl snapshot delete dv@$s >/dev/null; done

# --- snapshot create time with 1 GiB vs 4 GiB written
echo "== snapshot create time vs data written"
for g in 1 4; do
    ctl volume create big$g --size ${g}G >/dev/null
    if fio --enghelp 2>/dev/null | grep -qw nbd; then
        fio --name=fill --ioengine=nbd --uri="$(uri big$g)" --rw=write --bs=1M --iodepth=16 \
            --size=${g}G --output="$T/fill.out" >/dev/null 2>&1 || fail "fio fill of big$g"
    else
        nbdcopy -- "[ nbdkit pattern size=${g}G ]" "$(uri big$g)" || fail "fill of big$g"
    fi
    secs=$(curl -s -o "$T/snap.json" -w '%{time_total}' -X POST -H 'Content-Type: application/json' \
           -d '{"name": "t"}' "$BLOCKD_API/v1/volumes/big$g/snapshots")
    grep -q '"referenced"' "$T/snap.json" || fail "snapshot of big$g: $(cat "$T/snap.json")"
    echo "  snapshot create with $g GiB written: ${secs} s"
    # the first write after it copies one chunk, not the volume
    nbdsh -u "$(uri big$g)" -c 'import time; t = time.monotonic(); h.pwrite(b"z" * 4096, 0); print("  first write after the snapshot: %.1f ms" % ((time.monotonic() - t) * 1000))'
    ctl snapshot delete big$g@t >/dev/null
    ctl volume delete big$g >/dev/null
done

# --- snapshot deletes (garbage collection) while another volume allocates
echo "== snapshot deletes while another volume first-writes chunks"
base=$(pool_field allocated)
ctl volume create fresh --size 2G >/dev/null
ctl volume create gcsrc --size 16M >/dev/null
nbdsh -u "$(uri gcsrc)" -c 'h.pwrite(b"o" * (4 << 20), 0)'
$PY -c '
import json, sys, urllib.request
api = sys.argv[1]
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method,
                                 data=json.dumps(body).encode() if body else None)
    if body:
        req.add_header("Content-Type", "application/json")
    urllib.request.urlopen(req).read()
for i in range(400):
    call("POST", "/v1/volumes/gcsrc/snapshots", {"name": "g%d" % i})
    call("DELETE", "/v1/snapshots/gcsrc@g%d" % i)
' "$BLOCKD_API" >"$T/gc.out" 2>&1 &
gcpid=$!
nbdsh -u "$(uri fresh)" -c '
M = 1 << 20
for c in range(2048):
    h.pwrite(bytes([c % 251 + 1]) * 4096, c * M)
h.flush()
bad = [c for c in range(2048) if h.pread(4096, c * M) != bytes([c % 251 + 1]) * 4096]
if bad:
    raise SystemExit("%d of 2048 chunks first written during snapshot deletes of another volume read back wrong (e.g. %s)" % (len(bad), bad[:6]))
' || soft_fail "writes that allocate chunks are lost when a snapshot delete runs at the same time"
wait $gcpid || { cat "$T/gc.out"; fail "snapshot create/delete loop failed"; }
curl -sf "$BLOCKD_API/v1/pool" >"$T/pool.json"
$PY -c '
import json, sys
p = json.load(open(sys.argv[1]))
got = p["allocated"] - int(sys.argv[2])
assert got == (2048 + 4) << 20, "pool allocated grew by %d MiB, expected 2052 MiB (2048 chunks of fresh + 4 of gcsrc)" % (got >> 20)
' "$T/pool.json" "$base" || soft_fail "chunks in use were freed by a snapshot delete"
ctl volume delete fresh >/dev/null
ctl volume delete gcsrc >/dev/null

# --- final accounting: leaked 0, allocated >= shared, delete everything -> 0
echo "== clean-up"
curl -sf "$BLOCKD_API/v1/pool" >"$T/pool.json"
$PY -c '
import json, sys
p = json.load(open(sys.argv[1]))
assert p["leaked"] == 0, p
assert p["allocated"] >= p["shared"], p
' "$T/pool.json" || soft_fail "pool accounting: $(cat "$T/pool.json")"
for s in $(curl -sf "$BLOCKD_API/v1/snapshots" | $PY -c 'import json,sys; [print(s["volume"] + "@" + s["name"]) for s in json.load(sys.stdin)["snapshots"]]'); do
    ctl snapshot delete "$s" >/dev/null || soft_fail "delete $s"
done
for v in $(curl -sf "$BLOCKD_API/v1/volumes" | $PY -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)["volumes"]]'); do
    ctl volume delete "$v" >/dev/null || soft_fail "delete $v"
done
alloc=$(pool_field allocated)
[ "$alloc" = 0 ] || soft_fail "pool allocated $alloc after deleting everything"
stop_blockd
check_store
[ -z "$failures" ] || fail "$nfail check(s) failed (seed $SEED):$failures"
echo "PASS test-snapshots"
