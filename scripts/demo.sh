#!/bin/sh
# scripts/demo.sh — `make demo`: the whole story of a cloud disk on one
# machine, in a few minutes.  Starts a private blockd, imports a small system
# image, boots a VM from it (QEMU; TCG unless BLOCKD_QEMU_ACCEL=kvm), attaches
# a data disk while it runs, writes to it from inside the guest, snapshots
# the system disk, detaches the data disk, stops the VM, and shows that the
# disks are still there.  Every blockctl command is printed before it runs.
#
# The guest is the tiny one the tests use (tests/guest/: the host's Debian
# kernel and a busybox root), driven over its serial console by
# tests/integration/vm.py.  Everything lives in build/demo and is removed at
# the end (KEEP=1 keeps it, with blockd stopped).
set -e
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
PY=/usr/bin/python3
DIR=$ROOT/$BUILD/demo
GUEST=$ROOT/$BUILD/guest
BLOCKD_PID=
VM=$DIR/vm

say () { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show () { printf '$ %s\n' "$*"; "$@"; }
blockctl () { "$ROOT/$BUILD/blockctl" "$@"; }
vm () { $PY "$ROOT/tests/integration/vm.py" "$@"; }
in_guest () {
    printf '[guest]# %s\n' "$*"
    _rc=0; vm run --dir "$VM" "$*" >"$DIR/guest.out" 2>&1 || _rc=$?
    sed 's/^/  /' "$DIR/guest.out"
    return $_rc
}

finish () {
    rc=$?
    [ -f "$VM/qemu.pid" ] && vm kill --dir "$VM" >/dev/null 2>&1 || true
    if [ -n "$BLOCKD_PID" ]; then kill "$BLOCKD_PID" 2>/dev/null; wait "$BLOCKD_PID" 2>/dev/null || true; fi
    [ -n "$KEEP" ] || rm -rf "$DIR"
    [ $rc -eq 0 ] || echo "demo: failed (exit $rc); blockd's log was $DIR/blockd.log" >&2
}
trap finish EXIT
trap 'exit 130' INT TERM

free_port () { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rm -rf "$DIR"
mkdir -p "$DIR"
say "build the demo guest: the host's kernel and a busybox root filesystem image"
sh tests/guest/build-guest.sh "$GUEST" | tail -n 1
ls -lh "$GUEST/rootfs.ext4" | awk '{print "  system image:", $NF, $5}'

say "start blockd (data in $DIR/data, a 4 GiB pool)"
NBD=127.0.0.1:$(free_port)
API=http://127.0.0.1:$(free_port)
"$ROOT/$BUILD/blockd" --data-dir "$DIR/data" --capacity 4G --nbd "$NBD" --api "${API#http://}" \
    >"$DIR/blockd.log" 2>&1 &
BLOCKD_PID=$!
export BLOCKD_API=$API
n=0
until curl -sf "$API/v1/health" >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -lt 100 ] || { cat "$DIR/blockd.log"; exit 1; }
    sleep 0.1
done
echo "  NBD on $NBD, API on $API (pid $BLOCKD_PID)"

say "import the system image as volume demo-sys (zeros and holes are not written)"
show blockctl volume import demo-sys --from "$GUEST/rootfs.ext4"

say "boot VM demo-vm from it: blockctl records the attachment and prints QEMU's options"
echo '$ blockctl attach demo-sys --instance demo-vm --role system --print-args'
blockctl attach demo-sys --instance demo-vm --role system --print-args >"$DIR/args"
cat "$DIR/args"
SERIAL=$(blockctl volume show demo-sys --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"][:20])')
# shellcheck disable=SC2046
vm start --dir "$VM" --guest "$GUEST" --owner $$ --append "blockd.root=$SERIAL" -- $(cat "$DIR/args")
in_guest 'uname -sr; grep " / " /proc/mounts; cat /sys/block/vda/serial; echo'

say "create a data disk and hot-plug it into the running VM over QMP"
show blockctl volume create demo-data --size 1G
show blockctl attach demo-data --instance demo-vm --qmp "$VM/qmp.sock"
DSERIAL=$(blockctl volume show demo-data --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"][:20])')

say "in the guest: find the disk by its serial, make a filesystem, write a file"
in_guest "d=\$(disk-by-serial -w 30 $DSERIAL) && echo \"data disk is \$d\" && mke2fs -L demo-data \$d >/dev/null && mkdir -p /mnt/data && mount \$d /mnt/data && echo 'hello from demo-vm' >/mnt/data/hello.txt && sync && df -h /mnt/data | tail -n 1 && cat /mnt/data/hello.txt"
show blockctl volume list

say "snapshot the system disk while the VM runs (crash-consistent, copies nothing)"
show blockctl snapshot create demo-sys before-update
in_guest 'echo "changed after the snapshot" >/etc/motd && sync'

say "detach the data disk: unmount in the guest, then unplug over QMP"
in_guest 'umount /mnt/data'
show blockctl detach demo-data --qmp "$VM/qmp.sock"
in_guest "disk-by-serial $DSERIAL || echo 'the data disk is gone from the guest'"

say "stop the VM; the system disk's attachment is released once it is down"
vm stop --dir "$VM"
echo "  demo-vm is powered off"
show blockctl detach demo-sys --instance demo-vm

say "the disks outlive the VM: volumes, snapshot and pool"
show blockctl volume list
show blockctl snapshot list
show blockctl pool show
show blockctl volume export demo-data --to "$DIR/demo-data.img"
printf '$ debugfs -R "cat /hello.txt" %s\n' "$DIR/demo-data.img"
debugfs -R "cat /hello.txt" "$DIR/demo-data.img" 2>/dev/null | sed 's/^/  /'

say "the snapshot still has the system disk as it was: /etc/motd, live and in the snapshot"
show blockctl volume export demo-sys --to "$DIR/sys-now.img"
show blockctl volume export demo-sys@before-update --to "$DIR/sys-before.img"
for f in sys-now sys-before; do
    printf '$ debugfs -R "cat /etc/motd" %s\n' "$DIR/$f.img"
    debugfs -R "cat /etc/motd" "$DIR/$f.img" 2>&1 | grep -v '^debugfs ' | sed 's/^/  /'
done

say "done: blockd is stopped and $DIR removed$( [ -n "$KEEP" ] && echo ' (KEEP=1: kept)')"
