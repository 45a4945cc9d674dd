# tests/integration/vm-lib.sh — sourced after lib.sh by the tests that boot
# the test guest (tests/guest/) under QEMU through vm.py.  Chains a VM
# cleanup in front of lib.sh's: every VM started under $T is killed by PID
# (vm.py kill) before blockd is, whatever way the test ends.
need qemu-system-x86_64
GUEST=$ROOT/$BUILD/guest
vm () { $PY "$ROOT/tests/integration/vm.py" "$@"; }

vm_cleanup () {
    for _d in "$T"/*/; do
        [ -f "$_d/qemu.cmdline" ] || continue
        vm kill --dir "$_d" 2>/dev/null \
            || { [ -f "$_d/qemu.pid" ] && kill -9 "$(cat "$_d/qemu.pid")" 2>/dev/null; }
    done
    return 0
}
trap 'vm_cleanup; cleanup' EXIT

# build_guest: build (or find up to date) $GUEST; skip the test if this
# machine cannot (no kernel, modules or static busybox)
build_guest () {
    _rc=0
    sh "$ROOT/tests/guest/build-guest.sh" "$GUEST" >"$T/build-guest.log" 2>&1 || _rc=$?
    [ $_rc -eq 77 ] && skip "$(tail -n 1 "$T/build-guest.log")"
    [ $_rc -eq 0 ] || { cat "$T/build-guest.log"; fail "tests/guest/build-guest.sh failed ($_rc)"; }
}

# vm_start DIR [vm.py start options] [-- QEMU-ARGS]: boot a VM in DIR owned
# by this test (it dies with the test shell even on SIGKILL)
vm_start () {
    _d=$1; shift
    vm start --dir "$_d" --guest "$GUEST" --owner $$ "$@" || fail "the VM in $_d did not boot"
}

# volume_serial VOL: the virtio serial the guest sees for VOL, the first
# 20 characters of its id (what blockctl attach gives QEMU)
volume_serial () {
    ctl volume show "$1" --json | $PY -c 'import json, sys; print(json.load(sys.stdin)["id"][:20])' \
        || fail "volume show $1"
}

# volume_allocated VOL: the bytes of pool space VOL uses now
volume_allocated () {
    ctl volume show "$1" --json | $PY -c 'import json, sys; print(json.load(sys.stdin)["allocated"])' \
        || fail "volume show $1"
}

# expect_freed VOL BEFORE BYTES WHAT: VOL's allocated bytes are now at least
# BYTES below BEFORE (its figure before WHAT)
expect_freed () {
    _after=$(volume_allocated "$1")
    [ "$_after" -le $(($2 - $3)) ] \
        || fail "$4 freed $(($2 - _after)) bytes of $1, want $3 or more (allocated $2, then $_after)"
    echo "$1: allocated $2, after $4 $_after"
}

# boot_from NAME VOL: boot instance NAME (in $T/NAME) from system disk VOL,
# with the QEMU options `blockctl attach --print-args` gives (kept in
# $T/NAME.args: an option and its value a line, split into words)
boot_from () {
    ctl attach "$2" --instance "$1" --role system --print-args >"$T/$1.args" \
        || fail "attach $2 --print-args"
    _t=$(date +%s)
    # shellcheck disable=SC2046
    vm_start "$T/$1" --append "blockd.root=$(volume_serial "$2")" -- $(cat "$T/$1.args")
    echo "$1 booted from $2 in $(( $(date +%s) - _t )) s"
}

# vm_stop DIR: power off from inside the guest; fails the test if it had to
# be forced
vm_stop () {
    vm stop --dir "$1" || fail "the VM in $1 did not power off cleanly (see $1/serial.log)"
}
