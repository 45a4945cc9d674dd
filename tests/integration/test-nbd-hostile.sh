#!/bin/sh
# tests/integration/test-nbd-hostile.sh — NBD clients that break the rules
# (tests/integration/hostile.py, raw sockets): bad client flags and option
# magic, a request before negotiation, unknown options, option lengths that
# lie (a 100 MB option that stalls must be dropped by the handshake
# timeout), export names over 4096 bytes, a 64 MiB WRITE (hard disconnect)
# and READ (NBD_EINVAL), flags a command does not allow, bad request magic,
# clients that vanish mid-message, and requests pipelined past max-inflight
# before NBD_CMD_DISC.  Each is answered as doc/proto.md says; meanwhile an
# nbdsh client doing verified I/O on another volume is not disturbed, and
# afterwards nothing is left behind: no connection counted by the API, no
# extra descriptor in blockd, `blockctl volume show` works, SIGTERM is clean.
. "$(dirname "$0")/lib.sh"
need nbdsh
$PY -c 'import nbd' 2>/dev/null || skip "skipped: $PY has no libnbd bindings (python3-libnbd)"

start_blockd --handshake-timeout 2 --max-inflight 4
ctl volume create hostile --size 64M >/dev/null
ctl volume create steady --size 64M >/dev/null

fds () { ls "/proc/$BLOCKD_PID/fd" | wc -l; }
conns () { ctl volume show "$1" --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["connections"])'; }

echo "steady client: verified writes and reads on volume steady, all along"
nbdsh -u "$(uri steady)" -c "STEADY_STOP='$T/stop'; STEADY_OUT='$T/steady.out'" \
      -c "exec(open('tests/integration/hostile.py').read())" >"$T/steady.log" 2>&1 &
STEADY_PID=$!
i=0
until [ "$(conns steady)" = 1 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "the steady client did not connect: $(cat "$T/steady.log")"
    sleep 0.05
done
sleep 0.5
base_fds=$(fds)
echo "blockd holds $base_fds descriptors with the steady client connected"

echo "hostile cases"
$PY tests/integration/hostile.py cases 127.0.0.1 "$NBD_PORT" hostile || fail "hostile cases (above)"

echo "requests pipelined past max-inflight, then NBD_CMD_DISC: all answered"
pipelined=ok
$PY tests/integration/hostile.py cases 127.0.0.1 "$NBD_PORT" hostile pipelined_disc || pipelined=failed

echo "the steady client was not disturbed"
touch "$T/stop"
wait $STEADY_PID || fail "steady client failed: $(cat "$T/steady.log")"
cat "$T/steady.out"
read -r _ ops _ errors _ worst <"$T/steady.out"
[ "$errors" = 0 ] || fail "steady client read back wrong data $errors times"
[ "$ops" -ge 100 ] || fail "steady client did only $ops operations during the hostile cases"
$PY -c "import sys; sys.exit(0 if $worst < 1.5 else 1)" || fail "a steady write+read took $worst s"

echo "nothing left behind"
i=0
until [ "$(conns hostile)" = 0 ] && [ "$(conns steady)" = 0 ] && [ "$(fds)" -le $((base_fds - 1)) ]; do
    i=$((i + 1))
    [ $i -lt 50 ] || fail "after every client left: hostile $(conns hostile) and steady $(conns steady) connections, $(fds) descriptors (steady alone: $base_fds)"
    sleep 0.1
done
ctl volume show hostile >/dev/null || fail "volume show hostile"
ss -tn state established "( sport = :$NBD_PORT )" | tail -n +2 >"$T/ss.out"
[ ! -s "$T/ss.out" ] || fail "NBD connections still established: $(cat "$T/ss.out")"
kill -0 "$BLOCKD_PID" 2>/dev/null || fail "blockd died"
nbdsh -u "$(uri hostile)" -c 'h.pwrite(b"x" * 4096, 0); assert h.pread(4096, 0) == b"x" * 4096' \
    || fail "normal I/O after the hostile cases"

stop_blockd
check_store
[ $pipelined = ok ] || fail "requests pipelined past --max-inflight before NBD_CMD_DISC were not all answered (see above)"
echo "PASS test-nbd-hostile"
