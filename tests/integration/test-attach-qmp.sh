#!/bin/sh
# tests/integration/test-attach-qmp.sh — blockctl attach/detach against real
# QEMUs (no guest OS: paused with -S, or running SeaBIOS) over QMP: the nbd
# node and virtio-blk device really appear (query-block, query-pci, the
# serial), the record in blockd, a second instance refused, multi-attach,
# rollback when QEMU refuses blockdev-add or device_add (and none when it
# does not answer), --print-args
# starting a QEMU that sees the disk, a running system disk kept, and the
# device_del timeout (without a guest nothing acks the ACPI eject).  The
# full detach, DEVICE_DELETED included, runs against a fake QMP server here
# (and with a real guest in the lead's VM test).
. "$(dirname "$0")/lib.sh"
need qemu-system-x86_64 curl

QEMU_PIDS=
cleanup_qemus () {
    for p in $QEMU_PIDS; do kill -9 "$p" 2>/dev/null || true; done
    cleanup
}
trap cleanup_qemus EXIT

# start_qemu NAME QEMU-ARGS...: QMP on $T/NAME.qmp, PID kept for cleanup
start_qemu () {
    _name=$1; shift
    qemu-system-x86_64 -accel tcg -nodefaults -display none -m 64 \
        -qmp "unix:$T/$_name.qmp,server=on,wait=off" "$@" >>"$T/$_name.log" 2>&1 &
    QEMU_PIDS="$QEMU_PIDS $!"
    _n=0
    until [ -S "$T/$_name.qmp" ]; do
        _n=$((_n + 1))
        [ $_n -lt 200 ] || fail "QEMU $_name did not open its QMP socket within 10 s: $(cat "$T/$_name.log")"
        sleep 0.05
    done
}

# qmp SOCKET COMMAND [ARGS-JSON]: run one QMP command, print the reply
cat >"$T/qmp.py" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
f = s.makefile("rwb")
json.loads(f.readline())
for cmd, args in (("qmp_capabilities", None),
                  (sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)):
    m = {"execute": cmd}
    if args is not None:
        m["arguments"] = args
    f.write(json.dumps(m).encode() + b"\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" not in r:
            break
print(json.dumps(r))
EOF
qmp () { $PY "$T/qmp.py" "$@"; }

# jcheck JSON EXPR MESSAGE [ARGS...]: Python EXPR must hold, with j the
# parsed JSON and a the ARGS
jcheck () {
    _j=$1 _e=$2 _m=$3; shift 3
    $PY -c 'import json, sys; j = json.loads(sys.argv[1]); a = sys.argv[3:]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
        "$_j" "$_e" "$@" || fail "$_m: $_j"
}
vol () { curl -sf "$BLOCKD_API/v1/volumes/$1"; }
field () { $PY -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$(vol "$1")" "$2"; }

# run blockctl ARGS...: exit code in $rc, output in $T/out and $T/err
run () { rc=0; "$BLOCKCTL" "$@" >"$T/out" 2>"$T/err" || rc=$?; }
expect_rc () {
    [ "$rc" -eq "$1" ] || fail "$2: exit $rc, expected $1; stdout: $(cat "$T/out"); stderr: $(cat "$T/err")"
}
says () {   # says FILE TEXT WHAT
    grep -qF -- "$2" "$1" || fail "$3: $(basename "$1") does not say \"$2\": $(cat "$1")"
}

# in_qemu SOCKET NODE: the nbd node NODE is in QEMU, on NODE's virtio-blk
# device, reading blockd's export VOLUME
has_disk () {   # has_disk SOCKET NODE VOLUME
    jcheck "$(qmp "$1" query-block)" \
        'any(b.get("inserted", {}).get("node-name") == a[0] and b["inserted"]["drv"] == "nbd"
             and b["inserted"]["file"] == a[2] and b["qdev"].startswith("/machine/peripheral/%s/" % a[0])
             for b in j["return"])' "query-block has no nbd node $2 on device $2 for $3" "$2" "$3" "$(uri "$3")"
    jcheck "$(qmp "$1" query-pci)" \
        'any(d["qdev_id"] == a[0] and d["id"]["vendor"] == 0x1af4 for bus in j["return"] for d in bus["devices"])' \
        "query-pci has no virtio device $2" "$2"
}
no_node () {    # no_node SOCKET NODE: neither the node nor a device NODE
    jcheck "$(qmp "$1" query-named-block-nodes '{"flat": true}')" \
        'all(n["node-name"] != a[0] for n in j["return"])' "node $2 is still in QEMU" "$2"
    jcheck "$(qmp "$1" query-pci)" \
        'all(d["qdev_id"] != a[0] for bus in j["return"] for d in bus["devices"])' "device $2 is in QEMU" "$2"
}
attached_to () {    # attached_to VOLUME "vm1 vm2" ("" for none)
    jcheck "$(vol "$1")" 'j["attached"] == bool(a[0]) and " ".join(x["instance"] for x in j["attachments"]) == a[0]' \
        "volume $1 should be attached to \"$2\"" "$2"
}

start_blockd
for v in d1 r1 p1 p2 sys1 x1 f1 f2 g1; do ctl volume create $v --size 64M >/dev/null; done
ctl volume create shared --size 64M --multi-attach >/dev/null
LONG=a-volume-name-too-long-for-qemu
ctl volume create $LONG --size 64M >/dev/null
start_qemu vm1 -machine pc -S
start_qemu vm2 -machine pc -S

echo "usage errors, caught before anything is done"
run attach d1 --qmp "$T/vm1.qmp"; expect_rc 2 "attach without --instance"
run attach d1 --instance vm1; expect_rc 2 "attach without --qmp or --print-args"
run attach d1 --instance vm1 --qmp "$T/vm1.qmp" --print-args; expect_rc 2 "--qmp and --print-args"
run attach d1 --instance vm1 --qmp "$T/vm1.qmp" --role boot; expect_rc 2 "--role boot"
run attach d1 --instance 'vm 1' --qmp "$T/vm1.qmp"; expect_rc 2 "bad instance name"
run detach d1 --timeout 5; expect_rc 2 "--timeout without --qmp"
run detach d1 --qmp "$T/vm1.qmp" --timeout 0; expect_rc 2 "--timeout 0"
attached_to d1 ""

echo "attach --qmp: nbd node and virtio-blk device in QEMU, record in blockd"
ID=$(field d1 id)
SERIAL=$(echo "$ID" | cut -c1-20)
run attach d1 --instance vm1 --qmp "$T/vm1.qmp"; expect_rc 0 "attach d1 to vm1"
says "$T/out" "device: blockd-d1" "attach output"
says "$T/out" "serial: $SERIAL" "attach output"
says "$T/out" "/dev/disk/by-id/virtio-$SERIAL" "attach output"
has_disk "$T/vm1.qmp" blockd-d1 d1
jcheck "$(qmp "$T/vm1.qmp" qom-get '{"path": "/machine/peripheral/blockd-d1", "property": "serial"}')" \
    'j["return"] == a[0]' "device serial is the id's first 20 characters" "$SERIAL"
attached_to d1 vm1
jcheck "$(vol d1)" 'j["attachments"][0]["role"] == "data" and j["connections"] >= 1' "d1: data disk, QEMU connected"
jcheck "$(curl -sf "$BLOCKD_API/v1/volumes?attached=true&instance=vm1")" \
    '[v["name"] for v in j["volumes"]] == ["d1"]' "list attached to vm1"

echo "attach again to the same instance: nothing changes"
run attach d1 --instance vm1 --qmp "$T/vm1.qmp"; expect_rc 0 "attach d1 to vm1 again"
says "$T/out" "it already was" "second attach"
jcheck "$(qmp "$T/vm1.qmp" query-pci)" \
    'sum(d["qdev_id"] == "blockd-d1" for bus in j["return"] for d in bus["devices"]) == 1' "one device after re-attach"

echo "a second instance is refused with blockd's 409, naming the holder"
run attach d1 --instance vm2 --qmp "$T/vm2.qmp"; expect_rc 1 "attach d1 to vm2"
says "$T/err" "vm1" "the refusal names the holder"
no_node "$T/vm2.qmp" blockd-d1
attached_to d1 vm1

echo "multi-attach: one volume on two instances"
run attach shared --instance vm1 --qmp "$T/vm1.qmp"; expect_rc 0 "shared on vm1"
run attach shared --instance vm2 --qmp "$T/vm2.qmp"; expect_rc 0 "shared on vm2"
has_disk "$T/vm1.qmp" blockd-shared shared
has_disk "$T/vm2.qmp" blockd-shared shared
attached_to shared "vm1 vm2"
run detach shared --qmp "$T/vm1.qmp"; expect_rc 1 "detach --qmp of a two-instance volume without --instance"
says "$T/err" "--instance" "ambiguous detach"

echo "a long name: node and device named from the volume id"
LID=$(field $LONG id)
LNODE=blockd_$(echo "$LID" | tr -d - | cut -c1-24)
run attach $LONG --instance vm2 --qmp "$T/vm2.qmp"; expect_rc 0 "attach $LONG"
says "$T/out" "device: $LNODE" "long name output"
has_disk "$T/vm2.qmp" "$LNODE" $LONG

echo "detach --qmp through the wrong instance's socket: refused, the record stays"
run detach $LONG --qmp "$T/vm1.qmp"; expect_rc 4 "detach $LONG (on vm2) through vm1's socket"
says "$T/err" "the QMP socket of instance \"vm2\"? nothing was detached" "wrong socket"
attached_to $LONG vm2
has_disk "$T/vm2.qmp" "$LNODE" $LONG

echo "rollback: QEMU refuses blockdev-add (node-name in use)"
qmp "$T/vm2.qmp" blockdev-add '{"driver": "null-co", "node-name": "blockd-r1"}' >/dev/null
run attach r1 --instance vm2 --qmp "$T/vm2.qmp"; expect_rc 4 "attach r1 with its node-name taken"
says "$T/err" "QEMU refused blockdev-add: Duplicate nodes with node-name='blockd-r1'" "blockdev-add failure"
says "$T/err" "attachment record was undone" "blockdev-add failure"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "one line per failure: $(cat "$T/err")"
attached_to r1 ""
jcheck "$(qmp "$T/vm2.qmp" query-pci)" 'all(d["qdev_id"] != "blockd-r1" for bus in j["return"] for d in bus["devices"])' \
    "no device after failed blockdev-add"

echo "rollback: QEMU refuses device_add (no PCI bus: -machine none, a bad --bus)"
start_qemu vm3 -machine none
run attach r1 --instance vm3 --qmp "$T/vm3.qmp"; expect_rc 4 "attach r1 to a QEMU without PCI"
says "$T/err" "QEMU refused device_add: No 'PCI' bus found for device 'virtio-blk-pci'" "device_add failure"
says "$T/err" "block node blockd-r1 removed again" "device_add failure"
says "$T/err" "attachment record was undone" "device_add failure"
no_node "$T/vm3.qmp" blockd-r1
attached_to r1 ""
run attach r1 --instance vm1 --qmp "$T/vm1.qmp" --bus nosuchbus; expect_rc 4 "attach r1 on a bad bus"
says "$T/err" "Bus 'nosuchbus' not found" "bad bus"
no_node "$T/vm1.qmp" blockd-r1
attached_to r1 ""

echo "no QMP socket: nothing is recorded"
run attach r1 --instance vm9 --qmp "$T/vm9.qmp"; expect_rc 4 "attach with a missing socket"
says "$T/err" "nothing was attached" "missing socket"
attached_to r1 ""

echo "--print-args: the options start a QEMU that has the disk"
run attach p1 --instance vm4 --print-args; expect_rc 0 "print-args p1"
[ "$(wc -l <"$T/out")" -eq 2 ] || fail "print-args: two lines expected: $(cat "$T/out")"
says "$T/out" "-blockdev driver=nbd,node-name=blockd-p1,server.type=inet,server.host=127.0.0.1,server.port=$NBD_PORT,export=p1,discard=unmap,reconnect-delay=30" "print-args"
says "$T/out" "-device virtio-blk-pci,id=blockd-p1,drive=blockd-p1,serial=$(field p1 id | cut -c1-20)" "print-args"
attached_to p1 vm4
set -f
# shellcheck disable=SC2046
start_qemu vm4 -machine pc -S $(cat "$T/out")
set +f
has_disk "$T/vm4.qmp" blockd-p1 p1
run attach p2 --instance vm5 --print-args --shell --role system; expect_rc 0 "print-args --shell, system"
[ "$(wc -l <"$T/out")" -eq 1 ] || fail "print-args --shell: one line expected: $(cat "$T/out")"
says "$T/out" "bootindex=1" "a system disk boots first"
eval "set -- $(cat "$T/out")"
start_qemu vm5 -machine pc -S "$@"
has_disk "$T/vm5.qmp" blockd-p2 p2
jcheck "$(qmp "$T/vm5.qmp" qom-get '{"path": "/machine/peripheral/blockd-p2", "property": "bootindex"}')" \
    'j["return"] == 1' "bootindex of the system disk"
jcheck "$(vol p2)" 'j["attachments"][0]["role"] == "system"' "p2 recorded as a system disk"

echo "detach --qmp of a running system disk is refused"
start_qemu vm6 -machine pc
jcheck "$(qmp "$T/vm6.qmp" query-status)" 'j["return"]["running"]' "vm6 runs (SeaBIOS)"
run attach sys1 --instance vm6 --qmp "$T/vm6.qmp" --role system; expect_rc 0 "attach sys1 to running vm6"
has_disk "$T/vm6.qmp" blockd-sys1 sys1
run detach sys1 --qmp "$T/vm6.qmp"; expect_rc 4 "detach a running system disk"
says "$T/err" "stop the instance first, or detach after it is shut down" "running system disk"
has_disk "$T/vm6.qmp" blockd-sys1 sys1
attached_to sys1 vm6

echo "detach --qmp without a guest: device_del is never acked, the timeout says so"
qmp "$T/vm6.qmp" stop >/dev/null
start=$(date +%s)
run detach sys1 --qmp "$T/vm6.qmp" --timeout 2; expect_rc 4 "detach from a stopped VM without a guest"
[ $(( $(date +%s) - start )) -le 5 ] || fail "--timeout 2 took $(( $(date +%s) - start )) s"
says "$T/err" "did not release device blockd-sys1 within 2 s" "timeout"
says "$T/err" "the volume stays attached" "timeout"
attached_to sys1 vm6
has_disk "$T/vm6.qmp" blockd-sys1 sys1
run detach d1 --qmp "$T/vm1.qmp" --timeout 1; expect_rc 4 "detach d1 from vm1 (no guest)"
says "$T/err" "did not release device blockd-d1" "timeout on d1"
run detach d1 --instance vm1 --qmp "$T/vm1.qmp" --timeout 1; expect_rc 4 "detach d1 again"
says "$T/err" "still pending" "second detach sees the pending unplug"
says "$T/err" "did not release" "second detach times out too"
attached_to d1 vm1
has_disk "$T/vm1.qmp" blockd-d1 d1

echo "detach --qmp when QEMU has no such device: notes, then the record goes"
run attach x1 --instance vm2 --print-args; expect_rc 0 "record x1 on vm2 (never plugged)"
run detach x1 --qmp "$T/vm2.qmp"; expect_rc 0 "detach x1 from vm2"
says "$T/err" "has no device blockd-x1" "note for the missing device"
says "$T/err" "has no block node blockd-x1" "note for the missing node"
says "$T/out" "detached volume \"x1\" from instance \"vm2\"" "detach output"
attached_to x1 ""

echo "detach without --qmp: the record only (the instance is stopped or gone)"
run detach sys1; expect_rc 0 "record-only detach"
says "$T/out" "recorded only" "record-only detach"
attached_to sys1 ""
run detach sys1; expect_rc 1 "detach what is not attached"
says "$T/err" "not attached" "not attached"
run detach d1 --instance vm2; expect_rc 1 "detach from the wrong instance"
attached_to d1 vm1
run volume delete d1; expect_rc 1 "delete an attached volume"

echo "full detach against a fake QEMU that acks the unplug: the QMP sequence"
cat >"$T/fake-qmp.py" <<'EOF'
# fake-qmp.py SOCKET LOG MODE: answers blockctl's detach like QEMU with a
# guest that acks the unplug (MODE ack) or refuses it (MODE refuse); with
# MODE drop it goes away without answering device_add
import json, os, socket, sys, time
path, log, mode = sys.argv[1:4]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(1)
while True:
    c, _ = srv.accept()
    f = c.makefile("rwb")
    def send(m):
        f.write(json.dumps(m).encode() + b"\r\n")
        f.flush()
    send({"QMP": {"version": {}, "capabilities": ["oob"]}})
    for line in f:
        m = json.loads(line)
        cmd, args, i = m["execute"], m.get("arguments", {}), m.get("id")
        with open(log, "a") as l:
            l.write("%s %s\n" % (cmd, json.dumps(args, sort_keys=True)))
        if cmd == "device_add" and mode == "drop":
            break
        if cmd == "query-status":
            send({"return": {"status": "running", "running": True}, "id": i})
        elif cmd == "device_del":
            send({"return": {}, "id": i})
            time.sleep(0.2)
            dev = args["id"]
            if mode == "ack":
                send({"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/%s/virtio-backend" % dev}})
                send({"event": "DEVICE_DELETED", "data": {"device": dev, "path": "/machine/peripheral/" + dev}})
            else:
                send({"event": "DEVICE_UNPLUG_GUEST_ERROR", "data": {"device": dev, "path": "/machine/peripheral/" + dev}})
        else:
            send({"return": {}, "id": i})
    f.close()
    c.close()
EOF
$PY "$T/fake-qmp.py" "$T/fake.qmp" "$T/fake.log" ack >"$T/fake-ack.out" 2>&1 &
QEMU_PIDS="$QEMU_PIDS $!"
$PY "$T/fake-qmp.py" "$T/refuse.qmp" "$T/refuse.log" refuse >"$T/fake-refuse.out" 2>&1 &
QEMU_PIDS="$QEMU_PIDS $!"
$PY "$T/fake-qmp.py" "$T/drop.qmp" "$T/drop.log" drop >"$T/fake-drop.out" 2>&1 &
QEMU_PIDS="$QEMU_PIDS $!"
_n=0
until [ -S "$T/fake.qmp" ] && [ -S "$T/refuse.qmp" ] && [ -S "$T/drop.qmp" ]; do
    _n=$((_n + 1)); [ $_n -lt 100 ] || fail "fake QMP servers did not start"; sleep 0.05
done
run attach f1 --instance fake1 --print-args; expect_rc 0 "record f1 on fake1"
run detach f1 --qmp "$T/fake.qmp"; expect_rc 0 "detach f1 from the acking fake"
says "$T/out" "detached volume \"f1\" from instance \"fake1\" (device blockd-f1 removed)" "full detach output"
[ ! -s "$T/err" ] || fail "full detach printed on stderr: $(cat "$T/err")"
attached_to f1 ""
cat >"$T/fake.expected" <<'EOF'
qmp_capabilities {}
query-status {}
device_del {"id": "blockd-f1"}
blockdev-del {"node-name": "blockd-f1"}
EOF
diff -u "$T/fake.expected" "$T/fake.log" || fail "detach's QMP commands"
run attach f2 --instance fake2 --print-args --role system; expect_rc 0 "record f2 on fake2"
run detach f2 --qmp "$T/fake.qmp"; expect_rc 4 "detach a system disk of a running (fake) VM"
attached_to f2 fake2
run attach f1 --instance fake3 --print-args; expect_rc 0 "record f1 on fake3"
run detach f1 --qmp "$T/refuse.qmp"; expect_rc 4 "detach from a guest that refuses"
says "$T/err" "refused to release device blockd-f1" "guest refuses"
attached_to f1 fake3
grep -q blockdev-del "$T/refuse.log" && fail "blockdev-del after a refused unplug: $(cat "$T/refuse.log")"

echo "device_add with no answer: QEMU may have plugged the disk, the record stays"
run attach g1 --instance fake4 --qmp "$T/drop.qmp"; expect_rc 4 "attach to a QEMU that goes away"
says "$T/err" "QMP device_add failed" "no answer to device_add"
says "$T/err" "the attachment record stays" "no answer to device_add"
attached_to g1 fake4
run attach g1 --instance fake5 --print-args; expect_rc 1 "another instance while the outcome is unknown"
attached_to g1 fake4
grep -q "^device_add " "$T/drop.log" || fail "device_add was not sent: $(cat "$T/drop.log")"
grep -q blockdev-del "$T/drop.log" && fail "blockdev-del after an unanswered device_add: $(cat "$T/drop.log")"

echo "blockd still consistent"
stop_blockd
check_store
echo "PASS"
