#!/bin/sh
# tests/integration/test-fio.sh — fio's nbd ioengine against blockd, with
# data verification: 4k random writes at queue depth 32, random read/write
# with unaligned sizes (512 bytes .. 64 KiB), and four jobs on disjoint
# ranges of one volume at once.  fio must exit 0 with no verify error.
. "$(dirname "$0")/lib.sh"
need fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "skipped: this fio has no nbd ioengine"

start_blockd
ctl volume create fio1 --size 128M >/dev/null
ctl volume create fio2 --size 64M >/dev/null
ctl volume create fio4 --size 128M >/dev/null

# run_fio NAME JOBFILE-BODY: runs fio, fails on a non-zero exit or a verify error
run_fio () {
    name=$1
    printf '%s\n' "$2" >"$T/$name.fio"
    echo "fio $name"
    rc=0
    timeout 60 fio --output-format=json --output="$T/$name.json" "$T/$name.fio" >"$T/$name.out" 2>&1 || rc=$?
    [ $rc -eq 0 ] || { cat "$T/$name.out"; fail "fio $name exited $rc"; }
    ! grep -q -i 'verify' "$T/$name.out" || { cat "$T/$name.out"; fail "fio $name reported verify problems"; }
    $PY - "$T/$name.json" "$name" <<'EOF' || fail "fio $name result"
import json, sys
j = json.load(open(sys.argv[1]))
for job in j["jobs"]:
    assert job["error"] == 0, "job %s: error %d" % (job["jobname"], job["error"])
    w, r = job["write"], job["read"]
    assert w["io_bytes"] > 0, "job %s wrote nothing" % job["jobname"]
    assert r["io_bytes"] > 0, "job %s read (verified) nothing" % job["jobname"]
    print("  %s: wrote %d KiB (%d IOPS), read %d KiB" % (job["jobname"], w["io_bytes"] // 1024,
          w["iops"], r["io_bytes"] // 1024))
EOF
}

run_fio randwrite-4k "[randwrite-4k]
ioengine=nbd
uri=$(uri fio1)
rw=randwrite
bs=4k
iodepth=32
size=128M
verify=crc32c
do_verify=1
verify_fatal=1
randrepeat=0
verify_state_save=0"

run_fio randrw-unaligned "[randrw-unaligned]
ioengine=nbd
uri=$(uri fio2)
rw=randrw
rwmixread=30
bsrange=512-64k
blockalign=512
iodepth=16
size=64M
io_size=48M
verify=crc32c
verify_fatal=1
do_verify=1
randrepeat=0
verify_state_save=0"

run_fio four-jobs "[global]
ioengine=nbd
uri=$(uri fio4)
rw=randwrite
bsrange=4k-128k
iodepth=8
size=32M
offset_increment=32M
numjobs=4
verify=crc32c
verify_fatal=1
do_verify=1
randrepeat=0
verify_state_save=0

[four-jobs]"

echo "the volumes show allocated space"
ctl volume show fio1 --json | $PY -c 'import json,sys; j=json.load(sys.stdin); assert j["allocated"] == 128 << 20, j' \
    || fail "fio1 allocated after a full random write: $(ctl volume show fio1)"

stop_blockd
check_store
echo "PASS test-fio"
