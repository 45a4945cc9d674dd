#!/bin/sh
# tests/integration/test-vm-blockd-restart.sh — blockd dies under a running
# VM and comes back: a guest booted from a blockd volume, with a data disk
# hot-plugged, writes and flushes a pattern; blockd is killed with -9 while
# the guest is idle, a read issued while blockd is down does not complete
# (QEMU pauses the VM on the request that found the connection gone:
# rerror=stop from blockctl) and completes with the flushed data once
# blockd is back and the VM is resumed; then blockd is stopped and started
# cleanly under the VM, and the guest goes on writing to both disks without
# one I/O error.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/integration/vm-lib.sh"
t0=$(date +%s)

build_guest
start_blockd
ctl volume import sys1 --from "$GUEST/rootfs.ext4" >/dev/null || fail "import sys1"
ctl volume create data1 --size 64M >/dev/null || fail "create data1"
DATA=$(volume_serial data1)

boot_from vm1 sys1
grep -q 'reconnect-delay=' "$T/vm1.args" || fail "the -blockdev options do not ask QEMU to reconnect: $(cat "$T/vm1.args")"
ctl attach data1 --instance vm1 --qmp "$T/vm1/qmp.sock" >/dev/null || fail "attach data1"

echo "the guest writes and flushes a pattern"
vm run --dir "$T/vm1" "set -e; d=\$(disk-by-serial -w 30 $DATA)
    yes 'blockd-restart-$$' | head -c 8388608 >/tmp/pat
    dd if=/tmp/pat of=\$d bs=64k seek=17 conv=fsync 2>/dev/null
    sha256sum </tmp/pat" >"$T/sum" || fail "writing the pattern: $(cat "$T/sum")"
SUM=$(cut -d' ' -f1 "$T/sum")

echo "kill -9 blockd; a guest read issued now waits for it"
# nothing dirty: the only I/O while blockd is down is the read (O_DIRECT)
vm run --dir "$T/vm1" sync || fail "sync"
kill9_blockd
vm run --dir "$T/vm1" "d=\$(disk-by-serial $DATA)
    ( dd if=\$d bs=64k skip=17 count=128 iflag=direct 2>/tmp/dd.err | sha256sum >/tmp/during
      echo done >>/tmp/during ) </dev/null >/dev/null 2>&1 &" || fail "starting the read"
sleep 2
vm run --dir "$T/vm1" 'cat /tmp/during 2>/dev/null' >"$T/during" || true
! grep -q done "$T/during" || fail "a read completed while blockd was down: $(cat "$T/during")"

echo "blockd comes back: the read completes with the flushed data"
start_blockd
# The request that found the connection broken failed in QEMU: the VM paused
# on it (rerror=stop) instead of passing the error to the guest; resuming
# retries it.  Requests after it waited for the reconnect (reconnect-delay).
vm qmp --dir "$T/vm1" query-status >"$T/status" || fail "query-status"
echo "  VM status after blockd came back: $(tr -d "\n " <"$T/status")"
if grep -q "io-error" "$T/status"; then
    echo "  the VM paused on the failed request; resuming it"
    vm qmp --dir "$T/vm1" cont >/dev/null || fail "cont"
fi
n=0
until vm run --dir "$T/vm1" 'grep -q done /tmp/during && cat /tmp/during' >"$T/during" 2>&1; do
    n=$((n + 1)); [ $n -lt 60 ] || fail "the guest's read did not complete within 60 s of blockd's return"
    sleep 1
done
[ "$(head -n 1 "$T/during" | cut -d' ' -f1)" = "$SUM" ] \
    || fail "read after the restart: $(cat "$T/during") vs $SUM; dd: $(vm run --dir "$T/vm1" 'cat /tmp/dd.err')"
echo "  the read waited and completed after $n s"

echo "a clean stop and start of blockd under the VM; the guest keeps writing"
stop_blockd
check_store
start_blockd
vm run --dir "$T/vm1" "set -e; d=\$(disk-by-serial $DATA)
    yes 'after-restart-$$' | head -c 4194304 >/tmp/pat2
    dd if=/tmp/pat2 of=\$d bs=64k seek=300 conv=fsync 2>/dev/null
    echo 3 >/proc/sys/vm/drop_caches
    dd if=\$d bs=64k skip=300 count=64 2>/dev/null | cmp - /tmp/pat2
    echo 'root still writable' >/data/after && sync && cat /data/after" >"$T/after" \
    || fail "writing after the restarts: $(cat "$T/after")"
grep -qx 'root still writable' "$T/after" || fail "root fs after the restarts: $(cat "$T/after")"
vm run --dir "$T/vm1" 'dmesg' >"$T/dmesg" || fail "dmesg"
! grep -Ei 'I/O error|blk_update_request|Buffer I/O|EXT4-fs error' "$T/dmesg" \
    || fail "the guest saw I/O errors across the restarts"
vm_stop "$T/vm1"
stop_blockd
check_store
echo "done in $(( $(date +%s) - t0 )) s"
