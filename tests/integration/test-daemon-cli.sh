#!/bin/sh
# blockd's own command line: --help, --dump-config, --config FILE (flags
# win over the file), bad settings, --nbd-unix, --hole-replies, and --run
# (captive mode).
. "$(dirname "$0")/lib.sh"
need nbdinfo nbdsh

"$BLOCKD" --help | grep -q -- "--data-dir DIR" || fail "--help does not describe --data-dir"
"$BLOCKD" --help | grep -q -- "--nbd-unix" || fail "--help does not describe --nbd-unix"

# every setting round-trips through --dump-config and --config
cat >"$T/blockd.conf" <<CONF
# a comment
data-dir = "$T/conf-data"
capacity = 2G
threads = 1
log-level = warn
CONF
"$BLOCKD" --config "$T/blockd.conf" --threads 2 --dump-config >"$T/dump"
grep -q '^capacity = 2G$' "$T/dump" || { cat "$T/dump"; fail "config file capacity not applied"; }
grep -q '^threads = 2$' "$T/dump" || { cat "$T/dump"; fail "a flag did not override the config file"; }
grep -q "^data-dir = \"$T/conf-data\"$" "$T/dump" || { cat "$T/dump"; fail "config data-dir not applied"; }
"$BLOCKD" --config "$T/dump" --dump-config | cmp -s - "$T/dump" || fail "--dump-config output does not read back the same"

# bad settings: a clear one-line error and exit 2
for args in "--capacity 10X" "--threads 0" "--nbd nowhere" "--no-such-flag 1" "--log-level loud"; do
    rc=0
    # shellcheck disable=SC2086
    "$BLOCKD" $args --dump-config >/dev/null 2>"$T/err" || rc=$?
    [ $rc -eq 2 ] || fail "blockd $args: exit $rc, want 2"
    [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q '^blockd: ' "$T/err" || { cat "$T/err"; fail "blockd $args: unclear error"; }
done
printf 'capacity 5G\n' >"$T/bad.conf"
rc=0; "$BLOCKD" --config "$T/bad.conf" --dump-config >/dev/null 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -q 'bad.conf:1' "$T/err" || { cat "$T/err"; fail "a bad config line is not reported with its line number"; }

# unix socket listener
SOCK=$T/nbd.sock
start_blockd --nbd-unix "$SOCK"
ctl volume create u1 --size 64M >/dev/null
nbdinfo --size "nbd+unix:///u1?socket=$SOCK" | grep -qx 67108864 || fail "volume not served on the unix socket"
nbdsh -u "nbd+unix:///u1?socket=$SOCK" -c 'h.pwrite(b"u" * 4096, 0); h.flush()'
nbdsh -u "$(uri u1)" -c 'assert h.pread(4096, 0) == b"u" * 4096'
stop_blockd
[ ! -e "$SOCK" ] || fail "the unix socket was left behind after a clean stop"

# hole-replies: a never-written range goes back as an OFFSET_HOLE chunk
# (tests/integration/nbd-edges.py), or with 0 as its zeros in a data chunk
for hr in 1 0; do
    start_blockd --hole-replies $hr
    nbdsh -u "$(uri u1)" -c "
kinds = []
data = h.pread_structured(65536, 1 << 20, lambda sub, o, st, err: kinds.append(st) or 0)
assert data == bytes(65536), 'a hole does not read as zeros'
want = nbd.READ_HOLE if $hr else nbd.READ_DATA
assert kinds == [want], 'hole-replies $hr: chunk statuses %r' % kinds" || fail "hole-replies $hr"
    stop_blockd
done

# captive mode: blockd --run CMD exits with CMD's status after stopping
P1=$(free_port); P2=$(free_port)
rc=0
BLOCKCTL=$BLOCKCTL "$BLOCKD" --data-dir "$T/data" --nbd "127.0.0.1:$P1" --api "127.0.0.1:$P2" --log-level warn --run '
    set -e
    "$BLOCKCTL" volume create cap --size 16M >/dev/null
    nbdsh -u "$BLOCKD_NBD/cap" -c "h.pwrite(b\"c\" * 512, 0)"
    exit 7' 2>"$T/run.err" || rc=$?
[ $rc -eq 7 ] || { cat "$T/run.err"; fail "--run: exit $rc, want the command's 7"; }
check_store
echo "PASS test-daemon-cli"
