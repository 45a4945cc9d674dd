#!/bin/sh
# fio-jobs/bench.sh — blockd side by side with qemu-nbd, nbdkit and the local disk.
#
# Run by `make bench`.  Starts every target on 127.0.0.1, writes 1 GiB into each
# (blockd-unwritten's volume stays unwritten: it runs the read jobs only;
# blockd-mem keeps its pool in memory, on tmpfs: it runs the write jobs only;
# the targets that write with O_DIRECT share blockd's blocks, see "same blocks"),
# then runs every job (fio's, and the qemu-* jobs with QEMU's own NBD client,
# qemu-img bench) against every target in turn (one job on all targets
# before the next job), ROUNDS times, and reports medians: a Markdown table per
# job and one of blockd against its goals (on the medians and round by round)
# on stdout, build/bench/results.json, and docs/BENCHMARKS.md.
#
# Environment:
#   QUICK=1               2 s per run without a ramp, 1 round, without the
#                         QD1 qemu-img jobs and blockd-mem (a smoke run of a
#                         few minutes)
#   BENCH_RUNTIME=S       seconds measured per run (default 10; QUICK: 2)
#   BENCH_ROUNDS=N (or R) rounds (default 3; QUICK: 1)
#   TARGETS="a b"         subset of: blockd blockd-unwritten blockd-mem qemu-nbd-none
#                         qemu-nbd-wb nbdkit-file nbdkit-null local-uring
#   JOBS="a b"            subset of the jobs (bench-report.py jobs lists them)
#   BUILD=DIR             build directory (default build)
#   BUILD_B=DIR           also run target "blockd-b": the blockd of another build
#                         (an A/B comparison in the same interleaved run)
#   BLOCKD_ARGS, BLOCKD_B_ARGS   extra blockd options for blockd,
#                         blockd-unwritten and blockd-mem / blockd-b
#   BENCH_MEM_DIR=DIR     where blockd-mem's data directory goes (default
#                         /dev/shm; it needs 2 GiB free)
# A run filtered by TARGETS or JOBS does not rewrite docs/BENCHMARKS.md.

set -e

ALL_TARGETS="blockd blockd-unwritten blockd-mem qemu-nbd-none qemu-nbd-wb nbdkit-file nbdkit-null local-uring"
[ -z "$BUILD_B" ] || ALL_TARGETS="$ALL_TARGETS blockd-b"
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"
HELPER="$HERE/bench-report.py"

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
case $BUILD_B in /*|'') ;; *) BUILD_B=$ROOT/$BUILD_B ;; esac
BENCH=$BUILD/bench
DATA=$BENCH/data
RUNS=$BENCH/runs
LOGS=$BENCH/logs
TFILE=$BENCH/targets.tsv

if [ "${QUICK:-0}" = 1 ]; then
	# ~65 runs: with a ramp each, or 3 s each, make bench QUICK=1 (this and
	# bench-snapshot.sh) took past five minutes (3 s: 4 min here, 6 in all)
	RUNTIME=${BENCH_RUNTIME:-2}
	ROUNDS=${BENCH_ROUNDS:-${R:-1}}
	RAMP=0
else
	RUNTIME=${BENCH_RUNTIME:-10}
	ROUNDS=${BENCH_ROUNDS:-${R:-3}}
	RAMP=1
fi
if [ -n "$TARGETS$JOBS" ]; then FILTERED=yes; else FILTERED=no; fi
TARGETS_GIVEN=${TARGETS:+yes}
# without NAME WORDS...: the WORDS but NAME, one space between them
without() {
	n=$1 out=
	shift
	for w; do [ "$w" = "$n" ] || out="${out:+$out }$w"; done
	echo "$out"
}
DEFAULT_TARGETS=$ALL_TARGETS
# blockd-mem would take QUICK past five minutes
# shellcheck disable=SC2086  # a word list
[ "${QUICK:-0}" != 1 ] || DEFAULT_TARGETS=$(without blockd-mem $ALL_TARGETS)
# shellcheck disable=SC2086,SC2116  # one space between names, whatever the caller used
TARGETS=$(echo ${TARGETS:-$DEFAULT_TARGETS})

msg() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

seen=
for t in $TARGETS; do
	case " $ALL_TARGETS " in *" $t "*) ;; *) die "unknown target \"$t\" in TARGETS (known: $ALL_TARGETS)" ;; esac
	case " $seen " in *" $t "*) die "target \"$t\" is named twice in TARGETS" ;; esac
	seen="$seen $t"
done
case $RUNTIME in ''|*[!0-9]*) die "BENCH_RUNTIME must be whole seconds, not \"$RUNTIME\"" ;; esac
case $ROUNDS in ''|*[!0-9]*|0) die "BENCH_ROUNDS must be a positive number, not \"$ROUNDS\"" ;; esac
if [ "${QUICK:-0}" = 1 ]; then QUICKJOBS=--quick; else QUICKJOBS=; fi
JOBLIST=$($PY "$HELPER" jobs $QUICKJOBS ${JOBS:+--only "$JOBS"})

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
need fio "install the fio package"
case " $JOBLIST " in *" qemu-"*) need qemu-img "install qemu-utils" ;; esac
need nbdinfo "install libnbd-bin"
case " $TARGETS " in *" qemu-nbd"*) need qemu-nbd "install qemu-utils" ;; esac
case " $TARGETS " in *" nbdkit"*) need nbdkit "install nbdkit" ;; esac
case " $TARGETS " in *" blockd "* | *" blockd-unwritten "* | *" blockd-mem "*)
	if [ ! -x "$BUILD/blockd" ] || [ ! -x "$BUILD/blockctl" ]; then
		die "$BUILD/blockd or blockctl not built (run make)"
	fi ;;
esac
case " $TARGETS " in *" blockd-b "*)
	if [ ! -x "$BUILD_B/blockd" ] || [ ! -x "$BUILD_B/blockctl" ]; then
		die "$BUILD_B/blockd or blockctl not built (run make BUILD=$BUILD_B binaries)"
	fi ;;
esac

# blockd-mem's data directory: on tmpfs, 1 GiB written and some room.
# Asked for by name, a missing one is an error; in the default set it is
# left out with a word.
MEMDIR=
case " $TARGETS " in *" blockd-mem "*)
	memroot=${BENCH_MEM_DIR:-/dev/shm}
	why=
	if [ ! -d "$memroot" ] || [ ! -w "$memroot" ]; then
		why="$memroot is not a writable directory"
	elif fs=$(stat -f -c %T "$memroot") && [ "$fs" != tmpfs ] && [ "$fs" != ramfs ]; then
		why="$memroot is on $fs, not in memory (tmpfs)"
	elif [ "$(df -Pk "$memroot" | awk 'NR == 2 { print $4 }')" -lt 2097152 ]; then
		why="$memroot has less than 2 GiB free"
	fi
	if [ -z "$why" ]; then
		MEMDIR=$(mktemp -d "$memroot/blockd-bench.XXXXXX")
	elif [ -n "$TARGETS_GIVEN" ]; then
		die "blockd-mem: $why (set BENCH_MEM_DIR to a tmpfs directory)"
	else
		msg "blockd-mem left out: $why (set BENCH_MEM_DIR to a tmpfs directory)"
		# shellcheck disable=SC2086  # a word list
		TARGETS=$(without blockd-mem $TARGETS)
	fi ;;
esac

# Every server we start is recorded here and stopped by PID on exit.
PIDS=
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	for p in $PIDS; do wait "$p" 2>/dev/null || true; done
	rm -rf "$DATA" "$BENCH"/*.pid
	[ -z "$MEMDIR" ] || rm -rf "$MEMDIR"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$DATA" "$RUNS" "$LOGS" "$TFILE"
mkdir -p "$DATA" "$RUNS" "$LOGS"
: >"$TFILE"

# wait_nbd URI PID NAME: wait until the server answers an NBD handshake.
wait_nbd() {
	i=0
	while ! nbdinfo --size "$1" >/dev/null 2>&1; do
		kill -0 "$2" 2>/dev/null || die "$3 exited at start; see $LOGS/$3.log"
		i=$((i + 1))
		[ $i -lt 200 ] || die "$3 does not answer on $1 after 20 s; see $LOGS/$3.log"
		sleep 0.1
	done
}

# fill_nbd URI / fill_file PATH: write the first 1 GiB once, sequentially.
fill_nbd() {
	fio --name=fill --ioengine=nbd --uri="$1" --rw=write --bs=1M --iodepth=4 \
		--size=1g --output=/dev/null >/dev/null
}
fill_file() {
	fio --name=fill --ioengine=io_uring --direct=1 --filename="$1" --rw=write \
		--bs=1M --iodepth=4 --size=1g --output=/dev/null >/dev/null
}

# add_target NAME KIND URI-OR-PATH PID DESCRIPTION [JOBS [STATS-URL]]: verify,
# probe multi-conn, record.  JOBS "reads": the target runs only the read
# jobs ("writes": only those that write).  STATS-URL: a blockd volume's
# stats, from which each run takes the time its requests spent in blockd.
add_target() {
	mc=-
	if [ "$2" = nbd ]; then
		wait_nbd "$3" "$4" "$1"
		if nbdinfo --can multi-conn "$3" 2>/dev/null; then mc=yes; else mc=no; fi
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$mc" "$5" "${6:-all}" "${7:--}" \
		>>"$TFILE"
	msg "$1 ready: $3 (pid $4, multi-conn $mc)"
}

# start_blockd NAME BUILD NBD-PORT API-PORT EXTRA-ARGS [unwritten|memory]: a
# blockd with a 1 GiB volume, filled; "unwritten" leaves the volume as
# created, so that reads are answered from its map with zeros, without disk
# I/O; "memory" says that its data directory is on tmpfs.
start_blockd() {
	mkdir -p "$DATA/$1"
	# shellcheck disable=SC2086  # EXTRA-ARGS is a word list
	"$2/blockd" --data-dir "$DATA/$1" --capacity 4G \
		--nbd "127.0.0.1:$3" --api "127.0.0.1:$4" $5 \
		>"$LOGS/$1.log" 2>&1 &
	pid=$!
	PIDS="$PIDS $pid"
	api=http://127.0.0.1:$4
	i=0
	until BLOCKD_API=$api "$2/blockctl" pool show >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || die "$1 exited at start; see $LOGS/$1.log"
		i=$((i + 1))
		[ $i -lt 200 ] || die "$1 API does not answer on $api; see $LOGS/$1.log"
		sleep 0.1
	done
	BLOCKD_API=$api "$2/blockctl" volume create bench --size 1G >/dev/null
	uri=nbd://127.0.0.1:$3/bench
	wait_nbd "$uri" "$pid" "$1"
	desc="blockd, 1 GiB volume in a 4 GiB pool (default settings: $(nproc) threads, 1 MiB chunks)"
	jobs=all
	if [ "$6" = unwritten ]; then
		desc="$desc, never written: reads are answered from the volume's map without disk I/O, their zeros sent as data as nbdkit null sends them (--hole-replies 0): blockd's network path alone (read jobs only)"
		jobs=reads
	else
		fill_nbd "$uri"
	fi
	if [ "$6" = memory ]; then
		desc="$desc, its pool file on tmpfs: blockd's own path with memory for a disk, where a write costs a copy instead of the disk's time (write jobs only)"
		jobs=writes
	fi
	[ -z "$5" ] || desc="$desc; $5"
	if [ "$1" = blockd-b ]; then
		desc="$desc; build $2"
		[ -z "$POOL" ] || desc="$desc; its pool file is blockd's (a hard link)"
	fi
	add_target "$1" nbd "$uri" "$pid" "$desc" "$jobs" "$api/v1/volumes/bench/stats"
}

# shellcheck disable=SC2046  # twelve port numbers
set -- $($PY "$HELPER" ports 12)
P_BLOCKD=$1 P_API=$2 P_QNONE=$3 P_QWB=$4 P_NKFILE=$5 P_NKNULL=$6 P_BLOCKD_B=$7 P_API_B=$8
P_UNW=$9 P_API_UNW=${10} P_MEM=${11} P_API_MEM=${12}

# Same blocks.  The disk under this machine writes at different speeds in
# different places: 4k random writes at QD32 (fio, io_uring, O_DIRECT) on
# 1 GiB files just filled ran at 71k..106k IOPS, 94k..132k ten minutes
# later, and 152k..199k on one filled hours before; reads were the same on
# all of them.  With each target on its own new file, that placement decided
# the write figures (blockd 80.6k against local io_uring's 161k in one run,
# 67k against 65k in another).  So the targets that write with O_DIRECT use
# the same blocks: blockd's volume is the first 1 GiB of its pool file after
# the fill, local io_uring and qemu-nbd --cache=none work on that 1 GiB, and
# blockd-b's pool file is a hard link to blockd's.  blockd-b starts with an
# empty store, punches every chunk it sees as free (all of them) and fills
# its volume again: the shared blocks are then those of that second fill.
# Both must size the pool alike (no --capacity in BLOCKD_ARGS or
# BLOCKD_B_ARGS): a new store sizes its pool file, the shared one too.
# The page-cache targets keep files of their own: their dirty pages in the
# shared file would be written back during, and charged to, the O_DIRECT
# targets' runs.  blockd is set up first; without it every target has its
# own file.
POOL=''
POOL_DESC=''
SETUP=$TARGETS
# shellcheck disable=SC2086  # a word list
case " $TARGETS " in *" blockd "*) SETUP="blockd $(without blockd $TARGETS)" ;; esac

msg "setup: $ROUNDS round(s), ${RUNTIME} s per run (+${RAMP} s ramp), data in $DATA"
# shellcheck disable=SC2086  # SETUP is a word list
for t in $SETUP; do
	case $t in
	blockd)
		start_blockd blockd "$BUILD" "$P_BLOCKD" "$P_API" "$BLOCKD_ARGS"
		POOL=$DATA/blockd/pool.dat
		POOL_DESC="the first 1 GiB of blockd's pool file, the blocks of blockd's volume"
		;;
	blockd-b)
		if [ -n "$POOL" ]; then
			case "$BLOCKD_ARGS $BLOCKD_B_ARGS" in *--capacity*)
				die "blockd-b shares blockd's pool file: --capacity in BLOCKD_ARGS or BLOCKD_B_ARGS would resize it under blockd" ;;
			esac
			mkdir -p "$DATA/blockd-b"
			ln "$POOL" "$DATA/blockd-b/pool.dat" ||
				die "cannot hard-link $POOL for blockd-b (run blockd-b without blockd)"
		fi
		start_blockd blockd-b "$BUILD_B" "$P_BLOCKD_B" "$P_API_B" "$BLOCKD_B_ARGS"
		;;
	blockd-unwritten)
		# zeros on the wire, as nbdkit null sends them (a build from
		# before hole replies sends them anyway)
		unw_args=$BLOCKD_ARGS
		if "$BUILD/blockd" --help 2>&1 | grep -q -- --hole-replies; then
			unw_args="$unw_args --hole-replies 0"
		fi
		start_blockd blockd-unwritten "$BUILD" "$P_UNW" "$P_API_UNW" "$unw_args" unwritten
		;;
	blockd-mem)
		ln -s "$MEMDIR" "$DATA/blockd-mem"
		start_blockd blockd-mem "$BUILD" "$P_MEM" "$P_API_MEM" "$BLOCKD_ARGS" memory
		;;
	qemu-nbd-none|qemu-nbd-wb)
		if [ "$t" = qemu-nbd-none ]; then
			port=$P_QNONE cache="--cache=none --aio=io_uring"
			desc="qemu-nbd --shared=8 --cache=none --aio=io_uring on a raw file (O_DIRECT)"
		else
			port=$P_QWB cache=
			desc="qemu-nbd --shared=8 on a raw file, default cache (writeback: page cache)"
		fi
		if [ "$t" = qemu-nbd-none ] && [ -n "$POOL" ]; then
			# a comma in an --image-opts value is written twice
			set -- --image-opts "driver=raw,size=1073741824,file.driver=file,file.filename=$(printf %s "$POOL" | sed 's/,/,,/g')"
			desc="$desc; $POOL_DESC"
		else
			f=$DATA/$t.raw
			fill_file "$f"
			set -- -f raw "$f"
		fi
		# shellcheck disable=SC2086  # cache is a word list
		qemu-nbd -t -p "$port" -b 127.0.0.1 --shared=8 $cache "$@" \
			>"$LOGS/$t.log" 2>&1 &
		pid=$!
		PIDS="$PIDS $pid"
		add_target "$t" nbd "nbd://127.0.0.1:$port/" "$pid" "$desc"
		;;
	nbdkit-file|nbdkit-null)
		if [ "$t" = nbdkit-file ]; then
			f=$DATA/nbdkit-file.raw
			fill_file "$f"
			port=$P_NKFILE
			set -- file "file=$f"
			desc="nbdkit file plugin on a raw file (default: page cache)"
		else
			port=$P_NKNULL
			set -- null size=1G
			desc="nbdkit null size=1G: no I/O at all, which the goals take as the ceiling of fio's nbd engine"
		fi
		pidfile=$BENCH/$t.pid
		rm -f "$pidfile"
		nbdkit -f -p "$port" -i 127.0.0.1 --pidfile "$pidfile" "$@" \
			>"$LOGS/$t.log" 2>&1 &
		PIDS="$PIDS $!"
		i=0
		while [ ! -s "$pidfile" ]; do
			i=$((i + 1))
			[ $i -lt 100 ] || die "$t did not write $pidfile; see $LOGS/$t.log"
			sleep 0.1
		done
		pid=$(cat "$pidfile")
		case " $PIDS " in *" $pid "*) ;; *) PIDS="$PIDS $pid" ;; esac
		uri=nbd://127.0.0.1:$port/
		[ "$t" = nbdkit-file ] || fill_nbd "$uri"  # null: nothing to fill
		add_target "$t" nbd "$uri" "$pid" "$desc"
		;;
	local-uring)
		desc="fio ioengine=io_uring direct=1 on a file in the same filesystem: the disk without network"
		if [ -n "$POOL" ]; then
			f=$POOL
			desc="$desc; $POOL_DESC"
		else
			f=$DATA/local.raw
			fill_file "$f"
			desc="$desc; a 1 GiB file of its own"
		fi
		add_target local-uring file "$f" - "$desc"
		;;
	esac
done

# rotate N WORDS...: WORDS rotated left by N (round r starts with target r).
rotate() {
	n=$1
	shift
	while [ "$n" -gt 0 ]; do
		x=$1
		shift
		set -- "$@" "$x"
		n=$((n - 1))
	done
	echo "$@"
}
# shellcheck disable=SC2086  # TARGETS and JOBLIST are word lists
ntargets=$(echo $TARGETS | wc -w)

r=1
while [ $r -le "$ROUNDS" ]; do
	msg "round $r of $ROUNDS"
	# shellcheck disable=SC2086
	order=$(rotate $(((r - 1) % ntargets)) $TARGETS)
	for job in $JOBLIST; do
		for t in $order; do
			sync  # no dirty pages of the previous run are written back during this one
			$PY "$HELPER" run --targets "$TFILE" --target "$t" --job "$job" \
				--round $r --runtime "$RUNTIME" --ramp $RAMP --out-dir "$RUNS"
		done
	done
	r=$((r + 1))
done

docs=
if [ $FILTERED = no ]; then
	docs=$ROOT/docs/BENCHMARKS.md
else
	msg "TARGETS or JOBS set: docs/BENCHMARKS.md left as it is"
fi
$PY "$HELPER" report --targets "$TFILE" --runs "$RUNS" --json "$BENCH/results.json" \
	--data-dir "$DATA" ${docs:+--docs "$docs"} \
	--settings "rounds=$ROUNDS runtime=$RUNTIME ramp=$RAMP quick=${QUICK:-0}"
msg "results in $BENCH/results.json${docs:+ and docs/BENCHMARKS.md}"
