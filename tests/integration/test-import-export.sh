#!/bin/sh
# tests/integration/test-import-export.sh — "blockctl volume import" and
# "volume export": a raw image with holes and zero blocks goes in sparsely
# (the volume's "allocated" stays small) and comes back out bit-exact and
# sparse; a qcow2 image (qemu-img convert) goes in through qemu-nbd and
# out as raw and as qcow2 (qemu-img compare); a size that is not a multiple
# of 512; --size; a snapshot's export; --json, the summary line and the
# progress display on a terminal.  Failures: a missing file, garbage forced
# as qcow2, an existing volume (409, and the volume is untouched), an
# existing output file, an unknown volume, a pool too small (the import
# fails in one line and the volume is rolled back), disk errors (EIO by
# fault injection: the volume is rolled back, the partial file removed),
# blockd's API or NBD server unreachable.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-nbd qemu-io nbdsh

M=1048576
# vol_field NAME KEY: a field of the volume's JSON
vol_field () {
    ctl --json volume show "$1" | $PY -c "import json, sys; print(json.load(sys.stdin)['$2'])"
}
no_volume () {
    run ctl volume show "$1"
    [ "$rc" -eq 1 ] && grep -q 'not found' "$T/err" || fail "volume $1 exists: $(cat "$T/out" "$T/err")"
}
kib () { du -k "$1" | cut -f1; }

echo "images: raw with holes, zero blocks and data; qcow2 of it; odd-sized"
$PY - "$T" <<'EOF'
import os, sys
M = 1 << 20
t = sys.argv[1]
with open(t + "/disk.raw", "wb") as f:
    f.truncate(64 * M)                       # 64 MiB, mostly holes
    f.seek(1 * M); f.write(os.urandom(3 * M))
    f.seek(16 * M); f.write(bytes(8 * M))    # allocated in the file, but zeros
    f.seek(30 * M + 7); f.write(os.urandom(1000))
    f.seek(40 * M); f.write(b"\0" * 4096 + os.urandom(4096) + b"\0" * 8192)
    f.seek(64 * M - 100); f.write(b"\xee" * 100)
with open(t + "/odd.raw", "wb") as f:     # 3 MiB + 1000 bytes: not a multiple of 512
    f.write(os.urandom(3 * M + 1000))
EOF
[ "$(kib "$T/disk.raw")" -ge 8192 ] || fail "the source should hold its 8 MiB zero block ($(kib "$T/disk.raw") KiB)"
qemu-img convert -f raw -O qcow2 "$T/disk.raw" "$T/disk.qcow2" || fail "qemu-img convert"

start_blockd --chunk-size 1M      # the "allocated" bounds below count 1 MiB chunks

echo "import raw: sparse (holes and zero blocks are not written)"
run ctl volume import r1 --from "$T/disk.raw"; ok "import raw"
grep -qx 'imported "r1" from .*/disk.raw (raw): 64 MiB, [0-9.]* MiB written, [0-9.]* MiB sparse, [0-9.]* s' "$T/out" \
    || fail "import summary: $(cat "$T/out")"
[ "$(vol_field r1 size)" -eq $((64 * M)) ] || fail "r1 size $(vol_field r1 size)"
alloc=$(vol_field r1 allocated)
echo "  r1: allocated $alloc of $((64 * M))"
# the data touches 3 + 1 + 1 + 1 + 1 chunks (1 MiB); the 8 MiB of zeros none
[ "$alloc" -gt 0 ] && [ "$alloc" -le $((8 * M)) ] || fail "r1 allocated $alloc: not sparse"

echo "export raw: bit-exact and sparse"
run ctl volume export r1 --to "$T/r1.raw"; ok "export raw"
grep -qx 'exported "r1" to .*/r1.raw (raw): 64 MiB, [0-9.]* MiB written, [0-9.]* MiB sparse, [0-9.]* s' "$T/out" \
    || fail "export summary: $(cat "$T/out")"
cmp "$T/disk.raw" "$T/r1.raw" || fail "r1 exported differs from disk.raw"
[ "$(kib "$T/r1.raw")" -lt 8192 ] || fail "r1.raw is not sparse: $(kib "$T/r1.raw") KiB"

echo "import qcow2 (detected by its magic), export raw and qcow2"
run ctl volume import q1 --from "$T/disk.qcow2"; ok "import qcow2"
grep -q '^imported "q1" from .*(qcow2): 64 MiB' "$T/out" || fail "qcow2 summary: $(cat "$T/out")"
alloc=$(vol_field q1 allocated)
[ "$alloc" -le $((8 * M)) ] || fail "q1 allocated $alloc: not sparse"
run ctl volume export q1 --to "$T/q1.raw"; ok "export q1 raw"
cmp "$T/disk.raw" "$T/q1.raw" || fail "q1 exported as raw differs from disk.raw"
run ctl volume export q1 --to "$T/q1.qcow2" --format qcow2; ok "export q1 qcow2"
qemu-img compare -q "$T/disk.qcow2" "$T/q1.qcow2" || fail "qemu-img compare: q1.qcow2 differs"
qemu-img compare -q -f raw -F qcow2 "$T/disk.raw" "$T/q1.qcow2" || fail "q1.qcow2 differs from disk.raw"
[ "$(qemu-img info --output=json "$T/q1.qcow2" | $PY -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = qcow2 ] \
    || fail "q1.qcow2 is not qcow2"
[ "$(kib "$T/q1.qcow2")" -lt 12288 ] || fail "q1.qcow2 is not sparse: $(kib "$T/q1.qcow2") KiB"
echo "  --format raw takes a qcow2 file byte for byte"
run ctl volume import qbytes --from "$T/disk.qcow2" --format raw; ok "import qcow2 as raw"
run ctl volume export qbytes --to "$T/qbytes.raw"; ok "export qbytes"
sz=$(stat -c %s "$T/disk.qcow2")
head -c "$sz" "$T/qbytes.raw" | cmp - "$T/disk.qcow2" || fail "qcow2 imported as raw: bytes differ"

echo "a size that is not a multiple of 512: rounded up, the tail reads as zeros"
run ctl volume import odd --from "$T/odd.raw"; ok "import odd"
[ "$(vol_field odd size)" -eq $((3 * M + 1024)) ] || fail "odd size $(vol_field odd size), want $((3 * M + 1024))"
run ctl volume export odd --to "$T/odd.out"; ok "export odd"
[ "$(stat -c %s "$T/odd.out")" -eq $((3 * M + 1024)) ] || fail "odd.out size $(stat -c %s "$T/odd.out")"
head -c $((3 * M + 1000)) "$T/odd.out" | cmp - "$T/odd.raw" || fail "odd: data differs"
[ "$(tail -c 24 "$T/odd.out" | od -An -tx1 | tr -d ' \n')" = "$(printf '%048d' 0)" ] || fail "odd: tail is not zeros"
qemu-img convert -f raw -O qcow2 "$T/odd.raw" "$T/odd.qcow2"
run ctl volume import oddq --from "$T/odd.qcow2"; ok "import odd qcow2"
run ctl volume export oddq --to "$T/oddq.out"; ok "export oddq"
cmp "$T/odd.out" "$T/oddq.out" || fail "odd via qcow2 differs"

echo "--size: larger is fine, smaller is refused"
run ctl volume import big --from "$T/odd.raw" --size 16M; ok "import --size 16M"
[ "$(vol_field big size)" -eq $((16 * M)) ] || fail "big size $(vol_field big size)"
grep -q '^imported "big" .*: 16 MiB, ' "$T/out" || fail "--size summary: $(cat "$T/out")"
run ctl volume import small --from "$T/odd.raw" --size 1M; err 2 "--size smaller than the image"
grep -q 'smaller than the image' "$T/err" || fail "--size message: $(cat "$T/err")"
no_volume small
run ctl volume import small --from "$T/odd.raw" --size 1000; err 2 "--size not a multiple of 512"

echo "--json: the volume"
run ctl --json volume import j1 --from "$T/disk.raw" --multi-attach; ok "import --json"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["name"] == "j1" and j["size"] == 64 << 20 and 0 < j["allocated"] <= 8 << 20 and j["multi_attach"], j' "$T/out" \
    || fail "import --json: $(cat "$T/out")"
run ctl volume export j1 --to "$T/j1.raw" --json; ok "export --json"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["exported"] == "j1" and j["format"] == "raw" and j["size"] == 64 << 20 and 0 < j["written"] < 8 << 20, j' "$T/out" \
    || fail "export --json: $(cat "$T/out")"

echo "export of a snapshot (read-only export VOL@SNAP), while the volume moves on"
ctl snapshot create r1 s1 >/dev/null || fail "snapshot create"
qemu-io -f raw -c 'write -P 0xcd 0 4M' "$(uri r1)" >/dev/null || fail "qemu-io write to r1"
run ctl volume export r1@s1 --to "$T/s1.raw"; ok "export r1@s1"
grep -q '^exported "r1@s1" to ' "$T/out" || fail "snapshot summary: $(cat "$T/out")"
cmp "$T/disk.raw" "$T/s1.raw" || fail "r1@s1 differs from the image it was taken of"
run ctl volume export r1@s1 --to "$T/s1.qcow2" --format qcow2; ok "export r1@s1 qcow2"
qemu-img compare -q -f raw -F qcow2 "$T/disk.raw" "$T/s1.qcow2" || fail "r1@s1 as qcow2 differs"
run ctl volume export r1 --to "$T/r1-now.raw"; ok "export r1 after the write"
head -c $((4 * M)) "$T/r1-now.raw" | tr -d '\315' | wc -c | grep -qx 0 || fail "r1 lost its new data"
cmp -i $((4 * M)) "$T/r1-now.raw" "$T/disk.raw" || fail "r1 beyond 4M differs"
run ctl volume export r1@nope --to "$T/nope.raw"; err 1 "export of a missing snapshot"
[ ! -e "$T/nope.raw" ] || fail "export of a missing snapshot left a file"

echo "errors before anything is created"
n_before=$(ctl --json volume list | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["volumes"]))')
run ctl volume import m1 --from "$T/missing.img"; err 2 "missing file"
grep -q 'cannot open .*missing.img.*No such file' "$T/err" || fail "missing file message: $(cat "$T/err")"
no_volume m1
head -c $((2 * M)) /dev/urandom >"$T/garbage"
run ctl volume import g1 --from "$T/garbage" --format qcow2; err 2 "garbage as qcow2"
grep -q 'qcow2' "$T/err" || fail "garbage message: $(cat "$T/err")"
no_volume g1
run ctl volume import g1 --from "$T/disk.raw" --format vmdk; err 2 "unknown --format"
run ctl volume import g1; err 2 "no --from"
run ctl volume import --from "$T/disk.raw"; err 2 "no NAME"
run ctl volume import bad/name --from "$T/disk.raw"; err 2 "bad name"
: >"$T/empty"
run ctl volume import e1 --from "$T/empty"; err 2 "empty file"
run ctl volume import e1 --from "$T"; err 2 "a directory"
no_volume e1
n_after=$(ctl --json volume list | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["volumes"]))')
[ "$n_before" = "$n_after" ] || fail "failed imports changed the volume count: $n_before -> $n_after"

echo "an existing volume: 409, and it is neither deleted nor written"
alloc=$(vol_field q1 allocated)
run ctl volume import q1 --from "$T/odd.raw"; err 1 "import over an existing volume"
grep -q 'exists' "$T/err" || fail "409 message: $(cat "$T/err")"
[ "$(vol_field q1 allocated)" = "$alloc" ] || fail "q1 allocated changed"
rm -f "$T/q1.raw"
run ctl volume export q1 --to "$T/q1.raw"; ok "export q1 again"
cmp "$T/disk.raw" "$T/q1.raw" || fail "q1 changed by the refused import"

echo "an existing output file: refused without --force, replaced with it"
echo "keep me" >"$T/exists.raw"
run ctl volume export odd --to "$T/exists.raw"; err 2 "existing output file"
grep -q 'exists.*--force' "$T/err" || fail "existing file message: $(cat "$T/err")"
[ "$(cat "$T/exists.raw")" = "keep me" ] || fail "the existing file was touched"
run ctl volume export odd --to "$T/exists.raw" --format qcow2; err 2 "existing output file (qcow2)"
[ "$(cat "$T/exists.raw")" = "keep me" ] || fail "the existing file was touched (qcow2)"
run ctl volume export odd --to "$T/exists.raw" --force; ok "export --force"
cmp "$T/odd.out" "$T/exists.raw" || fail "export --force: content"
run ctl volume export odd --to "$T" --force; err 2 "export onto a directory"
echo "  an export --force that fails before it starts leaves the file as it was"
echo "keep me" >"$T/kept.raw"
run ctl volume export nosuch --to "$T/kept.raw" --force; err 1 "export --force of a missing volume"
[ "$(cat "$T/kept.raw" 2>/dev/null)" = "keep me" ] || fail "export --force of a missing volume destroyed the file"
run ctl volume export nosuch@s1 --to "$T/kept.raw" --force --format qcow2; err 1 "export --force of a missing snapshot"
[ "$(cat "$T/kept.raw" 2>/dev/null)" = "keep me" ] || fail "export --force of a missing snapshot destroyed the file"
run "$BLOCKCTL" --api "http://127.0.0.1:$(free_port)" volume export odd --to "$T/kept.raw" --force; err 3 "export --force, API unreachable"
[ "$(cat "$T/kept.raw" 2>/dev/null)" = "keep me" ] || fail "export --force to an unreachable blockd destroyed the file"
run ctl volume export nosuch --to "$T/nosuch.raw"; err 1 "export of a missing volume"
[ ! -e "$T/nosuch.raw" ] || fail "export of a missing volume left a file"
run ctl volume export odd --to "$T/no/such/dir/x.raw"; err 2 "output in a missing directory"

echo "blockd unreachable"
DEAD_API=http://127.0.0.1:$(free_port)
run "$BLOCKCTL" --api "$DEAD_API" volume import u1 --from "$T/disk.raw"; err 3 "import, API unreachable"
run "$BLOCKCTL" --api "$DEAD_API" volume export r1 --to "$T/u1.raw"; err 3 "export, API unreachable"
[ ! -e "$T/u1.raw" ] || fail "export to an unreachable blockd left a file"

if command -v script >/dev/null 2>&1; then
    echo "progress on a terminal (script -qc)"
    head -c $((64 * M)) /dev/urandom >"$T/rnd.raw"
    script -qc "'$BLOCKCTL' volume import p1 --from '$T/rnd.raw'" /dev/null >"$T/tty.out" 2>&1 \
        || fail "import under script: $(cat "$T/tty.out")"
    grep -q "$(printf '\r')" "$T/tty.out" || fail "no progress line on a terminal: $(cat -A "$T/tty.out")"
    grep -q '%  .* / 64 MiB  [0-9]* MiB/s  .* zero' "$T/tty.out" || fail "progress line: $(cat -A "$T/tty.out")"
    grep -q 'imported "p1" .*64 MiB written' "$T/tty.out" || fail "summary under script: $(cat -A "$T/tty.out")"
fi

echo "daemon state"
stop_blockd
check_store

echo "a pool too small: the import fails in one line and is rolled back"
rm -rf "$T/data"
CAPACITY=8M start_blockd --chunk-size 1M --fault-injection 1
head -c $((32 * M)) /dev/urandom >"$T/rnd32.raw"
run ctl volume import full --from "$T/rnd32.raw"; err 1 "import into a full pool"
grep -q '^blockctl: import of "full" failed at offset [0-9]*: .*No space left on device' "$T/err" \
    || fail "pool full message: $(cat "$T/err")"
no_volume full
used=$(ctl --json pool show | $PY -c 'import json,sys; print(json.load(sys.stdin)["allocated"])')
[ "$used" -eq 0 ] || fail "the rolled-back import left $used bytes allocated"
echo "  and a fitting one still goes in"
run ctl volume import fits --from "$T/odd.raw"; ok "import into the small pool"

echo "disk errors: EIO on a write rolls the import back, on a read removes the export"
fault () {
    curl -sf -X POST -d "{\"volume\": \"$1\", \"op\": \"$2\", \"error\": \"$3\", \"count\": $4}" \
        "$BLOCKD_API/v1/debug/faults" >/dev/null || fail "cannot set a fault"
}
fault eio write EIO 1
run ctl volume import eio --from "$T/odd.raw"; err 1 "import with a write error"
grep -q '^blockctl: import of "eio" failed at offset [0-9]*: writing to nbd://.*: Input/output error$' "$T/err" \
    || fail "write EIO message: $(cat "$T/err")"
no_volume eio
fault fits read EIO 1
run ctl volume export fits --to "$T/fits.raw"; err 1 "export with a read error"
grep -q '^blockctl: export of "fits" failed at offset [0-9]*: reading nbd://.*: Input/output error$' "$T/err" \
    || fail "read EIO message: $(cat "$T/err")"
[ ! -e "$T/fits.raw" ] || fail "the failed export left its file"
fault fits read EIO 1
run ctl volume export fits --to "$T/fits.qcow2" --format qcow2; err 1 "qcow2 export with a read error"
[ ! -e "$T/fits.qcow2" ] || fail "the failed qcow2 export left its file"
run ctl volume export fits --to "$T/fits.raw"; ok "export once the fault is gone"
cmp "$T/odd.out" "$T/fits.raw" || fail "fits: content"
stop_blockd
check_store

echo "NBD over a unix socket (nbd+unix:// URIs)"
rm -rf "$T/data"
start_blockd --nbd "" --nbd-unix "$T/nbd.sock"
run ctl volume import ux --from "$T/disk.qcow2"; ok "import over a unix socket"
vol_field ux nbd_uri | grep -q '^nbd+unix:///ux?socket=' || fail "ux is not served over a unix socket: $(vol_field ux nbd_uri)"
run ctl volume export ux --to "$T/ux.raw"; ok "export over a unix socket"
cmp "$T/disk.raw" "$T/ux.raw" || fail "ux: content"
stop_blockd

# blockd's NBD server unreachable while its API answers: the fake API
# hands out nbd://127.0.0.1:10809/...; only when nothing listens there.
if ! $PY -c 'import socket; socket.create_connection(("127.0.0.1", 10809), 1)' 2>/dev/null; then
    echo "NBD unreachable (fake API): exit 3, and the volume is rolled back"
    PORT=$(free_port)
    "$PY" tests/integration/fake-api.py "$PORT" "$T/fake.log" >"$T/fake.out" 2>&1 &
    FAKE=$!
    until curl -sf "http://127.0.0.1:$PORT/v1/health" >/dev/null 2>&1; do sleep 0.05; done
    run "$BLOCKCTL" --api "http://127.0.0.1:$PORT" volume import n1 --from "$T/disk.raw"
    kill "$FAKE"
    [ "$rc" -eq 3 ] || fail "NBD unreachable: exit $rc, want 3: $(cat "$T/err")"
    grep -q '^blockctl: import of "n1" failed: cannot connect to nbd://' "$T/err" || fail "NBD unreachable: $(cat "$T/err")"
    grep -q '^DELETE /v1/volumes/n1?force=true' "$T/fake.log" || fail "no rollback DELETE: $(cat "$T/fake.log")"
fi
echo "PASS test-import-export"
