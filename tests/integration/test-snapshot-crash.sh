#!/bin/sh
# kill -9 of blockd at random moments while snapshots are created and
# deleted, clones made and deleted, volumes rolled back, and a writer keeps
# copy-on-write going on a volume with snapshots.  After each kill: blockd
# --check finds the store consistent, the writer's acknowledged data is all
# there, every listed volume and snapshot export is readable, snapshots that
# existed before read exactly as before, and nothing is leaked (entries a
# copy-on-write left unseen just before the kill are freed by the next
# start, and --check says so; a clean stop leaves none).
# ITERATIONS rounds (default 4).
. "$(dirname "$0")/lib.sh"
need nbdsh
ITERATIONS=${ITERATIONS:-4}
MODEL=tests/integration/snap-model.py
start_blockd --chunk-size 1M

# A copy-on-write from a base no snapshot keeps leaves the base's entry
# unseen; blockd collects it soon after.  A kill -9 before that leaves it
# to the next start: --check says so and is not alarmed; the start frees it.
ctl volume create cow --size 8M >/dev/null
nbdsh -u "$(uri cow)" -c 'h.pwrite(b"\x11" * 4096, 0)'
ctl snapshot create cow s1 >/dev/null
ctl volume rollback cow --to s1 >/dev/null
ctl snapshot delete cow@s1 >/dev/null
# the kill comes right after the write's reply, before the collection
nbdsh -u "$(uri cow)" -c "
import os, signal
h.pwrite(b'\x22' * 4096, 8192)
os.kill($BLOCKD_PID, signal.SIGKILL)"
wait "$BLOCKD_PID" 2>/dev/null || true
BLOCKD_PID=
check_store
grep -q '^1 pool chunks are held by entries no volume or snapshot sees any more (left by a crash); blockd frees them when it next starts$' "$T/check.out" \
    || { cat "$T/check.out"; fail "--check does not report the copy-on-write's unseen entry"; }
grep -q '(not stopped cleanly)' "$T/check.out" || { cat "$T/check.out"; fail "--check takes a killed store for a clean one"; }
start_blockd --chunk-size 1M
[ "$(pool_field leaked)" = 0 ] || fail "the start did not free the unseen entry"
nbdsh -u "$(uri cow)" -c '
assert h.pread(4096, 0) == b"\x11" * 4096
assert h.pread(4096, 8192) == b"\x22" * 4096
assert h.pread(4096, 4096) == bytes(4096)'
ctl volume delete cow >/dev/null
echo "copy-on-write garbage after kill -9: reported by --check, freed by the next start"

ctl volume create crash --size 64M >/dev/null
ctl volume create churn --size 32M >/dev/null
total=0
i=1
while [ $i -le "$ITERATIONS" ]; do
    $PY tests/integration/crash-writer.py write "$(uri crash)" "$T/state.json" $i &
    wpid=$!
    $PY $MODEL churn "nbd://127.0.0.1:$NBD_PORT" churn $i crash >"$T/churn.out" 2>&1 &
    cpid=$!
    # let them run 0.5..2 s, then pull the plug
    sleep "$($PY -c "import random; print(round(random.uniform(0.5, 2.0), 2))")"
    kill -0 $cpid 2>/dev/null || { cat "$T/churn.out"; fail "iteration $i: the API loop ended while blockd was up"; }
    kill9_blockd
    wait $wpid || fail "iteration $i: writer failed"
    rc=0; wait $cpid || rc=$?
    [ $rc -eq 0 ] || { cat "$T/churn.out"; fail "iteration $i: an API call failed while blockd was up"; }
    check_store
    start_blockd --chunk-size 1M
    out=$($PY tests/integration/crash-writer.py verify "$(uri crash)" "$T/state.json") \
        || { echo "$out"; fail "iteration $i: acknowledged data lost"; }
    coh=$($PY $MODEL coherent "nbd://127.0.0.1:$NBD_PORT" "$T/digests.json") \
        || { echo "$coh"; fail "iteration $i: state after restart is not coherent"; }
    echo "iteration $i: $(cat "$T/churn.out"); $out"
    echo "  $coh"
    total=$((total + $(echo "$out" | sed -n 's/.*(\([0-9]*\) bytes).*/\1/p')))
    i=$((i + 1))
done
stop_blockd
check_store
# a clean stop collects everything (--check fails on what it left)
grep -q '(stopped cleanly)' "$T/check.out" || { cat "$T/check.out"; fail "--check does not see the clean stop"; }
echo "kill -9 iterations: $ITERATIONS, bytes verified: $total"
echo "PASS test-snapshot-crash"
