#!/bin/sh
# fio-jobs/bench-link.sh — blockd with its client across a link.
#
# Run by `make bench-link` (as root: it makes a network namespace).  The
# other benchmarks put fio and blockd on one loopback; a VM's disk is on
# another host.  Here blockd runs in a network namespace of its own,
# reached from fio over a veth pair, shaped to LINK_RATE (tbf) on the way
# in (what writes send) and on the way out (what reads bring back).  With
# BUILD_B, two builds take turns on one data directory, so on the same
# blocks, each restarted for its run: an A/B across a link.
#
# Environment:
#   LINK_RATE=R      tbf rate each way, e.g. 10gbit, 25gbit; "none" for the
#                    bare veth pair (default 10gbit)
#   LINK_JOBS="..."  fio job options, one job per ';' (default: 1M and 4M
#                    writes and reads at QD1, 1M writes at QD4, 4k random
#                    writes at QD1)
#   BENCH_RUNTIME=S  seconds measured per run (default 6, after a 1 s ramp)
#   BENCH_ROUNDS=N   rounds (default 3)
#   BUILD=DIR        blockd's build (default build); BUILD_B=DIR a second one
#   LINK_UNWRITTEN=1 leave the volume as created: reads of never-written space
#
# Prints a line per run and a table of medians; writes nothing else.

set -e

PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
case $BUILD_B in /*|'') ;; *) BUILD_B=$ROOT/$BUILD_B ;; esac
RATE=${LINK_RATE:-10gbit}
RUNTIME=${BENCH_RUNTIME:-6}
ROUNDS=${BENCH_ROUNDS:-3}
JOBS_DEFAULT="--rw=write --bs=1m --iodepth=1;--rw=write --bs=4m --iodepth=1;--rw=write --bs=1m --iodepth=4;--rw=read --bs=1m --iodepth=1;--rw=read --bs=4m --iodepth=1;--rw=randwrite --bs=4k --iodepth=1"
LINK_JOBS=${LINK_JOBS:-$JOBS_DEFAULT}

NS=blockd-bench-$$
DEV=bdl$$
SERVER_IP=10.231.$(($$ % 200 + 10)).2
CLIENT_IP=10.231.$(($$ % 200 + 10)).1
NBD_PORT=10809
API_PORT=10810
WORK=$BUILD/bench-link
PID=

msg() { echo "bench-link: $*" >&2; }
die() { echo "bench-link: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it makes a network namespace and a veth pair)"
for c in ip tc fio; do
	command -v $c >/dev/null || die "needs $c (iproute2, fio)"
done
for b in "$BUILD" ${BUILD_B:+"$BUILD_B"}; do
	{ [ -x "$b/blockd" ] && [ -x "$b/blockctl" ]; } || die "$b/blockd or blockctl not built"
done

cleanup() {
	[ -z "$PID" ] || { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }
	ip link del "$DEV" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

rm -rf "$WORK"
mkdir -p "$WORK/data"
ip netns add "$NS"
ip link add "$DEV" type veth peer name "${DEV}s"
ip link set "${DEV}s" netns "$NS"
ip addr add "$CLIENT_IP/24" dev "$DEV"
ip link set "$DEV" up
ip netns exec "$NS" ip addr add "$SERVER_IP/24" dev "${DEV}s"
ip netns exec "$NS" ip link set "${DEV}s" up
ip netns exec "$NS" ip link set lo up
if [ "$RATE" != none ]; then
	tc qdisc add dev "$DEV" root tbf rate "$RATE" burst 256k latency 10ms
	ip netns exec "$NS" tc qdisc add dev "${DEV}s" root tbf rate "$RATE" burst 256k latency 10ms
fi
URI=nbd://$SERVER_IP:$NBD_PORT/bench

# start BUILD: blockd in the namespace on the shared data directory (its
# API is on the namespace's own loopback)
start() {
	ip netns exec "$NS" "$1/blockd" --data-dir "$WORK/data" --capacity 4G \
		--nbd "$SERVER_IP:$NBD_PORT" --api "127.0.0.1:$API_PORT" \
		>>"$WORK/blockd.log" 2>&1 &
	PID=$!
	i=0
	until BLOCKD_API=http://127.0.0.1:$API_PORT ip netns exec "$NS" "$1/blockctl" pool show \
		>/dev/null 2>&1; do
		kill -0 "$PID" 2>/dev/null || die "blockd exited at start; see $WORK/blockd.log"
		i=$((i + 1))
		[ $i -lt 200 ] || die "blockd's API does not answer; see $WORK/blockd.log"
		sleep 0.1
	done
}
stop() {
	kill "$PID" 2>/dev/null || die "blockd (pid $PID) died during the run; see $WORK/blockd.log"
	wait "$PID" 2>/dev/null || true
	PID=
}

# run JOB-OPTIONS: one fio run; prints "IOPS P50-US"
run() {
	# shellcheck disable=SC2086  # the job's options are a word list
	fio --name=link --ioengine=nbd --uri="$URI" $1 --size=1g --time_based=1 \
		--runtime="$RUNTIME" --ramp_time=1 --output-format=json \
		--output="$WORK/run.json" >/dev/null 2>&1 || die "fio failed: $1"
	$PY - "$WORK/run.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = max(j["read"], j["write"], key=lambda d: d["iops"])
print("%.0f %.1f" % (d["iops"], d["clat_ns"]["percentile"]["50.000000"] / 1000))
EOF
}

msg "link: veth $DEV, rate $RATE each way; blockd in namespace $NS at $SERVER_IP"
start "$BUILD"
BLOCKD_API=http://127.0.0.1:$API_PORT ip netns exec "$NS" "$BUILD/blockctl" volume create bench \
	--size 1G >/dev/null
if [ "${LINK_UNWRITTEN:-0}" != 1 ]; then
	fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1m --iodepth=4 --size=1g \
		>/dev/null 2>&1 || die "fill failed"
fi
stop

LABELS=A
[ -z "$BUILD_B" ] || LABELS="A B"
: >"$WORK/results.tsv"
r=1
while [ $r -le "$ROUNDS" ]; do
	msg "round $r of $ROUNDS"
	# not a pipeline: start and stop must set PID in this shell, for cleanup
	set -f
	IFS=';'
	for job in $LINK_JOBS; do
		unset IFS
		[ -n "$job" ] || continue
		for t in $LABELS; do
			if [ "$t" = A ]; then b=$BUILD; else b=$BUILD_B; fi
			start "$b"
			res=$(run "$job")
			stop
			printf '%s\t%s\t%s\n' "$job" "$t" "$res" | tee -a "$WORK/results.tsv" >&2
		done
	done
	unset IFS
	set +f
	r=$((r + 1))
done

$PY - "$WORK/results.tsv" "$RATE" "$BUILD" "$BUILD_B" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
rate, a, b = sys.argv[2], sys.argv[3], sys.argv[4]
jobs = list(dict.fromkeys(r[0] for r in rows))
print("\nlink rate %s; A = %s%s\n" % (rate, a, "; B = %s" % b if b else ""))
print("| job | build | IOPS (median) | rounds | p50 µs |%s" % (" B / A |" if b else ""))
print("|---|---|---|---|---|%s" % ("---|" if b else ""))
for job in jobs:
    med = {}
    for t in ("A", "B"):
        rs = [r[2].split() for r in rows if r[0] == job and r[1] == t]
        if not rs:
            continue
        iops = [float(x[0]) for x in rs]
        med[t] = statistics.median(iops)
        ratio = ""
        if b and t == "B" and med.get("A"):
            ratio = " %.2f× |" % (med["B"] / med["A"])
        elif b:
            ratio = " |"
        print("| `%s` | %s | %.0f | %s | %.1f |%s" % (
            job, t, med[t], " ".join("%.0f" % i for i in iops),
            statistics.median(float(x[1]) for x in rs), ratio))
EOF
