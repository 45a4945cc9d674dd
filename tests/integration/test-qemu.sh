#!/bin/sh
# tests/integration/test-qemu.sh — QEMU's NBD client (qemu-img, qemu-io)
# against blockd: convert an image in, compare, byte-exact writes at
# unaligned offsets, write-zeroes, discard, aio bursts, qemu-img map and info.
# Every qemu-io command is also applied to a local copy of the image, so the
# two must stay identical (qemu-img compare) at the end.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io

start_blockd
ctl volume create q --size 64M >/dev/null
U=$(uri q)
M=1048576

echo "random 64 MiB image with zero regions"
head -c $((64 * M)) /dev/urandom >"$T/img"
zero_img () {   # zero_img OFFSET LENGTH: zeros into the local image
    $PY -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); f.write(bytes(int(sys.argv[3])))' \
        "$T/img" "$1" "$2"
}
zero_img $((4 * M)) $((4 * M))              # chunks 4..7: whole chunks of zeros
zero_img $((20 * M + 512)) $((M + 1000))    # unaligned zero run
zero_img $((63 * M)) $M                     # the last chunk

echo "qemu-img convert -n into the volume, qemu-img compare"
qemu-img convert -n -f raw -O raw "$T/img" "$U" || fail "qemu-img convert into $U"
qemu-img compare -f raw -F raw "$T/img" "$U" || fail "qemu-img compare after convert"

echo "qemu-img info"
qemu-img info --output=json "$U" >"$T/info.json" || fail "qemu-img info"
$PY -c 'import json, sys; j = json.load(open(sys.argv[1])); assert j["virtual-size"] == 64 << 20, j' \
    "$T/info.json" || fail "qemu-img info: $(cat "$T/info.json")"
qemu-img info "$U" | grep -q 'virtual size: 64 MiB' || fail "qemu-img info (text): $(qemu-img info "$U")"

echo "qemu-io: writes at aligned and unaligned offsets, read back with -P"
set -- -c 'write -P 0x11 0 512' -c 'write -P 0x22 512 512' -c 'write -P 0x5a 1000 3000' \
       -c 'write -P 0x44 1048064 1024' -c 'write -P 0x33 1048575 2' -c 'write -P 0x66 4194303 3' \
       -c 'write -P 0x77 67108863 1' -c 'write -P 0x88 33554431 1048578'
qemu-io -f raw "$@" "$U" >"$T/qio.out" 2>&1 || { cat "$T/qio.out"; fail "qemu-io writes"; }
qemu-io -f raw "$@" "$T/img" >/dev/null 2>&1 || fail "qemu-io writes on the local image"
qemu-io -f raw -c 'read -P 0x11 0 512' -c 'read -P 0x22 512 488' -c 'read -P 0x5a 1000 3000' \
    -c 'read -P 0x44 1048064 511' -c 'read -P 0x33 1048575 2' -c 'read -P 0x44 1048577 511' \
    -c 'read -P 0x66 4194303 3' -c 'read -P 0 4194306 1000' -c 'read -P 0x77 67108863 1' \
    -c 'read -P 0x88 33554431 1048578' "$U" >"$T/qio.out" 2>&1 \
    || { cat "$T/qio.out"; fail "qemu-io read -P after writes"; }

echo "qemu-io: write -z (aligned, unaligned, whole chunks) then read -P 0"
set -- -c 'write -z 8388608 1048576' -c 'write -z 12345 54321' -c 'write -z 16777216 3145728' \
       -c 'write -z -u 40894464 2097152'
qemu-io -f raw "$@" "$U" >"$T/qio.out" 2>&1 || { cat "$T/qio.out"; fail "qemu-io write -z"; }
qemu-io -f raw "$@" "$T/img" >/dev/null 2>&1 || fail "qemu-io write -z on the local image"
qemu-io -f raw -c 'read -P 0 8388608 1048576' -c 'read -P 0 12345 54321' -c 'read -P 0 16777216 3145728' \
    -c 'read -P 0 40894464 2097152' "$U" >"$T/qio.out" 2>&1 \
    || { cat "$T/qio.out"; fail "qemu-io read -P 0 after write -z"; }

echo "qemu-io: discard then read -P 0"
qemu-io -f raw -c 'discard 27262976 2097152' -c 'read -P 0 27262976 2097152' "$U" >"$T/qio.out" 2>&1 \
    || { cat "$T/qio.out"; fail "qemu-io discard"; }
zero_img 27262976 2097152
qemu-io -f raw -c 'discard 30000000 12345' -c 'read -P 0 30000000 12345' "$U" >"$T/qio.out" 2>&1 \
    || { cat "$T/qio.out"; fail "qemu-io unaligned discard (blockd's trim reads back zeros)"; }
zero_img 30000000 12345

echo "qemu-io: aio_write bursts, aio_flush, read back"
set --
i=0
while [ $i -lt 64 ]; do
    set -- "$@" -c "aio_write -P $((i + 1)) $((48 * M + i * 65536 + i)) 65000"
    i=$((i + 1))
done
set -- "$@" -c 'aio_flush'
qemu-io -f raw "$@" "$U" >"$T/qio.out" 2>&1 || { cat "$T/qio.out"; fail "qemu-io aio_write burst"; }
qemu-io -f raw "$@" "$T/img" >/dev/null 2>&1 || fail "qemu-io aio_write burst on the local image"
set --
i=0
while [ $i -lt 64 ]; do
    set -- "$@" -c "read -P $((i + 1)) $((48 * M + i * 65536 + i)) 65000"
    i=$((i + 1))
done
qemu-io -f raw "$@" "$U" >"$T/qio.out" 2>&1 || { grep -i fail "$T/qio.out" | head; fail "read back aio_write burst"; }

echo "qemu-io: multiwrite-style concurrency with aio_write -z and aio_read"
set -- -c 'aio_write -z 50331648 1048576' -c 'aio_write -P 0x99 52428800 4096' -c 'aio_write -P 0x9a 52432896 4095' \
       -c 'aio_flush'
qemu-io -f raw "$@" "$U" >"$T/qio.out" 2>&1 || { cat "$T/qio.out"; fail "qemu-io aio_write -z"; }
qemu-io -f raw "$@" "$T/img" >/dev/null 2>&1 || fail "qemu-io aio_write -z on the local image"

echo "qemu-img compare: volume equals the local image after all of that"
qemu-img compare -f raw -F raw "$T/img" "$U" || fail "qemu-img compare at the end"

echo "qemu-img map: zero regions and data regions as written"
qemu-img map -f raw --output=json "$U" >"$T/map.json" || fail "qemu-img map"
$PY - "$T/map.json" "$T/img" <<'EOF' || fail "qemu-img map: $(cat "$T/map.json")"
import json, sys
m = json.load(open(sys.argv[1]))
img = open(sys.argv[2], "rb").read()
M = 1 << 20
assert m[0]["start"] == 0 and sum(e["length"] for e in m) == 64 * M, "map does not cover the volume"
def at(off):
    return next(e for e in m if e["start"] <= off < e["start"] + e["length"])
# every range the map calls zero really is zero
for e in m:
    if e["zero"]:
        s, n = e["start"], e["length"]
        assert img[s:s + n] == bytes(n), "map says zero at %d+%d but the data is not" % (s, n)
# whole chunks zeroed by convert, write -z -u (may unmap) or discard are holes
for c in (5, 6, 7, 26, 27, 39, 40):   # (chunk 4 got 2 bytes of 0x66)
    e = at(c * M)
    assert e["zero"] and not e["data"], "chunk %d should read as a hole: %r" % (c, e)
# chunks holding data are data
for c in (0, 1, 3, 10, 32, 33, 48):
    e = at(c * M + 4096)
    assert e["data"] and not e["zero"], "chunk %d has data: %r" % (c, e)
EOF

echo "qemu-img convert out of the volume to a file, cmp"
qemu-img convert -f raw -O raw "$U" "$T/out.img" || fail "qemu-img convert out"
cmp "$T/img" "$T/out.img" || fail "image read back with qemu-img convert differs"

echo "fresh volume: qemu-img map shows one zero extent"
ctl volume create fresh --size 16M >/dev/null
qemu-img map -f raw --output=json "$(uri fresh)" >"$T/map2.json" || fail "qemu-img map fresh"
$PY -c '
import json, sys
m = json.load(open(sys.argv[1]))
assert all(e["zero"] and not e["data"] for e in m) and sum(e["length"] for e in m) == 16 << 20, m
' "$T/map2.json" || fail "map of a fresh volume: $(cat "$T/map2.json")"

stop_blockd
check_store
echo "PASS test-qemu"
