#!/bin/sh
# A clean restart (SIGTERM) and a restart after kill -9 bring back every
# volume with its size, id and data; blockd --check agrees.
. "$(dirname "$0")/lib.sh"
need nbdsh
start_blockd
ctl volume create r1 --size 1G >/dev/null
ctl volume create r2 --size 10T --type premium >/dev/null
id1=$(ctl --json volume show r1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
nbdsh -u "$(uri r1)" -c '
h.pwrite(b"\x5a" * 65536, 0)
h.pwrite(b"\x6b" * 4096, (1 << 30) - 4096)
h.flush()'
nbdsh -u "$(uri r2)" -c 'h.pwrite(b"\x7c" * 4096, 9 << 40); h.flush()'
stop_blockd
check_store
start_blockd
[ "$(ctl --json volume show r1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')" = "$id1" ] \
    || fail "volume id changed across a restart"
ctl --json volume show r2 | $PY -c '
import json, sys
v = json.load(sys.stdin)
assert v["size"] == 10 << 40, v
assert v["type"] == "premium", v
assert v["allocated"] == 1 << 20, v'
nbdsh -u "$(uri r1)" -c '
assert h.pread(65536, 0) == b"\x5a" * 65536
assert h.pread(4096, (1 << 30) - 4096) == b"\x6b" * 4096
assert h.pread(4096, 65536) == bytes(4096)
h.pwrite(b"\x01" * 4096, 8192)'
kill9_blockd
check_store
start_blockd
nbdsh -u "$(uri r1)" -c 'assert h.pread(4096, 8192) == b"\x01" * 4096'
nbdsh -u "$(uri r2)" -c 'assert h.pread(4096, 9 << 40) == b"\x7c" * 4096'
# a second blockd on the same data directory is refused with a clear error
if "$BLOCKD" --data-dir "$T/data" --nbd 127.0.0.1:0 --api 127.0.0.1:0 2>"$T/second.err"; then
    fail "a second blockd started on a data directory in use"
fi
grep -q "in use by another blockd" "$T/second.err" || { cat "$T/second.err"; fail "unclear error for a busy data directory"; }
stop_blockd
echo "PASS test-restart"
