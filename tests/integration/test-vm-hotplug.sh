#!/bin/sh
# tests/integration/test-vm-hotplug.sh — a disk moves between VMs: guest 1
# boots from a system volume served by blockd (the QEMU options come from
# `blockctl attach --print-args`), a data volume is hot-plugged into it with
# `blockctl attach --qmp`, the guest finds it by its serial, writes a known
# pattern and reads it back; `blockctl detach --qmp` unplugs it (the guest
# lets go) and it is hot-plugged into guest 2, which reads the same pattern,
# and whose blkdiscard gives a range's pool space back.
# Along the way: the second attach is refused while guest 1 holds the disk,
# the running system disk cannot be detached, and an attached disk cannot
# be deleted.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/integration/vm-lib.sh"
t0=$(date +%s)

build_guest
start_blockd
ctl volume import sys1 --from "$GUEST/rootfs.ext4" >"$T/import.out" 2>&1 \
    || { cat "$T/import.out"; fail "volume import sys1"; }
ctl volume create sys2 --from-snapshot "$(ctl snapshot create sys1 golden --json \
    | $PY -c 'import json, sys; j = json.load(sys.stdin); print(j["volume"] + "@" + j["name"])')" \
    >/dev/null || fail "clone sys2 from sys1@golden"
ctl volume create data1 --size 64M >/dev/null || fail "create data1"
DATA=$(volume_serial data1)

echo "vm1 boots from sys1"
boot_from vm1 sys1
vm run --dir "$T/vm1" 'cat /etc/guest-root' | grep -qx disk || fail "vm1 root is not the volume"

echo "hot-plug data1 into vm1; the guest finds it by serial and writes a pattern"
ctl attach data1 --instance vm1 --qmp "$T/vm1/qmp.sock" >"$T/attach.out" 2>&1 \
    || { cat "$T/attach.out"; fail "attach data1 to vm1"; }
grep -q "/dev/disk/by-id/virtio-$DATA" "$T/attach.out" || fail "attach output: $(cat "$T/attach.out")"
ctl volume show data1 --json >"$T/body"
jcheck 'j["attachments"][0]["instance"] == "vm1" and j["attachments"][0]["role"] == "data"' "data1 on vm1"
# 8 MiB of a pattern only this run produces, at an offset that is not
# chunk-aligned, then read back through the page cache and without it
vm run --dir "$T/vm1" "set -e; d=\$(disk-by-serial -w 30 $DATA); echo \$d
    yes 'blockd-hotplug-$$' | head -c 8388608 >/tmp/pat
    dd if=/tmp/pat of=\$d bs=64k seek=17 conv=fsync 2>/dev/null
    echo 3 >/proc/sys/vm/drop_caches
    dd if=\$d bs=64k skip=17 count=128 2>/dev/null | cmp - /tmp/pat
    sha256sum /tmp/pat" >"$T/vm1.out" || fail "pattern on vm1: $(cat "$T/vm1.out")"
SUM=$(tail -n 1 "$T/vm1.out" | cut -d' ' -f1)
[ ${#SUM} -eq 64 ] || fail "vm1 output: $(cat "$T/vm1.out")"

echo "vm2 boots from sys2 (a clone of sys1); data1 is refused there while vm1 has it"
boot_from vm2 sys2
rc=0; ctl attach data1 --instance vm2 --qmp "$T/vm2/qmp.sock" >"$T/refused.out" 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q vm1 "$T/refused.out" || fail "attach to vm2 while on vm1: rc $rc, $(cat "$T/refused.out")"
vm run --dir "$T/vm2" "! disk-by-serial $DATA" >/dev/null || fail "vm2 got data1 although it was refused"

echo "refusals: a running system disk stays, an attached disk is not deleted"
rc=0; ctl detach sys1 --qmp "$T/vm1/qmp.sock" >"$T/refused.out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "detach of vm1's running system disk was allowed"
grep -qi "stop the instance" "$T/refused.out" || fail "system disk refusal: $(cat "$T/refused.out")"
rc=0; ctl volume delete data1 --force >"$T/refused.out" 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q vm1 "$T/refused.out" || fail "delete of attached data1: rc $rc, $(cat "$T/refused.out")"

echo "detach data1 from vm1: the guest lets go of it"
ctl detach data1 --instance vm1 --qmp "$T/vm1/qmp.sock" >"$T/detach.out" 2>&1 \
    || { cat "$T/detach.out"; fail "detach data1 from vm1"; }
vm run --dir "$T/vm1" "disk-by-serial -g -w 10 $DATA" >/dev/null || fail "data1 still in vm1 after detach"
ctl volume show data1 --json >"$T/body"
jcheck 'j["attached"] is False and j["connections"] == 0' "data1 detached and disconnected"

echo "attach data1 to vm2 and read the pattern there"
ctl attach data1 --instance vm2 --qmp "$T/vm2/qmp.sock" >"$T/attach.out" 2>&1 \
    || { cat "$T/attach.out"; fail "attach data1 to vm2"; }
vm run --dir "$T/vm2" "set -e; d=\$(disk-by-serial -w 30 $DATA)
    dd if=\$d bs=64k skip=17 count=128 2>/dev/null | sha256sum" >"$T/vm2.out" \
    || fail "reading on vm2: $(cat "$T/vm2.out")"
[ "$(cut -d' ' -f1 "$T/vm2.out")" = "$SUM" ] || fail "vm2 read a different pattern: $(cat "$T/vm2.out") vs $SUM"
vm run --dir "$T/vm2" "set -e; d=\$(disk-by-serial $DATA); dd if=\$d bs=64k count=17 2>/dev/null | tr -d '\\0' | wc -c" \
    >"$T/zero.out" || fail "reading the head on vm2"
[ "$(cat "$T/zero.out")" = 0 ] || fail "the unwritten head of data1 is not zeros: $(cat "$T/zero.out")"

echo "a discard in the guest reaches blockd: blkdiscard gives data1's space back to the pool"
# 8 MiB written at 32 MiB (whole chunks), then discarded: the volume's
# allocated bytes fall by as much, and the range reads back as zeros
vm run --dir "$T/vm2" "set -e; d=\$(disk-by-serial $DATA)
    cat /sys/block/\${d#/dev/}/queue/discard_max_bytes
    head -c 8388608 /dev/urandom >/tmp/junk
    dd if=/tmp/junk of=\$d bs=1M seek=32 conv=fsync 2>/dev/null" >"$T/discard.out" \
    || fail "writing the range to discard on vm2: $(cat "$T/discard.out")"
# (virtio-blk offers discard whatever QEMU does with it: the allocated check below is the proof)
[ "$(head -n 1 "$T/discard.out")" -gt 0 ] || fail "the guest's disk takes no discards: $(cat "$T/discard.out")"
ALLOC=$(volume_allocated data1)
vm run --dir "$T/vm2" "set -e; d=\$(disk-by-serial $DATA)
    blkdiscard -o 33554432 -l 8388608 \$d
    dd if=\$d bs=1M skip=32 count=8 2>/dev/null | tr -d '\\0' | wc -c" >"$T/discard.out" \
    || fail "blkdiscard on vm2: $(cat "$T/discard.out")"
[ "$(cat "$T/discard.out")" = 0 ] || fail "the discarded range does not read as zeros: $(cat "$T/discard.out")"
expect_freed data1 "$ALLOC" $((8 << 20)) "blkdiscard"

echo "stop both VMs; detach their system disks (now allowed); everything is still there"
vm_stop "$T/vm1"
vm_stop "$T/vm2"
ctl detach data1 --instance vm2 >/dev/null || fail "record-only detach of data1"
ctl detach sys1 --qmp "$T/vm1/qmp.sock" >"$T/detach.out" 2>&1 && fail "detach through the QMP socket of a stopped VM succeeded"
ctl detach sys1 --instance vm1 >/dev/null || fail "detach sys1 after vm1 stopped"
ctl detach sys2 >/dev/null || fail "detach sys2 after vm2 stopped"
ctl volume list --attached --json >"$T/body"
jcheck 'j["volumes"] == []' "nothing attached at the end"
ctl volume show data1 --json >"$T/body"
jcheck 'j["allocated"] >= 8 << 20' "data1 keeps its data"
stop_blockd
check_store
echo "done in $(( $(date +%s) - t0 )) s"
