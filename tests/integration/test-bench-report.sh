#!/bin/sh
# make bench's report (fio-jobs/bench-report.py) on made-up runs: the goals
# table computes each goal on the medians and round by round, takes the
# lower of two references in each round, leaves out a goal whose reference
# was not measured, and bounds each goal against local io_uring alone by
# the servers without disk I/O.
. "$(dirname "$0")/lib.sh"

R=$T/runs
mkdir -p "$R"
printf 'blockd\tnbd\tnbd://127.0.0.1:1/x\t-\tyes\tblockd\n' >"$T/targets.tsv"
printf 'qemu-nbd-none\tnbd\tnbd://127.0.0.1:2/\t-\tyes\tqemu-nbd\n' >>"$T/targets.tsv"
printf 'nbdkit-null\tnbd\tnbd://127.0.0.1:3/\t-\tyes\tnull\n' >>"$T/targets.tsv"
printf 'local-uring\tfile\t/dev/null\t-\t-\tlocal\n' >>"$T/targets.tsv"
printf 'blockd-unwritten\tnbd\tnbd://127.0.0.1:4/x\t-\tyes\tblockd\treads\n' >>"$T/targets.tsv"
printf 'blockd-mem\tnbd\tnbd://127.0.0.1:5/x\t-\tyes\tblockd\twrites\n' >>"$T/targets.tsv"

# rec JOB TARGET ROUND IOPS P50 [IOS_PER_CPU [LAT_P50]]
rec() {
    printf '{"job":"%s","target":"%s","round":%s,"iops":%s,"mib_s":1,"p50_us":%s,"p99_us":1,"lat_p50_us":%s,"server_cpu_s_per_s":1,"ios_per_server_cpu_s":%s,"fio_cpu_s_per_s":1,"machine_cpu_busy_s_per_s":1}\n' \
        "$1" "$2" "$3" "$4" "$5" "${7:-null}" "${6:-null}" >"$R/$1.$2.r$3.json"
}
# randread QD32: blockd 100k/90k against qemu-nbd 40k/40k: 2.50x held in
# round 1 only; on the medians 95k/40k = 2.38x, not held
rec randread-4k-qd32 blockd 1 100000 10 150000
rec randread-4k-qd32 blockd 2 90000 10 150000
rec randread-4k-qd32 qemu-nbd-none 1 40000 10
rec randread-4k-qd32 qemu-nbd-none 2 40000 10
# the machine's limit is the lower of nbdkit null and local io_uring in each
# round: round 1 min(110k, 95k) = 95k (1.05x), round 2 min(80k, 120k) = 80k
# (1.13x); medians 95k / min(95k, 107.5k) = 1.00x
rec randread-4k-qd32 nbdkit-null 1 110000 10 100000
rec randread-4k-qd32 nbdkit-null 2 80000 10 100000
rec randread-4k-qd32 local-uring 1 95000 10
rec randread-4k-qd32 local-uring 2 120000 10
# QD1 latency is total latency (lat), not completion latency (p50, clat):
# 66.4 - 54 = +12.4 us, then 60 - 54 = +6 us (on clat it would be +21.5
# and +15)
rec randread-4k-qd1 blockd 1 10000 61.5 null 66.4
rec randread-4k-qd1 blockd 2 10000 55 null 60
rec randread-4k-qd1 local-uring 1 20000 40 null 54
rec randread-4k-qd1 local-uring 2 20000 40 null 54
# what any NBD server can show against local io_uring here: for QD1 the
# latency of the quicker server without disk I/O (blockd-unwritten's 18
# against nbdkit null's 30), +18 us, allows the goal
rec randread-4k-qd1 nbdkit-null 1 30000 25 null 30
rec randread-4k-qd1 nbdkit-null 2 30000 25 null 30
rec randread-4k-qd1 blockd-unwritten 1 40000 15 null 18
rec randread-4k-qd1 blockd-unwritten 2 40000 15 null 18
# for throughput the higher ratio of the two to local io_uring: 128k reads
# blockd-unwritten's 12k/10k = 1.20x (nbdkit null's 0.80x), which allows the
# goal; 128k writes (no blockd-unwritten) nbdkit null's 8k/10k = 0.80x,
# which misses the goal that blockd (9k, 0.90x) meets
rec seqread-128k-qd8 blockd 1 8500 100
rec seqread-128k-qd8 nbdkit-null 1 8000 100
rec seqread-128k-qd8 blockd-unwritten 1 12000 100
rec seqread-128k-qd8 local-uring 1 10000 100
rec seqwrite-128k-qd8 blockd 1 9000 100
rec seqwrite-128k-qd8 nbdkit-null 1 8000 100
rec seqwrite-128k-qd8 local-uring 1 10000 100
# 1M writes: blockd-mem (its pool in memory) is a server without disk I/O
# too: its 2.6k/2k = 1.30x allows the goal where nbdkit null's 0.50x misses
rec seqwrite-1m-qd4 blockd 1 1800 100
rec seqwrite-1m-qd4 nbdkit-null 1 1000 100
rec seqwrite-1m-qd4 blockd-mem 1 2600 100
rec seqwrite-1m-qd4 local-uring 1 2000 100
# QD1 writes with no server without disk I/O: the bound is n/a
rec randwrite-4k-qd1 blockd 1 10000 60 null 70
rec randwrite-4k-qd1 local-uring 1 20000 40 null 54
# 4 connections against one: 120k against 100k and 90k
rec randread-4k-qd32-4conn blockd 1 120000 10
rec randread-4k-qd32-4conn blockd 2 120000 10
# randwrite QD32 without qemu-nbd: no row for the goal that needs it
rec randwrite-4k-qd32 blockd 1 50000 10
rec randwrite-4k-qd32 nbdkit-null 1 100000 10
rec randwrite-4k-qd32 local-uring 1 100000 10

"$PY" fio-jobs/bench-report.py report --targets "$T/targets.tsv" --runs "$R" \
    --json "$T/results.json" >"$T/out" || fail "report failed"
sed -n '/^### goals/,$p' "$T/out" >"$T/goals"
cat "$T/goals"

row() { grep -F "| $1 |" "$T/goals" || fail "no goal row for: $1"; }
want() { row "$1" | grep -qF "$2" || fail "goal \"$1\": want \"$2\" in: $(row "$1")"; }
want "4k randread QD32 ≥ 2.5× qemu-nbd --cache=none" "| 95,000 | 40,000 | 2.38× | **no** | 2.25× … 2.50× | 1 of 2 |"
want "4k randread QD32 ≥ 0.9× min(nbdkit null, local io_uring)" "| 95,000 | 95,000 | 1.00× | yes | 1.05× … 1.12× | 2 of 2 |"
want "4k randread QD1 p50 latency ≤ local io_uring + 20 µs" "| 63.2 | 54.0 | +9.2 µs | yes | +6.0 µs … +12.4 µs | 2 of 2 |"
# the job tables show both: p50 (clat) 58.2, lat p50 63.2
sed -n '/^### randread-4k-qd1$/,/^### /p' "$T/out" | grep -q "^| blockd | 10,000 | .* | 58.2 | 1.0 | 63.2 |" \
    || fail "randread-4k-qd1's table lacks clat and lat p50: $(sed -n '/^### randread-4k-qd1$/,/^### /p' "$T/out")"
want "4k randread QD32 IOs per server CPU-s ≥ 1.5× nbdkit null" "| 150,000 | 100,000 | 1.50× | yes |"
want "4k randread QD1 p50 latency ≤ local io_uring + 20 µs" "| 2 of 2 | +18.0 µs (allows the goal) |"
want "128k read QD8 ≥ 0.9× local io_uring" "| 8,500 | 10,000 | 0.85× | **no** | – | 0 of 1 | 1.20× (allows the goal) |"
want "128k write QD8 ≥ 0.9× local io_uring" "| 9,000 | 10,000 | 0.90× | yes | – | 1 of 1 | 0.80× (**misses the goal**) |"
want "4k randwrite QD1 p50 latency ≤ local io_uring + 20 µs" "| +16.0 µs | yes | – | 1 of 1 | n/a |"
want "1M write QD4 ≥ 0.9× local io_uring" "| 1,800 | 2,000 | 0.90× | yes | – | 1 of 1 | 1.30× (allows the goal) |"
# goals against another reference than local io_uring alone have no bound
want "4k randread QD32 ≥ 0.9× min(nbdkit null, local io_uring)" "| 2 of 2 | – |"
want "4k randread QD32, 4 connections ≥ 1 connection" "| 120,000 | 95,000 | 1.26× | yes | 1.20× … 1.33× | 2 of 2 |"
want "4k randwrite QD32 ≥ 0.9× min(nbdkit null, local io_uring)" "| 0.50× | **no** | – | 0 of 1 |"
if grep -qF "4k randwrite QD32 ≥ 2.5× qemu-nbd" "$T/goals"; then
    fail "a goal whose reference was not measured has a row"
fi
"$PY" -c '
import json, sys
g = json.load(open(sys.argv[1]))["goals"]
r = [x for x in g if x["goal"].startswith("4k randread QD32 ≥ 2.5")][0]
assert r["rounds"] == [2.5, 2.25] and r["rounds_held"] == 1 and not r["held"], r
assert r["bound"] is None, r
q = [x for x in g if x["goal"].startswith("4k randread QD1")][0]
assert q["bound"] == 18.0 and q["bound_allows"], q
q = [x for x in g if x["goal"].startswith("128k write")][0]
assert abs(q["bound"] - 0.8) < 1e-9 and q["bound_allows"] is False, q
' "$T/results.json" || fail "results.json lacks the goals"

# run1 TARGET JOB: one short run of JOB on TARGET, its messages in $T/err
run1() {
    "$PY" fio-jobs/bench-report.py run --targets "$T/targets.tsv" --target "$1" \
        --job "$2" --round 1 --runtime 1 --ramp 0 --out-dir "$R" 2>"$T/err"
}
# skipped TARGET ONLY JOB...: TARGET runs only the ONLY (reads, writes) jobs,
# so each JOB is left out: it says so, and leaves no record (so no row)
skipped() {
    t=$1 only=$2
    shift 2
    for job; do
        run1 "$t" "$job" || fail "run of $job on a $only-only target failed: $(cat "$T/err")"
        grep -q "not run ($only only)" "$T/err" || fail "$job on a $only-only target: $(cat "$T/err")"
        [ ! -e "$R/$job.$t.r1.json" ] || fail "$job ran on a $only-only target"
    done
}
# tried TARGET ONLY JOB...: each JOB is one of TARGET's, so its client runs
# (here against a port where nothing listens, so the run fails)
tried() {
    t=$1 only=$2
    shift 2
    for job; do
        if run1 "$t" "$job"; then
            fail "$job on a $only-only target did not try fio"
        fi
        grep -q "fio failed on $t $job" "$T/err" \
            || fail "$job on a $only-only target was not run: $(cat "$T/err")"
    done
}
# A target that runs only the read jobs (blockd-unwritten) is not run on a
# write job; on a read job it runs fio.
printf 'unwritten\tnbd\tnbd://127.0.0.1:1/x\t-\tyes\tblockd\treads\n' >>"$T/targets.tsv"
skipped unwritten reads randwrite-4k-qd32 randrw-4k-70-30-qd16 seqwrite-1m-qd4
tried unwritten reads randread-4k-qd1
# its read record gets a row in the read job's table, beside blockd's
rec randread-4k-qd32 unwritten 1 120000 10 120000
"$PY" fio-jobs/bench-report.py report --targets "$T/targets.tsv" --runs "$R" \
    --json "$T/results2.json" >"$T/out2" || fail "report with a reads-only target failed"
sed -n '/^### randread-4k-qd32$/,/^### /p' "$T/out2" | grep -q "^| unwritten | 120,000 " \
    || fail "the reads-only target has no row in randread-4k-qd32: $(cat "$T/out2")"
if sed -n '/^### randwrite-4k-qd32$/,/^### /p' "$T/out2" | grep -q "^| unwritten "; then
    fail "the reads-only target has a row in a write job"
fi
sed -n '/^### goals/,$p' "$T/out2" | diff "$T/goals" - \
    || fail "a reads-only target changed the goals"
# and one that runs only the jobs that write (blockd-mem) the other way round
printf 'mem\tnbd\tnbd://127.0.0.1:1/x\t-\tyes\tblockd\twrites\n' >>"$T/targets.tsv"
skipped mem writes randread-4k-qd32 seqread-128k-qd8 qemu-read-4k-qd16
tried mem writes randrw-4k-70-30-qd16 seqwrite-1m-qd4
# The qemu-* jobs (QEMU's own client, qemu-img bench) have tables of their
# own: mean latency and qemu-img's CPU instead of fio's percentiles; no goal
# reads them.  qrec JOB TARGET ROUND IOPS MEAN-LAT
qrec() {
    printf '{"job":"%s","target":"%s","round":%s,"iops":%s,"mib_s":117.2,"p50_us":null,"p99_us":null,"lat_p50_us":null,"mean_lat_us":%s,"server_cpu_s_per_s":0.5,"ios_per_server_cpu_s":60000,"client_cpu_s_per_s":0.8,"machine_cpu_busy_s_per_s":1.5}\n' \
        "$1" "$2" "$3" "$4" "$5" >"$R/$1.$2.r$3.json"
}
qrec qemu-read-4k-qd16 blockd 1 30000 533.3
qrec qemu-read-4k-qd16 blockd 2 20000 800
qrec qemu-read-4k-qd16 nbdkit-null 1 50000 320
"$PY" fio-jobs/bench-report.py report --targets "$T/targets.tsv" --runs "$R" \
    --json "$T/results4.json" >"$T/out4" || fail "report with qemu-img runs failed"
sed -n '/^### qemu-read-4k-qd16$/,/^### /p' "$T/out4" >"$T/qtable"
grep -q '^| target | IOPS | IOPS, lowest–highest round | MiB/s | mean lat µs | µs in server | µs on its store | µs queued at server | µs queued at client | server CPU s/s | IOs per server CPU-s | qemu-img CPU s/s |' "$T/qtable" \
    || fail "the qemu-img job's table has the wrong columns: $(cat "$T/qtable")"
grep -qF '| blockd | 25,000 | 20,000–30,000 | 117.2 | 666.6 | n/a | n/a | n/a | n/a | 0.50 | 60,000 | 0.80 | 1.50 | – | 0.50× | – |' "$T/qtable" \
    || fail "the qemu-img job's blockd row: $(cat "$T/qtable")"
sed -n '/^### goals/,$p' "$T/out4" | diff "$T/goals" - || fail "qemu-img runs changed the goals"

# A qemu-img run for real, on a local file target (a sparse GiB: QEMU's file
# driver, O_DIRECT): the count from its calibration, IOPS from its time.
truncate -s 1G "$T/local.raw"
printf 'qlocal\tfile\t%s\t-\t-\tlocal\n' "$T/local.raw" >"$T/q.tsv"
"$PY" fio-jobs/bench-report.py run --targets "$T/q.tsv" --target qlocal \
    --job qemu-write-4k-qd1 --round 1 --runtime 1 --ramp 0 --out-dir "$R" 2>"$T/err" \
    || fail "a qemu-img run failed: $(cat "$T/err")"
"$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["iops"] > 0 and r["total_ios"] >= 10, r
assert abs(r["mean_lat_us"] - 1e6 / r["iops"]) < 1e-6 * r["mean_lat_us"], r
assert r["client_cpu_s_per_s"] > 0 and r["server_cpu_s"] is None, r
' "$R/qemu-write-4k-qd1.qlocal.r1.json" || fail "the qemu-img run record: $(cat "$R/qemu-write-4k-qd1.qlocal.r1.json")"
# ...whose writes reached the file: 0xa5 bytes at offsets a step apart
"$PY" -c '
import sys
with open(sys.argv[1], "rb") as f:
    for k in range(3):
        f.seek(k * (1024 * 1024 + 4096))
        assert f.read(4096) == b"\xa5" * 4096, k
' "$T/local.raw" || fail "qemu-img bench did not write its pattern where the step puts it"
# a qemu-img job against a server that is not there fails, and says so
if run1 unwritten qemu-read-4k-qd1; then
    fail "a qemu-img job against no server succeeded"
fi
grep -q "qemu-img bench failed on unwritten qemu-read-4k-qd1" "$T/err" \
    || fail "a failed qemu-img run: $(cat "$T/err")"

# a target line with a 7th field other than all/reads/writes is refused
printf 'bad\tnbd\tnbd://127.0.0.1:1/x\t-\tyes\tx\tsome\n' >"$T/bad.tsv"
if "$PY" fio-jobs/bench-report.py report --targets "$T/bad.tsv" --runs "$R" \
        --json "$T/r3.json" >/dev/null 2>"$T/err"; then
    fail "a target line with a bad 7th field was taken"
fi
# A run against blockd with its volume's stats URL records the mean time its
# requests spent inside blockd, less than the client's mean latency; the
# report shows it.  A stats URL that answers nothing leaves it out.
start_blockd
ctl volume create bench --size 1G >/dev/null
stats=$BLOCKD_API/v1/volumes/bench/stats
printf 'real\tnbd\t%s\t%s\tyes\tblockd\tall\t%s\n' "$(uri bench)" "$BLOCKD_PID" "$stats" >"$T/real.tsv"
printf 'blind\tnbd\t%s\t%s\tyes\tblockd\tall\t%s\n' "$(uri bench)" "$BLOCKD_PID" \
    "http://127.0.0.1:1/v1/volumes/bench/stats" >>"$T/real.tsv"
R2=$T/runs2
mkdir -p "$R2"
for t in real blind; do
    "$PY" fio-jobs/bench-report.py run --targets "$T/real.tsv" --target $t \
        --job randwrite-4k-qd1 --round 1 --runtime 1 --ramp 0 --out-dir "$R2" 2>"$T/err" \
        || fail "a run on blockd ($t) failed: $(cat "$T/err")"
done
"$PY" -c '
import json, sys
r = json.load(open(sys.argv[1] + "/randwrite-4k-qd1.real.r1.json"))
assert r["iops"] > 0 and 0 < r["server_time_us"] < r["mean_lat_us"], r
# each write went to the store, for part of its time in the server
assert 0 < r["storage_time_us"] <= r["server_time_us"], r
b = json.load(open(sys.argv[1] + "/randwrite-4k-qd1.blind.r1.json"))
assert b["iops"] > 0 and b["server_time_us"] is None and b["storage_time_us"] is None, b
# the sockets are sampled whatever the server counts; at QD1 at most one
# request or its reply waits at a time, so the two together take no more
# than a request'"'"'s share of the run (1/IOPS)
for x in (r, b):
    sq, cq = x["server_queue_us"], x["client_queue_us"]
    assert sq is not None and cq is not None and sq >= 0 and cq >= 0, x
    assert sq + cq <= 1e6 / x["iops"] * 1.001, x
' "$R2" || fail "the time in blockd: $(cat "$R2"/randwrite-4k-qd1.*.r1.json)"
"$PY" fio-jobs/bench-report.py report --targets "$T/real.tsv" --runs "$R2" \
    --json "$T/results5.json" >"$T/out5" || fail "report of the blockd runs failed"
grep -q '^| target | IOPS | .* | lat mean µs | µs in server | µs on its store | µs queued at server | µs queued at client | server CPU s/s ' "$T/out5" \
    || fail "no µs in server column: $(cat "$T/out5")"
grep -Eq '^\| real \|.* \| [0-9.,]+ \| [0-9.,]+ \| [0-9.,]+ \| [0-9.,]+ \| [0-9.]+ \| [0-9,]+ \|' "$T/out5" \
    || fail "the real row: $(cat "$T/out5")"
grep -Eq '^\| blind \|.* \| n/a \| n/a \| [0-9.,]+ \| [0-9.,]+ \| [0-9.]+ \| [0-9,]+ \|' "$T/out5" \
    || fail "the blind row: $(cat "$T/out5")"

# What waits in the sockets, counted exactly: a client sends 10 read
# requests' worth of bytes that the server does not read, the server 3 read
# replies' worth that the client does not read; the sampler finds the
# connection by the server's port and reads each socket's queue, and at
# 100k IOPS of 4k reads that is 100 µs queued at the server and 30 µs at
# the client (Little's law).
"$PY" - fio-jobs/bench-report.py <<'EOF' || fail "the socket queue sampler"
import importlib.util, socket, sys, time
spec = importlib.util.spec_from_file_location("bench_report", sys.argv[1])
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)
assert br.nbd_port("nbd://127.0.0.1:10809/bench") == 10809
assert br.nbd_port("nbd://127.0.0.1:2/") == 2
assert br.nbd_port("nbd+unix:///bench?socket=/tmp/s") is None
assert br.message_sizes("randread-4k-qd32") == (28, 4124)
assert br.message_sizes("seqwrite-128k-qd8") == (28 + 131072, 16)
req, rep = br.message_sizes("randrw-4k-70-30-qd16")
assert abs(req - (28 + 0.3 * 4096)) < 1e-6 and abs(rep - (0.7 * 4124 + 0.3 * 16)) < 1e-6
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
port = ls.getsockname()[1]
cli = socket.create_connection(("127.0.0.1", port))
srv, _ = ls.accept()
cli.sendall(b"q" * 280)
srv.sendall(b"r" * (3 * 4124))
sides = [server for server, _ in br.tcp_connections(port)]
assert sorted(sides) == [False, True], sides
s = br.QueueSampler(port, 1, 0)
s.start()
for _ in range(200):
    if s.n >= 20:
        break
    time.sleep(0.01)
sq, cq = s.finish("randread-4k-qd32", 100000.0)
assert s.n >= 20, vars(s)
assert s.server_bytes == 280 * s.n and s.client_bytes == 3 * 4124 * s.n, vars(s)
assert abs(sq - 100.0) < 1e-6 and abs(cq - 30.0) < 1e-6, (sq, cq)
# another port's connections are not taken (a listening port: no
# connection's own end can have it)
ls2 = socket.socket()
ls2.bind(("127.0.0.1", 0))
ls2.listen(1)
assert br.tcp_connections(ls2.getsockname()[1]) == []
assert br.QueueSampler(port, 1, 0).finish("randread-4k-qd32", 1.0) == (None, None)
EOF
echo "bench report goals ok"
