#!/bin/sh
# kill -9 of blockd while a writer runs: after a restart every acknowledged
# write is there (flushed ones a fortiori), blockd --check finds the store
# consistent, and the volume keeps working.  ITERATIONS (default 3) rounds;
# `make check-long` runs 50.
. "$(dirname "$0")/lib.sh"
need nbdsh
ITERATIONS=${ITERATIONS:-3}
start_blockd
ctl volume create crash --size 64M >/dev/null
total=0
i=1
while [ $i -le "$ITERATIONS" ]; do
    $PY tests/integration/crash-writer.py write "$(uri crash)" "$T/state.json" $i &
    wpid=$!
    # let it run 0.3..1.2 s, then pull the plug
    sleep "$($PY -c "import random; print(round(random.uniform(0.3, 1.2), 2))")"
    kill9_blockd
    wait $wpid || fail "writer failed"
    check_store
    start_blockd
    out=$($PY tests/integration/crash-writer.py verify "$(uri crash)" "$T/state.json") \
        || { echo "$out"; fail "iteration $i: acknowledged data lost"; }
    echo "iteration $i: $out"
    total=$((total + $(echo "$out" | sed -n 's/.*(\([0-9]*\) bytes).*/\1/p')))
    i=$((i + 1))
done
# a clean stop afterwards is still clean
stop_blockd
check_store
echo "kill -9 iterations: $ITERATIONS, bytes verified: $total"
echo "PASS test-kill9"
