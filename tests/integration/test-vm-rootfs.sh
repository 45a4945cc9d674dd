#!/bin/sh
# tests/integration/test-vm-rootfs.sh — a volume as a VM's system disk: a
# real Linux guest (QEMU, TCG unless BLOCKD_QEMU_ACCEL says otherwise) boots
# from a blockd volume over NBD as a virtio-blk disk, writes files to its
# root filesystem, syncs and powers off; blockd is stopped and started again
# on the same data directory; the guest boots again from the volume and
# reads the files back.  Between the boots the volume is also checked from
# the host: a clean ext4 (e2fsck -fn) holding the file.  Then a file is
# deleted and fstrim run in the guest: the discards reach blockd (the disk
# is discard=unmap, as blockctl gives it), the volume's allocated bytes
# fall, and the filesystem is still clean.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/integration/vm-lib.sh"
need nbdcopy e2fsck debugfs
t0=$(date +%s)

echo "build the guest"
build_guest

echo "import the root filesystem image into volume sys1"
start_blockd
ctl volume import sys1 --from "$GUEST/rootfs.ext4" >"$T/import.out" 2>&1 \
    || { cat "$T/import.out"; fail "volume import sys1"; }
SERIAL=$(volume_serial sys1)

# check_ext4 WHEN: sys1, copied out whole to $T/sys1.img, is a clean ext4
check_ext4 () {
    nbdcopy "$(uri sys1)" "$T/sys1.img" || fail "nbdcopy sys1 out $1"
    e2fsck -fn "$T/sys1.img" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck of the volume $1"; }
}

# check_blob AFTER: /data/blob in the guest still has the checksum $SUM
check_blob () {
    vm run --dir "$T/vm" 'sha256sum /data/blob' >"$T/sum.out" || fail "sha256sum after $1: $(cat "$T/sum.out")"
    [ "$(cut -d' ' -f1 "$T/sum.out")" = "$SUM" ] || fail "/data/blob changed with $1: $(cat "$T/sum.out")"
}

boot () {
    _t=$(date +%s)
    vm_start "$T/vm" --append "blockd.root=$SERIAL" -- \
        -blockdev "driver=nbd,node-name=sys,server.type=inet,server.host=127.0.0.1,server.port=$NBD_PORT,export=sys1,discard=unmap" \
        -device "virtio-blk-pci,drive=sys,serial=$SERIAL"
    echo "booted in $(( $(date +%s) - _t )) s"
    vm run --dir "$T/vm" 'cat /etc/guest-root; grep " / " /proc/mounts' >"$T/root.out" \
        || fail "reading the guest's root: $(cat "$T/root.out")"
    grep -qx disk "$T/root.out" || fail "the guest did not switch to the volume: $(cat "$T/root.out")"
    grep -q '^/dev/vd[a-z]* / ext4 rw' "$T/root.out" || fail "root is not the volume, rw: $(cat "$T/root.out")"
}

echo "first boot from the volume; write files"
boot
CONTENT="written by test-vm-rootfs $$ at $(date +%s)"
vm run --dir "$T/vm" "printf '%s\n' '$CONTENT' >/data/hello && dd if=/dev/urandom of=/data/blob bs=64k count=64 2>/dev/null && sync && sha256sum /data/blob" \
    >"$T/write.out" || fail "writing in the guest: $(cat "$T/write.out")"
SUM=$(cut -d' ' -f1 "$T/write.out")
[ ${#SUM} -eq 64 ] || fail "sha256sum in the guest: $(cat "$T/write.out")"
vm run --dir "$T/vm" 'cat /data/hello' >"$T/hello.out" || fail "cat in the guest"
[ "$(cat "$T/hello.out")" = "$CONTENT" ] || fail "read back before shutdown: $(cat "$T/hello.out")"

echo "power off; the volume is a clean ext4 holding the file"
vm_stop "$T/vm"
check_ext4 "after shutdown"
debugfs -R "cat /data/hello" "$T/sys1.img" 2>/dev/null >"$T/debugfs.out"
[ "$(cat "$T/debugfs.out")" = "$CONTENT" ] || fail "the file in the volume (debugfs): $(cat "$T/debugfs.out")"
rm -f "$T/sys1.img"

echo "restart blockd on the same data directory"
stop_blockd
check_store
start_blockd

echo "second boot; read the files back"
boot
vm run --dir "$T/vm" 'cat /data/hello' >"$T/hello.out" || fail "cat after reboot: $(cat "$T/hello.out")"
[ "$(cat "$T/hello.out")" = "$CONTENT" ] || fail "/data/hello after reboot: $(cat "$T/hello.out")"
check_blob "the restart"
# the first shutdown was clean, so the journal needed no recovery
vm run --dir "$T/vm" 'dmesg' >"$T/dmesg.out" || fail "dmesg"
! grep -qi 'ext4.*recover' "$T/dmesg.out" || fail "ext4 recovered its journal: the shutdown was not clean: $(grep -i ext4 "$T/dmesg.out")"

echo "fstrim in the guest gives a deleted file's space back to the pool"
vm run --dir "$T/vm" 'dd if=/dev/urandom of=/data/scratch bs=1M count=16 2>/dev/null && sync' \
    >"$T/trim.out" 2>&1 || fail "writing /data/scratch: $(cat "$T/trim.out")"
A=$(volume_allocated sys1)
vm run --dir "$T/vm" 'rm /data/scratch && sync && fstrim -v /' >"$T/trim.out" 2>&1 \
    || fail "fstrim in the guest: $(cat "$T/trim.out")"
cat "$T/trim.out"
expect_freed sys1 "$A" $((8 << 20)) "rm + fstrim"
check_blob "fstrim"
vm_stop "$T/vm"
check_ext4 "after fstrim"
rm -f "$T/sys1.img"
stop_blockd
echo "done in $(( $(date +%s) - t0 )) s"
