#!/bin/sh
# fio-jobs/bench-snapshot.sh — what snapshots cost (make bench-snapshot).
#
# 1. Snapshot create time against the data written in the volume (SIZES_GB,
#    default "1 8"): a snapshot only bumps a generation, so it should not grow.
# 2. Copy-on-write: fio 4k randwrite QD32 on a volume whose data is all
#    frozen by a fresh snapshot, against the same on a plain volume, for each
#    chunk size in CHUNKS (default "64K 256K 1M"): the first write to a shared
#    chunk copies the whole chunk, so small chunks cost less per write and
#    more in metadata.
#    At QD1 as well (IOPS and p99), each run after a snapshot of its own.
# 3. Large writes after a snapshot: 1 GiB written whole with 1M writes at
#    QD4, and with 4M writes at QD1 (a client with one request in flight, whose
#    large writes blockd cuts into pieces), right after a snapshot froze it,
#    against the same overwrite with no snapshot (1 MiB chunks; ROUNDS,
#    default 3): a write that covers a chunk whole needs no copy of it.
# 4. First writes to a new volume: 4k randwrite QD32 on a volume just
#    created, against the same once written whole (ROUNDS).
# Prints Markdown tables and appends nothing anywhere: copy the figures
# into docs/BENCHMARKS.md.
# QUICK=1 (a smoke run, as for make bench QUICK=1): 1 and 2 GiB, 3 s runs,
# 1 MiB chunks only, one round: about 45 s.
# Servers run on 127.0.0.1 (free ports) with data under BUILD/bench-snap.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
PY=/usr/bin/python3
W=$ROOT/$BUILD/bench-snap
if [ "${QUICK:-0}" = 1 ]; then
    SIZES_GB=${SIZES_GB:-"1 2"}
    RUNTIME=${RUNTIME:-3}
    CHUNKS=${CHUNKS:-1M}
    ROUNDS=${ROUNDS:-1}
else
    SIZES_GB=${SIZES_GB:-"1 8"}
    RUNTIME=${RUNTIME:-8}
    CHUNKS=${CHUNKS:-"64K 256K 1M"}
    ROUNDS=${ROUNDS:-3}
fi
PID=
cleanup () { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; [ -n "$KEEP" ] || rm -rf "$W"; }
trap cleanup EXIT
free_port () { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start () {   # start CHUNK: a fresh store
    [ -n "$PID" ] && { kill "$PID"; wait "$PID" 2>/dev/null || true; }
    rm -rf "$W/data"; mkdir -p "$W"
    NP=$(free_port); AP=$(free_port)
    "$BUILD/blockd" --data-dir "$W/data" --capacity 40G --chunk-size "$1" \
        --nbd "127.0.0.1:$NP" --api "127.0.0.1:$AP" --log-level warn 2>>"$W/log" &
    PID=$!
    API=http://127.0.0.1:$AP
    i=0; until curl -sf "$API/v1/health" >/dev/null; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
}
api () { curl -sf -X "$1" -d "$3" "$API$2" >/dev/null; }
fill () {   # fill VOL GB: write every byte of the first GB GiB
    fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$NP/$1" --rw=write --bs=1M --iodepth=8 \
        --size="$2"g --output=/dev/null
}
snap_ms () {   # time of POST snapshot, in ms
    curl -sf -o /dev/null -w '%{time_total}' -X POST -d "{\"name\":\"$2\"}" "$API/v1/volumes/$1/snapshots" \
        | awk '{printf "%.2f", $1 * 1000}'
}
seqwrite () {   # seqwrite VOL BS QD: MiB/s of sequential writes over the first GiB, once
    fio --name=sw --ioengine=nbd --uri="nbd://127.0.0.1:$NP/$1" --rw=write --bs="$2" --iodepth="$3" \
        --size=1g --output-format=json 2>>"$W/log" \
        | $PY -c 'import json,sys; t=sys.stdin.read(); print(int(json.loads(t[t.index("{"):])["jobs"][0]["write"]["bw"] / 1024))'
}
randwrite () {   # randwrite VOL [QD [p99]]: IOPS of 4k randwrite (QD32) over the first GiB, or its p99 in µs
    fio --name=rw --ioengine=nbd --uri="nbd://127.0.0.1:$NP/$1" --rw=randwrite --bs=4k --iodepth="${2:-32}" \
        --size=1g --runtime="$RUNTIME" --time_based --output-format=json 2>>"$W/log" \
        | $PY -c 'import json,sys; t=sys.stdin.read(); w=json.loads(t[t.index("{"):])["jobs"][0]["write"]
print(int(w["clat_ns"]["percentile"]["99.000000"] / 1000) if sys.argv[1] else int(w["iops"]))' "${3:-}"
}

echo "## Snapshot create time against written data"
echo
echo "| data written | snapshot create (API round trip) |"
echo "|---|---|"
start 1M
for gb in $SIZES_GB; do
    api POST /v1/volumes "{\"name\":\"v$gb\",\"size\":\"${gb}G\"}"
    fill "v$gb" "$gb"
    t1=$(snap_ms "v$gb" a); t2=$(snap_ms "v$gb" b); t3=$(snap_ms "v$gb" c)
    echo "| $gb GiB | $t1 ms, $t2 ms, $t3 ms |"
done
echo
echo "## First write to a shared chunk (copy-on-write) against an overwrite"
echo
echo "fio 4k randwrite QD32, ${RUNTIME} s, over 1 GiB written once; 'after snapshot' starts right"
echo "after a snapshot froze all of it, so early writes each copy a whole chunk."
echo
echo "The QD1 columns run the same at queue depth 1, after a second snapshot froze it all again,"
echo "and give IOPS and the p99 completion latency."
echo
echo "| chunk size | plain volume IOPS | after snapshot IOPS | ratio | QD1 plain | QD1 after snapshot | ratio | QD1 p99 plain | QD1 p99 after snapshot |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in $CHUNKS; do
    start "$c"
    api POST /v1/volumes '{"name":"plain","size":"1G"}'
    api POST /v1/volumes '{"name":"snapd","size":"1G"}'
    fill plain 1; fill snapd 1
    p=$(randwrite plain)
    api POST /v1/volumes/snapd/snapshots '{"name":"s"}'
    s=$(randwrite snapd)
    p1=$(randwrite plain 1); p99p=$(randwrite plain 1 p99)
    api POST /v1/volumes/snapd/snapshots '{"name":"t"}'
    s1=$(randwrite snapd 1)
    api POST /v1/volumes/snapd/snapshots '{"name":"u"}'
    p99s=$(randwrite snapd 1 p99)
    echo "| $c | $p | $s | $($PY -c "print('%.2f' % ($s / $p))") | $p1 | $s1 | $($PY -c "print('%.2f' % ($s1 / $p1))") | $p99p µs | $p99s µs |"
done
echo
echo "## Large writes right after a snapshot"
echo
echo "fio sequential writes over 1 GiB written once, 1 MiB chunks; 'after snapshot' starts"
echo "right after a snapshot froze all of it."
echo
echo "| round | job | overwrite MiB/s | after snapshot MiB/s | ratio |"
echo "|---|---|---|---|---|"
start 1M
api POST /v1/volumes '{"name":"seq","size":"1G"}'
fill seq 1
r=1
while [ $r -le "$ROUNDS" ]; do
    for job in "1M 4" "4M 1"; do
        # shellcheck disable=SC2086  # two words: block size, queue depth
        set -- $job
        p=$(seqwrite seq "$1" "$2")
        api POST /v1/volumes/seq/snapshots "{\"name\":\"s$r\"}"
        s=$(seqwrite seq "$1" "$2")
        api DELETE "/v1/snapshots/seq@s$r"
        echo "| $r | $1 QD$2 | $p | $s | $($PY -c "print('%.2f' % ($s / $p))") |"
    done
    r=$((r + 1))
done
echo
echo "## First writes to a new volume"
echo
echo "fio 4k randwrite QD32, ${RUNTIME} s, on a volume just created (every chunk's first write"
echo "allocates it), against the same volume once it is written whole (1 MiB chunks)."
echo
echo "| round | new volume IOPS | written volume IOPS | ratio |"
echo "|---|---|---|---|"
start 1M
r=1
while [ $r -le "$ROUNDS" ]; do
    api POST /v1/volumes "{\"name\":\"new$r\",\"size\":\"1G\"}"
    n=$(randwrite "new$r")
    fill "new$r" 1
    o=$(randwrite "new$r")
    api DELETE "/v1/volumes/new$r"
    echo "| $r | $n | $o | $($PY -c "print('%.2f' % ($n / $o))") |"
    r=$((r + 1))
done
