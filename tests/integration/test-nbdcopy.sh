#!/bin/sh
# tests/integration/test-nbdcopy.sh — nbdcopy (libnbd) in and out of blockd
# volumes: a random file round-trips bit-exact with the default settings,
# with 4 connections x 64 requests, with one synchronous connection, and
# volume to volume; copying a mostly-empty volume out yields the right zeros.
. "$(dirname "$0")/lib.sh"
need nbdcopy nbdsh

start_blockd
M=1048576
ctl volume create in --size 48M >/dev/null
ctl volume create multi --size 48M >/dev/null
ctl volume create copy --size 48M >/dev/null
ctl volume create sparse --size 256M >/dev/null

echo "random 48 MiB file with zero runs"
head -c $((48 * M)) /dev/urandom >"$T/src"
$PY - "$T/src" <<'EOF'
import sys
f = open(sys.argv[1], "r+b")
for off, n in ((3 << 20, 2 << 20), (10 << 20, 12345), ((20 << 20) + 511, 1 << 20), ((48 << 20) - 4096, 4096)):
    f.seek(off)
    f.write(bytes(n))
EOF
SUM=$(md5sum <"$T/src")

# roundtrip VOLUME FLAGS...: file -> volume -> file, equal
roundtrip () {
    vol=$1
    shift
    echo "nbdcopy $* : file -> $vol -> file"
    nbdcopy "$@" "$T/src" "$(uri "$vol")" || fail "nbdcopy $* into $vol"
    rm -f "$T/dst"
    nbdcopy "$@" "$(uri "$vol")" "$T/dst" || fail "nbdcopy $* out of $vol"
    [ "$(md5sum <"$T/dst")" = "$SUM" ] || fail "nbdcopy $*: $vol read back differs from the source"
}
roundtrip in
roundtrip multi --connections=4 --requests=64
roundtrip copy --connections=1 --synchronous --request-size=65536

echo "nbdcopy volume -> volume (over an old copy), then out"
nbdcopy --flush "$(uri in)" "$(uri copy)" || fail "nbdcopy in -> copy"
rm -f "$T/dst"
nbdcopy "$(uri copy)" "$T/dst" || fail "nbdcopy copy -> file"
[ "$(md5sum <"$T/dst")" = "$SUM" ] || fail "volume-to-volume copy differs"

echo "a mostly-empty volume copies out as the right zeros"
nbdsh -u "$(uri sparse)" -c '
h.pwrite(b"\x01" * 4096, 0)
h.pwrite(b"\x02" * 100, 100 * 1048576 + 7)
h.pwrite(b"\x03", 256 * 1048576 - 1)
h.flush()
' || fail "nbdsh writes into sparse"
rm -f "$T/sparse.out"
nbdcopy "$(uri sparse)" "$T/sparse.out" || fail "nbdcopy sparse out"
$PY - "$T/sparse.out" <<'EOF' || fail "sparse copy content"
import sys
want = bytearray(256 << 20)
want[0:4096] = b"\x01" * 4096
want[(100 << 20) + 7:(100 << 20) + 107] = b"\x02" * 100
want[-1] = 3
got = open(sys.argv[1], "rb").read()
assert len(got) == len(want), len(got)
assert got == want, "first difference at %d" % next(i for i in range(len(want)) if got[i] != want[i])
EOF
echo "  (output file: $(du -k "$T/sparse.out" | cut -f1) KiB allocated of 262144)"
echo "sparse volume -> a dirty volume of the same size: the zeros overwrite the old data"
ctl volume create dirty --size 256M >/dev/null
nbdsh -u "$(uri dirty)" -c 'h.pwrite(b"\xff" * (4 << 20), 50 << 20); h.pwrite(b"\xff" * 4096, 100 << 20)' \
    || fail "nbdsh writes into dirty"
nbdcopy "$(uri sparse)" "$(uri dirty)" || fail "nbdcopy sparse -> dirty"
rm -f "$T/dirty.out"
nbdcopy "$(uri dirty)" "$T/dirty.out" || fail "nbdcopy dirty out"
cmp "$T/sparse.out" "$T/dirty.out" || fail "sparse copied over dirty data: not equal"

echo "daemon state"
ctl volume list --json >"$T/list.json" || fail "volume list"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert len(j["volumes"]) == 5, j' "$T/list.json" \
    || fail "volume list: $(cat "$T/list.json")"
stop_blockd
check_store
echo "PASS test-nbdcopy"
