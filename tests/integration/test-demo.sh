#!/bin/sh
# tests/integration/test-demo.sh — `make demo` (scripts/demo.sh) runs from
# start to end and tells the story it promises: the VM booted from the
# imported volume, the data disk was written in the guest, the snapshot
# kept the old system disk, and the disks outlived the VM.
. "$(dirname "$0")/lib.sh"
need qemu-system-x86_64 debugfs
BUILD=$BUILD sh "$ROOT/scripts/demo.sh" >"$T/demo.out" 2>&1 || { cat "$T/demo.out"; fail "scripts/demo.sh failed"; }
cat "$T/demo.out"
says () { grep -q "$1" "$T/demo.out" || fail "the demo did not show: $1"; }
says '^  /dev/vda / ext4 rw'
says '^  data disk is /dev/vd'
says '^  hello from demo-vm$'
says 'the data disk is gone from the guest'
says '^  changed after the snapshot$'
says 'File not found'
says '^demo-data .* available  -'
says '^demo-sys@before-update'
[ ! -d "$ROOT/$BUILD/demo" ] || fail "the demo left $BUILD/demo behind"
