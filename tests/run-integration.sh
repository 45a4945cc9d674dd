#!/bin/sh
# Run the integration tests (tests/integration/test-*.sh), or those named
# on the command line.  Each test starts what it needs and cleans up; exit
# 77 means skipped (with the reason on its output).  A test still running
# after $TEST_TIMEOUT seconds (900) is stopped, with the processes it
# started (timeout signals its process group), and fails.
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
export BUILD
pass=0 fail=0 skip=0 failed=""
tests=${*:-$(ls tests/integration/test-*.sh)}
for t in $tests; do
    [ -f "$t" ] || t=tests/integration/$t.sh
    name=$(basename "$t" .sh)
    log=$BUILD/test-logs/$name.log
    mkdir -p "$BUILD/test-logs"
    start=$(date +%s)
    timeout -k 30 "${TEST_TIMEOUT:-900}" sh "$t" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    [ $rc -eq 124 ] && echo "timed out after ${TEST_TIMEOUT:-900} s" >>"$log"
    case $rc in
    0)  pass=$((pass + 1)); echo "PASS $name (${secs}s)" ;;
    77) skip=$((skip + 1)); echo "SKIP $name: $(tail -n 1 "$log")" ;;
    *)  fail=$((fail + 1)); failed="$failed $name"
        echo "FAIL $name (exit $rc, ${secs}s); last lines of $log:"
        tail -n 25 "$log" | sed 's/^/    /' ;;
    esac
done
echo "integration: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || { echo "failed:$failed"; exit 1; }
