# tests/integration/lib.sh — sourced by every integration test.
# Starts a real blockd on free loopback ports with its data in a private
# directory, and always stops it (by PID) and removes the directory.
set -e
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
# relative to the checkout (another worktree's build: BUILD=../../tmp/wt/build);
# an absolute one would make its directories under the checkout
case $BUILD in /*) echo "FAIL: BUILD=$BUILD: give it relative to $ROOT"; exit 1 ;; esac
BLOCKD=$ROOT/$BUILD/blockd
BLOCKCTL=$ROOT/$BUILD/blockctl
PY=/usr/bin/python3
# nbdsh runs "python3 -m nbd": make that the system python with libnbd
PATH=/usr/bin:/bin:$PATH
export PATH
mkdir -p "$ROOT/$BUILD/tmp"
# Under the build tree, not /tmp: the pool needs a filesystem with O_DIRECT.
T=$(mktemp -d "$ROOT/$BUILD/tmp/$(basename "$0" .sh).XXXXXX")
BLOCKD_PID=
# PIDs of background helpers a test starts (stand-in servers): cleanup
# kills them, or its wait for the children would hang on them
HELPER_PIDS=
DATA_DIR=
NBD_PORT=
API_PORT=

fail () { echo "FAIL: $*"; [ -f "$T/blockd.log" ] && tail -n 30 "$T/blockd.log"; exit 1; }
skip () { echo "$*"; exit 77; }
need () { for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "skipped: $c is not installed"; done; }

free_port () {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_blockd [extra blockd flags...]: data in $DATA_DIR (default $T/data;
# removed with $T), capacity $CAPACITY
start_blockd () {
    [ -n "$NBD_PORT" ] || NBD_PORT=$(free_port)
    [ -n "$API_PORT" ] || API_PORT=$(free_port)
    "$BLOCKD" --data-dir "${DATA_DIR:-$T/data}" --capacity "${CAPACITY:-4G}" \
        --nbd "127.0.0.1:$NBD_PORT" --api "127.0.0.1:$API_PORT" \
        --log-level "${LOG_LEVEL:-info}" "$@" >>"$T/blockd.log" 2>&1 &
    BLOCKD_PID=$!
    BLOCKD_API=http://127.0.0.1:$API_PORT
    export BLOCKD_API
    _n=0
    until curl -sf "$BLOCKD_API/v1/health" >/dev/null 2>&1; do
        _n=$((_n + 1))
        kill -0 "$BLOCKD_PID" 2>/dev/null || fail "blockd exited during start-up"
        [ $_n -lt 200 ] || fail "blockd did not answer within 10 s"
        sleep 0.05
    done
}

# stop_blockd: SIGTERM and wait; fails the test if blockd did not exit 0
stop_blockd () {
    kill -TERM "$BLOCKD_PID"
    _n=0
    while kill -0 "$BLOCKD_PID" 2>/dev/null && [ $_n -lt 300 ]; do
        sleep 0.05; _n=$((_n + 1))
    done
    if kill -0 "$BLOCKD_PID" 2>/dev/null; then
        kill -ABRT "$BLOCKD_PID"
        wait "$BLOCKD_PID" 2>/dev/null
        BLOCKD_PID=
        fail "blockd did not stop within 15 s of SIGTERM"
    fi
    rc=0
    wait "$BLOCKD_PID" || rc=$?
    BLOCKD_PID=
    [ $rc -eq 0 ] || fail "blockd exited with $rc after SIGTERM"
}

kill9_blockd () {
    kill -9 "$BLOCKD_PID"
    wait "$BLOCKD_PID" 2>/dev/null || true
    BLOCKD_PID=
}

check_store () {
    "$BLOCKD" --check --data-dir "${DATA_DIR:-$T/data}" >"$T/check.out" 2>&1 || { cat "$T/check.out"; fail "blockd --check found problems"; }
}

uri () { echo "nbd://127.0.0.1:$NBD_PORT/$1"; }
# pool_field KEY: a field of GET /v1/pool
pool_field () { curl -sf "$BLOCKD_API/v1/pool" | $PY -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
ctl () { "$BLOCKCTL" "$@"; }

# ---- command checks: run CMD..., then ok WHAT or err CODE WHAT
# run CMD...: stdout in $T/out, stderr in $T/err, exit code in $rc
run () { "$@" >"$T/out" 2>"$T/err" && rc=0 || rc=$?; }
# ok WHAT: the last command succeeded, quiet on stderr
ok () {
    [ "$rc" -eq 0 ] || fail "$1: exit $rc, stderr: $(cat "$T/err")"
    [ ! -s "$T/err" ] || fail "$1: unexpected stderr: $(cat "$T/err")"
}
# err CODE WHAT: exit CODE, one line "blockctl: ..." on stderr, nothing on stdout
err () {
    [ "$rc" -eq "$1" ] || fail "$2: exit $rc, want $1 (stderr: $(cat "$T/err"))"
    [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$2: stderr is not one line: $(cat "$T/err")"
    grep -q '^blockctl: ..*' "$T/err" || fail "$2: stderr is not 'blockctl: ...': $(cat "$T/err")"
    [ ! -s "$T/out" ] || fail "$2: stdout on error: $(cat "$T/out")"
}

# ---- HTTP API checks (curl + python)
# api METHOD PATH [BODY [CONTENT-TYPE]]: status in $st, body in $T/body.
# BODY "@file" sends the file's bytes.
api () {
    m=$1 p=$2
    if [ $# -ge 3 ]; then
        case $3 in @*) cp "${3#@}" "$T/req" ;; *) printf '%s' "$3" >"$T/req" ;; esac
        st=$(curl -s -o "$T/body" -w '%{http_code}' -X "$m" -H "Content-Type: ${4-application/json}" \
                  --data-binary @"$T/req" "${A:-$BLOCKD_API}$p") || st=curl-failed
    else
        st=$(curl -s -o "$T/body" -w '%{http_code}' -X "$m" "${A:-$BLOCKD_API}$p") || st=curl-failed
    fi
}
# expect STATUS WHAT
expect () { [ "$st" = "$1" ] || fail "$2: HTTP $st, want $1; body: $(cat "$T/body")"; }
# jcheck EXPR WHAT: python EXPR over the response JSON (j) is true
jcheck () {
    $PY -c "import json,sys; j=json.loads(open(sys.argv[1], 'rb').read().decode('utf-8'))" "$T/body" 2>/dev/null \
        || fail "$2: the response body is not valid JSON in UTF-8: $(od -c "$T/body" | head -20)"
    $PY -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($1) else 1)" "$T/body" 2>/dev/null \
        || fail "$2: [$1] is false for: $(cat "$T/body")"
}
# experr STATUS CODE WHAT: an error response with the documented body
experr () {
    expect "$1" "$3"
    jcheck "list(j) == ['error'] and sorted(j['error']) == ['code', 'message'] and j['error']['code'] == '$2' and isinstance(j['error']['message'], str) and j['error']['message'].strip() != ''" "$3"
}

cleanup () {
    [ -n "$BLOCKD_PID" ] && kill -9 "$BLOCKD_PID" 2>/dev/null
    for _p in $HELPER_PIDS; do kill -9 "$_p" 2>/dev/null || true; done
    wait 2>/dev/null
    [ -n "$KEEP_TEST_DIR" ] || rm -rf "$T" ${DATA_DIR:+"$DATA_DIR"}
}
trap cleanup EXIT
trap 'exit 130' INT TERM
