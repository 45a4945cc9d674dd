#!/usr/bin/python3
"""Helper of fio-jobs/bench.sh: the job table, one measured fio run, the report.

  bench-report.py jobs [--only "JOB ..."] [--quick]   job names, in run order
  bench-report.py ports N                       N free TCP ports on 127.0.0.1
  bench-report.py run --targets FILE --target T --job J --round R
                      --runtime S --ramp S --out-dir DIR
  bench-report.py report --targets FILE --runs DIR --json OUT
                      [--docs PATH] [--data-dir DIR] [--settings "k=v ..."]

The targets FILE is written by bench.sh, one target a line, tab-separated:
  name  kind(nbd|file)  uri-or-path  server-pid(or -)  multi-conn(yes|no|-)  description
  [jobs(all|reads|writes) [stats-url(or -)]]
A target with "reads" runs only the jobs that read and never write; one with
"writes" only the jobs that write.  A stats URL is a blockd volume's
GET /v1/volumes/NAME/stats: a run reads it before and after, and records the
mean time its requests spent inside the server (from their arrival to their
answer, by blockd's own count), beside the client's mean latency.

A run measures the server's CPU from /proc/PID/stat (utime+stime of every thread
of the process) read just before fio starts and just after it exits, divided by
the clock ticks per second and by the wall time between the two reads.
"""

import argparse
import json
import os
import platform
import random
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

# name -> fio options.  Order is the run order.  "conns" > 1 means numjobs=N,
# each fio job its own NBD connection; run only on servers that advertise
# NBD_FLAG_CAN_MULTI_CONN (a local file target always runs it: N jobs on the file).
JOBS = [
    ("randread-4k-qd1", dict(rw="randread", bs="4k", iodepth=1)),
    ("randread-4k-qd32", dict(rw="randread", bs="4k", iodepth=32)),
    ("randwrite-4k-qd1", dict(rw="randwrite", bs="4k", iodepth=1)),
    ("randwrite-4k-qd32", dict(rw="randwrite", bs="4k", iodepth=32)),
    ("randrw-4k-70-30-qd16", dict(rw="randrw", rwmixread=70, bs="4k", iodepth=16)),
    ("seqread-128k-qd8", dict(rw="read", bs="128k", iodepth=8)),
    ("seqwrite-128k-qd8", dict(rw="write", bs="128k", iodepth=8)),
    ("seqwrite-1m-qd4", dict(rw="write", bs="1m", iodepth=4)),
    ("randread-4k-qd32-4conn", dict(rw="randread", bs="4k", iodepth=32, conns=4)),
    ("randwrite-4k-qd32-4conn", dict(rw="randwrite", bs="4k", iodepth=32, conns=4)),
    # QEMU's own client: qemu-img bench, through QEMU's block layer and its nbd
    # driver, the path of a VM's disk attached with -blockdev driver=nbd (on
    # local-uring: QEMU's file driver, O_DIRECT and io_uring).  QEMU's nbd
    # driver keeps at most 16 requests in flight on a connection, so 16 is the
    # deepest queue a VM's disk brings to its server.  qemu-img bench runs a
    # count of requests, not a time: the count is set by calibration runs.
    ("qemu-read-4k-qd16", dict(client="qemu", rw="read", bs="4k", iodepth=16)),
    ("qemu-write-4k-qd16", dict(client="qemu", rw="write", bs="4k", iodepth=16)),
    # (not in make bench QUICK=1, which must stay under five minutes)
    ("qemu-read-4k-qd1", dict(client="qemu", rw="read", bs="4k", iodepth=1, quick=False)),
    ("qemu-write-4k-qd1", dict(client="qemu", rw="write", bs="4k", iodepth=1, quick=False)),
]
JOB_OPTS = dict(JOBS)

# qemu-img bench goes from one request to the next by a step: 1 MiB + 4 KiB,
# wrapping within the 1 GiB, so that no request follows the one before it (no
# read-ahead) and, 257 blocks being odd and the GiB 2^18 blocks, a long enough
# run visits every 4 KiB block of the GiB.
QEMU_STEP = 1024 * 1024 + 4096
QEMU_SIZE = 1024 * 1024 * 1024
QEMU_PATTERN = "0xa5"   # written data, not zeros

# Reference rows for the ratio columns.
REF_QEMU = "qemu-nbd-none"
REF_NULL = "nbdkit-null"
# servers without disk I/O: blockd-unwritten answers from its map (reads only);
# blockd-mem keeps its pool in memory (tmpfs), so a write costs it a copy
# where the others wait for the disk (writes only)
NO_DISK_SERVERS = (REF_NULL, "blockd-unwritten", "blockd-mem")

# The goals blockd is held to, each evaluated on the medians and round by round
# (in a round every target runs a job back to back, so a round pairs figures
# taken minutes apart at most).  "ref" lists the targets whose lowest figure is
# the reference (the machine's limit: the client's ceiling or the disk's);
# "ref_job" compares blockd with itself on another job.  A goal whose
# reference is local io_uring alone also gets a bound (goal_bound).
SUBJECT = "blockd"
REF_LOCAL = "local-uring"
GOALS = [
    dict(text="4k randread QD32 ≥ 2.5× qemu-nbd --cache=none", job="randread-4k-qd32",
         metric="iops", ref=[REF_QEMU], op="ratio", at_least=2.5),
    dict(text="4k randread QD32 ≥ 0.9× min(nbdkit null, local io_uring)", job="randread-4k-qd32",
         metric="iops", ref=[REF_NULL, REF_LOCAL], op="ratio", at_least=0.9),
    dict(text="4k randwrite QD32 ≥ 2.5× qemu-nbd --cache=none", job="randwrite-4k-qd32",
         metric="iops", ref=[REF_QEMU], op="ratio", at_least=2.5),
    dict(text="4k randwrite QD32 ≥ 0.9× min(nbdkit null, local io_uring)",
         job="randwrite-4k-qd32", metric="iops", ref=[REF_NULL, REF_LOCAL], op="ratio",
         at_least=0.9),
    # Latency here is fio's total latency (lat), from the request's issue to
    # its completion.  Completion latency (clat) starts after the engine's
    # submission: for local io_uring that is after the io_uring_enter that
    # kicks the disk (13-15 us on this VM), for an NBD client after the
    # request is sent (5-6 us), so clat would leave a different part of
    # each out (docs/BENCHMARKS.md, tenth pass).
    dict(text="4k randread QD1 p50 latency ≤ local io_uring + 20 µs", job="randread-4k-qd1",
         metric="lat_p50_us", ref=[REF_LOCAL], op="diff", at_most=20.0),
    dict(text="4k randwrite QD1 p50 latency ≤ local io_uring + 20 µs", job="randwrite-4k-qd1",
         metric="lat_p50_us", ref=[REF_LOCAL], op="diff", at_most=20.0),
    dict(text="4k randread QD32 IOs per server CPU-s ≥ 1.5× nbdkit null", job="randread-4k-qd32",
         metric="ios_per_server_cpu_s", ref=[REF_NULL], op="ratio", at_least=1.5),
    dict(text="4k randwrite QD32 IOs per server CPU-s ≥ 1.5× nbdkit null",
         job="randwrite-4k-qd32", metric="ios_per_server_cpu_s", ref=[REF_NULL], op="ratio",
         at_least=1.5),
    dict(text="128k read QD8 ≥ 0.9× local io_uring", job="seqread-128k-qd8", metric="iops",
         ref=[REF_LOCAL], op="ratio", at_least=0.9),
    dict(text="128k write QD8 ≥ 0.9× local io_uring", job="seqwrite-128k-qd8", metric="iops",
         ref=[REF_LOCAL], op="ratio", at_least=0.9),
    dict(text="1M write QD4 ≥ 0.9× local io_uring", job="seqwrite-1m-qd4", metric="iops",
         ref=[REF_LOCAL], op="ratio", at_least=0.9),
    dict(text="4k randread QD32, 4 connections ≥ 1 connection", job="randread-4k-qd32-4conn",
         metric="iops", ref_job="randread-4k-qd32", op="ratio", at_least=1.0),
    dict(text="4k randwrite QD32, 4 connections ≥ 1 connection", job="randwrite-4k-qd32-4conn",
         metric="iops", ref_job="randwrite-4k-qd32", op="ratio", at_least=1.0),
]

METRICS = ["iops", "mib_s", "p50_us", "p99_us", "lat_p50_us", "mean_lat_us", "server_time_us",
           "storage_time_us",
           "server_queue_us", "client_queue_us",
           "server_cpu_s_per_s", "ios_per_server_cpu_s", "fio_cpu_s_per_s",
           "client_cpu_s_per_s", "machine_cpu_busy_s_per_s"]


def is_qemu_job(job):
    return JOB_OPTS[job].get("client") == "qemu"


def job_writes(job):
    return JOB_OPTS[job]["rw"] not in ("read", "randread")


def die(msg):
    print("bench-report.py: " + msg, file=sys.stderr)
    sys.exit(1)


def read_targets(path):
    targets = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            if 6 <= len(fields) < 8:          # the defaults of the fields left out
                fields += ["all", "-"][len(fields) - 6:]
            if len(fields) != 8 or fields[6] not in ("all", "reads", "writes"):
                die("%s: a target line has 6 to 8 tab-separated fields, the 7th "
                    "\"all\", \"reads\" or \"writes\": %r" % (path, line))
            name, kind, where, pid, mc, desc, jobs, stats = fields
            targets.append(dict(name=name, kind=kind, where=where,
                                pid=None if pid == "-" else int(pid),
                                multi_conn=mc, description=desc,
                                only=None if jobs == "all" else jobs,
                                stats=None if stats == "-" else stats))
    return targets


def proc_cpu_ticks(pid):
    """utime+stime of the whole process (all threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    # the command name may contain spaces: fields start after the last ')'
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def machine_busy_ticks():
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])  # guest time is already in user
    return total - idle, total


def cmd_jobs(args):
    names = [n for n, _ in JOBS]
    if args.only:
        want = args.only.split()
        bad = [w for w in want if w not in JOB_OPTS]
        if bad:
            die("unknown job(s) in JOBS: %s (known: %s)" % (" ".join(bad), " ".join(names)))
        names = [n for n in names if n in want]
    elif args.quick:
        names = [n for n in names if JOB_OPTS[n].get("quick", True)]
    print(" ".join(names))


def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def fio_command(target, job, runtime, ramp, out):
    opts = dict(JOB_OPTS[job])
    conns = opts.pop("conns", 1)
    cmd = ["fio", "--name=" + job, "--output-format=json", "--output=" + out,
           "--time_based=1", "--runtime=%d" % runtime, "--ramp_time=%d" % ramp,
           "--size=1g", "--percentile_list=50:99", "--lat_percentiles=1",
           "--group_reporting=1",
           "--numjobs=%d" % conns]
    if opts["rw"] == "randrw":
        cmd.append("--unified_rw_reporting=mixed")  # one set of stats, exact percentiles
    for k, v in opts.items():
        cmd.append("--%s=%s" % (k, v))
    if target["kind"] == "nbd":
        cmd += ["--ioengine=nbd", "--uri=" + target["where"]]
    else:
        cmd += ["--ioengine=io_uring", "--direct=1", "--filename=" + target["where"]]
    return cmd, conns


def fio_stats(fio_json, rw):
    job = fio_json["jobs"][0]
    if job.get("error"):
        raise RuntimeError("fio reported error %d" % job["error"])
    if rw == "randrw":
        parts = [job["mixed"]]
    elif "read" in rw:
        parts = [job["read"]]
    else:
        parts = [job["write"]]
    p = parts[0]
    pct = p["clat_ns"].get("percentile", {})
    lat50 = p.get("lat_ns", {}).get("percentile", {}).get("50.000000")
    return dict(
        iops=p["iops"],
        mib_s=p["bw_bytes"] / 1048576.0,
        total_ios=p["total_ios"],
        p50_us=pct.get("50.000000", 0) / 1000.0,
        p99_us=pct.get("99.000000", 0) / 1000.0,
        lat_p50_us=lat50 / 1000.0 if lat50 is not None else None,
        mean_lat_us=p.get("lat_ns", {}).get("mean", 0) / 1000.0,
        # usr_cpu/sys_cpu are per fio job (averaged under group_reporting)
        fio_cpu_pct_per_job=job["usr_cpu"] + job["sys_cpu"],
    )


def qemu_command(target, job, count):
    o = JOB_OPTS[job]
    cmd = ["qemu-img", "bench", "-c", str(count), "-d", str(o["iodepth"]), "-s", o["bs"],
           "-S", str(QEMU_STEP)]
    if o["rw"] == "write":
        cmd += ["-w", "--pattern=" + QEMU_PATTERN]
    if target["kind"] == "nbd":
        return cmd + ["-f", "raw", target["where"]]
    # the file's first GiB (blockd's pool file is larger), O_DIRECT; a comma
    # in an --image-opts value is written twice
    return cmd + ["-t", "none", "-i", "io_uring", "--image-opts",
                  "driver=raw,size=%d,file.driver=file,file.filename=%s"
                  % (QEMU_SIZE, target["where"].replace(",", ",,"))]


def qemu_bench(t, job, count, timeout):
    """Run qemu-img bench for count requests; the seconds it reports."""
    cmd = qemu_command(t, job, count)
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        die("qemu-img bench on %s %s took over %d s\ncommand: %s"
            % (t["name"], job, timeout, " ".join(cmd)))
    m = re.search(r"Run completed in ([0-9.]+) seconds", res.stdout)
    if res.returncode != 0 or m is None or float(m.group(1)) <= 0:
        die("qemu-img bench failed on %s %s (exit %d):\n%s\ncommand: %s"
            % (t["name"], job, res.returncode, res.stdout[-2000:], " ".join(cmd)))
    return float(m.group(1))


def qemu_calibrate(t, job, runtime, ramp):
    """How many requests make a run of about runtime seconds: short runs,
    from 10 requests per request in flight, each four times as long as the
    one before, until one lasts 0.2 s (a server that stalls takes only the
    first), then, with a ramp, a run of about ramp seconds, which also warms
    the target up as fio's ramp does."""
    n = 10 * JOB_OPTS[job]["iodepth"]
    while True:
        secs = qemu_bench(t, job, n, 120)
        if secs >= 0.2 or n >= 1000000:
            break
        n *= 4
    rate = n / secs
    if ramp > 0:
        m = max(n, int(rate * ramp))
        rate = m / qemu_bench(t, job, m, 120 + 20 * ramp)
    return max(n, int(rate * runtime))


def size_bytes(s):
    """"4k", "128k", "1m" in bytes."""
    return int(s[:-1]) * {"k": 1024, "m": 1048576}[s[-1]]


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


STAT_KINDS = ("read", "write", "flush", "trim", "zero")


def server_counts(url):
    """(requests, microseconds inside the server, microseconds of those on
    its store) from a blockd volume's stats, summed over the kinds; None if
    the server has no such counts (a build from before them; the third
    alone is None from a build that counted time but not the store's)."""
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as f:
            j = json.load(f)
        store = [j[k].get("storage_time_us") for k in STAT_KINDS]
        return (sum(j[k]["ops"] for k in STAT_KINDS), sum(j[k]["time_us"] for k in STAT_KINDS),
                None if None in store else sum(store))
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# NBD messages on the wire, to count what waits in a socket: a request is a
# 28-byte header (a write's data follows it); the reply to a write is a
# simple reply (16 bytes), to a read a structured data chunk (a 20-byte
# header and an 8-byte offset before the data).  That is what the clients
# here negotiate (structured replies, no extended headers) and what the
# servers send for data; a read of a hole answered with a 32-byte hole chunk
# would count as far fewer replies, which is why every bench volume is
# written (blockd-unwritten sends zeros as data).  A read answered in
# several chunks sends a few bytes more, which this leaves out.  For the
# mixed job the sizes are means over its mix.
NBD_REQUEST_LEN = 28
NBD_SIMPLE_REPLY_LEN = 16
NBD_READ_CHUNK_LEN = 28
QUEUE_SAMPLE_S = 0.005

# sock_diag (linux/sock_diag.h, linux/inet_diag.h): one TCP socket's
# queues, looked up by its addresses and ports in the kernel's hash.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF


def message_sizes(job):
    """(request, reply): the mean bytes on the wire of one of job's requests,
    and of its reply."""
    o = JOB_OPTS[job]
    bs = size_bytes(o["bs"])
    if o["rw"] == "randrw":
        w = 1.0 - o["rwmixread"] / 100.0
    else:
        w = 1.0 if job_writes(job) else 0.0
    return (NBD_REQUEST_LEN + w * bs,
            (1.0 - w) * (NBD_READ_CHUNK_LEN + bs) + w * NBD_SIMPLE_REPLY_LEN)


def nbd_port(uri):
    """The TCP port of an nbd:// URI, or None (a unix socket, no port)."""
    m = re.match(r"nbd://[^/]*:(\d+)(/|$)", uri)
    return int(m.group(1)) if m else None


def tcp_connections(port):
    """The established IPv4 connections with port at one end, as
    (server side, (local, remote)) with each end (address bytes, port),
    from /proc/net/tcp (which prints addresses in host byte order)."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fl = line.split()
            if fl[3] != "01":         # established
                continue
            ends = []
            for e in fl[1:3]:
                a, p = e.split(":")
                ends.append((struct.pack("=I", int(a, 16)), int(p, 16)))
            if ends[0][1] == port or ends[1][1] == port:
                out.append((ends[0][1] == port, tuple(ends)))
    return out


def diag_request(local, remote):
    """A sock_diag request for the one TCP socket with these ends."""
    sockid = (struct.pack(">HH", local[1], remote[1]) + local[0] + bytes(12) + remote[0]
              + bytes(12) + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    req = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 1 << 1) + sockid
    return struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 0, 0) + req


def diag_rqueue(reply):
    """The bytes a socket has received and its owner not read
    (idiag_rqueue), from a sock_diag reply; None if the socket is gone."""
    if len(reply) < 16 or struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
        return None
    # nlmsghdr (16), then inet_diag_msg: family, state, timer, retrans (4),
    # the socket's id (48), expires (4), rqueue
    return struct.unpack_from("=I", reply, 16 + 4 + 48 + 4)[0]


class QueueSampler(threading.Thread):
    """What waits unread in the sockets of the connections to a server's
    port: the bytes in the server's receive queues (requests it has not read
    yet) and in the client's (replies it has not read yet), whatever the
    server.  After a delay (the ramp) the client's nconns connections are
    found in /proc/net/tcp; then each socket's queue is asked for by its
    addresses (sock_diag, a lookup in the kernel's hash), about every
    QUEUE_SAMPLE_S at random moments, until the run ends.  Bytes a sender
    holds back because the receiver's window is full are not counted (on
    loopback the receive buffers grow to megabytes).  (Reading
    /proc/net/tcp at each sample would not do: it walks the whole hash, 1.3
    ms of CPU on this machine with nothing preemptible in it, and stalls the
    client and the server it is sampling.)"""

    def __init__(self, port, nconns, delay):
        super().__init__(daemon=True)
        self.port = port
        self.nconns = nconns
        self.delay = delay
        self.done = threading.Event()
        self.n = self.server_bytes = self.client_bytes = 0

    def run(self):
        if self.done.wait(self.delay):
            return
        conns = []
        while len(conns) < 2 * self.nconns and not self.done.wait(0.05):
            conns = [(srv, diag_request(*ends)) for srv, ends in tcp_connections(self.port)]
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            while conns and not self.done.is_set():
                srv = cli = 0
                for is_server, req in conns:
                    nl.send(req)
                    q = diag_rqueue(nl.recv(4096))
                    if q is None:           # the run is ending
                        return
                    if is_server:
                        srv += q
                    else:
                        cli += q
                self.n += 1
                self.server_bytes += srv
                self.client_bytes += cli
                # at random moments, not in step with anything periodic (the
                # disk here stalls every 100 ms at times)
                self.done.wait(random.uniform(0.5, 1.5) * QUEUE_SAMPLE_S)

    def finish(self, job, iops):
        """(server, client): the mean time in µs a request waited in the
        server's socket and its reply in the client's (Little's law: the
        mean number waiting over the rate), or (None, None) without
        samples."""
        self.done.set()
        if self.ident is not None:
            self.join()
        if self.n == 0 or not iops:
            return None, None
        req, rep = message_sizes(job)
        return (self.server_bytes / self.n / req / iops * 1e6,
                self.client_bytes / self.n / rep / iops * 1e6)


def cmd_run(args):
    targets = {t["name"]: t for t in read_targets(args.targets)}
    if args.target not in targets:
        die("target %s not set up" % args.target)
    t = targets[args.target]
    if t["only"] and job_writes(args.job) != (t["only"] == "writes"):
        print("  %-24s %-14s not run (%s only)" % (args.job, t["name"], t["only"]),
              file=sys.stderr)
        return
    rec = dict(target=t["name"], job=args.job, round=args.round)
    stem = os.path.join(args.out_dir, "%s.%s.r%d" % (args.job, t["name"], args.round))
    qemu = is_qemu_job(args.job)
    if qemu:
        count = qemu_calibrate(t, args.job, args.runtime, args.ramp)
        conns = 1
    else:
        cmd, conns = fio_command(t, args.job, args.runtime, args.ramp, stem + ".fio.json")
    if conns > 1 and t["kind"] == "nbd" and t["multi_conn"] != "yes":
        rec["skipped"] = "server does not advertise multi-conn"
        with open(stem + ".json", "w") as f:
            json.dump(rec, f)
        print("  %-24s %-14s skipped (no multi-conn)" % (args.job, t["name"]), file=sys.stderr)
        return
    tck = os.sysconf("SC_CLK_TCK")
    pid = t["pid"]
    if pid is not None:
        c0 = proc_cpu_ticks(pid)
    s0 = server_counts(t["stats"])
    port = nbd_port(t["where"]) if t["kind"] == "nbd" else None
    sampler = QueueSampler(port, conns, 0 if qemu else args.ramp) if port else None
    m0 = machine_busy_ticks()
    k0 = children_cpu_s()
    w0 = time.monotonic()
    if sampler:
        sampler.start()
    if qemu:
        secs = qemu_bench(t, args.job, count, 120 + 20 * args.runtime)
    else:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    w1 = time.monotonic()
    if sampler:
        sampler.done.set()
    k1 = children_cpu_s()
    m1 = machine_busy_ticks()
    if pid is not None:
        try:
            c1 = proc_cpu_ticks(pid)
        except FileNotFoundError:
            die("%s (pid %d) died during %s; see its log in %s"
                % (t["name"], pid, args.job, os.path.dirname(args.out_dir)))
    s1 = server_counts(t["stats"]) if s0 else None
    wall = w1 - w0
    if qemu:
        o = JOB_OPTS[args.job]
        iops = count / secs
        st = dict(iops=iops, mib_s=iops * size_bytes(o["bs"]) / 1048576.0, total_ios=count,
                  p50_us=None, p99_us=None, lat_p50_us=None,
                  # qemu-img bench keeps iodepth requests in flight: Little's law
                  mean_lat_us=o["iodepth"] / iops * 1e6)
        rec.update(st)
        rec["client_cpu_s_per_s"] = (k1 - k0) / wall
    else:
        if res.returncode != 0:
            die("fio failed on %s %s (exit %d):\n%s\ncommand: %s"
                % (t["name"], args.job, res.returncode, res.stdout[-2000:], " ".join(cmd)))
        with open(stem + ".fio.json") as f:
            text = f.read()
        # fio's nbd engine prints "fio: connected to NBD server" lines before the JSON
        fj = json.loads(text[text.index("{"):])
        st = fio_stats(fj, JOB_OPTS[args.job]["rw"])
        rec.update(st)
        rec["fio_cpu_s_per_s"] = st["fio_cpu_pct_per_job"] / 100.0 * conns
    rec["wall_s"] = wall
    rec["server_queue_us"], rec["client_queue_us"] = (sampler.finish(args.job, st["iops"])
                                                      if sampler else (None, None))
    # the ramp's requests are in it too; a mean over both
    rec["server_time_us"] = ((s1[1] - s0[1]) / (s1[0] - s0[0])
                             if s0 and s1 and s1[0] > s0[0] else None)
    rec["storage_time_us"] = ((s1[2] - s0[2]) / (s1[0] - s0[0])
                              if rec["server_time_us"] is not None and s0[2] is not None
                              and s1[2] is not None else None)
    # every CPU of the machine, busy (not idle or iowait): client, server,
    # kernel threads, interrupts, and whatever else runs (noise)
    rec["machine_cpu_busy_s_per_s"] = (m1[0] - m0[0]) / tck / wall
    if pid is not None:
        cpu_s = (c1 - c0) / tck
        rec["server_cpu_s"] = cpu_s
        rec["server_cpu_s_per_s"] = cpu_s / wall
        if cpu_s <= 0:
            rec["ios_per_server_cpu_s"] = None
        elif qemu:              # both over qemu-img's whole life
            rec["ios_per_server_cpu_s"] = count / cpu_s
        else:
            rec["ios_per_server_cpu_s"] = st["iops"] / rec["server_cpu_s_per_s"]
    else:
        rec["server_cpu_s"] = rec["server_cpu_s_per_s"] = rec["ios_per_server_cpu_s"] = None
    with open(stem + ".json", "w") as f:
        json.dump(rec, f, indent=1)
    cpu = ("%.2f" % rec["server_cpu_s_per_s"]) if pid is not None else "n/a"
    lat = ("lat p50 %7s us" % fmt(st["lat_p50_us"]) if not qemu
           else "mean lat %6s us" % fmt(st["mean_lat_us"]))
    if rec["server_time_us"] is not None:
        lat += " (mean %s us, %s in the server, %s of them on its store)" % (
            fmt(st["mean_lat_us"]), fmt(rec["server_time_us"]), fmt(rec["storage_time_us"]))
    if rec["server_queue_us"] is not None:
        lat += " (queued: %s us at the server, %s at the client)" % (
            fmt(rec["server_queue_us"], 1), fmt(rec["client_queue_us"], 1))
    print("  %-24s %-14s %9.0f IOPS %8.1f MiB/s  p50 %7s us  p99 %7s us  %s"
          "  server CPU %s s/s  machine busy %.2f CPUs"
          % (args.job, t["name"], st["iops"], st["mib_s"], fmt(st["p50_us"]),
             fmt(st["p99_us"]), lat, cpu, rec["machine_cpu_busy_s_per_s"]),
          file=sys.stderr)


# ---------------------------------------------------------------- report

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True).stdout.strip()
    except OSError:
        return ""


def machine_info(data_dir):
    info = {}
    info["nproc"] = os.cpu_count()
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info["cpu_model"] = model
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1048576.0, 1)
    info["kernel"] = platform.release()
    d = data_dir or "."
    info["data_dir_fs"] = " ".join(sh("findmnt -n -o FSTYPE,SOURCE,OPTIONS -T '%s'" % d).split())
    info["data_dir_fs_statf"] = sh("stat -f -c %%T '%s'" % d)
    info["fio"] = sh("fio --version")
    info["qemu_nbd"] = sh("qemu-nbd --version | head -1")
    info["nbdkit"] = sh("nbdkit --version")
    info["libnbd"] = sh("nbdinfo --version | head -1")
    info["blockd_commit"] = sh("git rev-parse --short HEAD 2>/dev/null") + (
        "-dirty" if sh("git status --porcelain --untracked-files=no 2>/dev/null") else "")
    return info


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "n/a"
    if nd == 0:
        return "{:,.0f}".format(x)
    return "{:,.{}f}".format(x, nd)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(x):
    return "–" if x is None else "%.2f×" % x


def read_runs(runs_dir):
    recs = []
    for fn in sorted(os.listdir(runs_dir)):
        if fn.endswith(".json") and not fn.endswith(".fio.json"):
            with open(os.path.join(runs_dir, fn)) as f:
                recs.append(json.load(f))
    recs.sort(key=lambda r: (r["round"], [n for n, _ in JOBS].index(r["job"]), r["target"]))
    return recs


def build_results(targets, recs):
    order = [t["name"] for t in targets]
    jobs = [n for n, _ in JOBS if any(r["job"] == n for r in recs)]
    out = []
    for job in jobs:
        rows = []
        for name in order:
            rs = [r for r in recs if r["job"] == job and r["target"] == name]
            if not rs:
                continue
            rs.sort(key=lambda r: r["round"])
            if any("skipped" in r for r in rs):
                rows.append(dict(target=name, skipped=rs[0]["skipped"]))
                continue
            row = dict(target=name, rounds=len(rs))
            for m in METRICS:
                row[m] = median([r.get(m) for r in rs])
            row["iops_all_rounds"] = [r["iops"] for r in rs]
            rows.append(row)
        by = {r["target"]: r for r in rows if "skipped" not in r}
        for r in rows:
            if "skipped" in r:
                continue
            q, n = by.get(REF_QEMU), by.get(REF_NULL)
            r["iops_vs_qemu_nbd_none"] = ratio(r["iops"], q and q["iops"])
            r["iops_vs_nbdkit_null"] = ratio(r["iops"], n and n["iops"])
            r["ios_per_cpu_vs_qemu_nbd_none"] = ratio(
                r["ios_per_server_cpu_s"], q and q["ios_per_server_cpu_s"])
        out.append(dict(job=job, options={k: v for k, v in JOB_OPTS[job].items()},
                        targets=rows))
    return out


def goal_figure(goal, get, subject=SUBJECT):
    """(subject's figure, the reference figure, the goal's value) from get(job,
    target, metric), or None where a figure is missing."""
    a = get(goal["job"], subject, goal["metric"])
    if "ref_job" in goal:
        refs = [get(goal["ref_job"], SUBJECT, goal["metric"])]
    else:
        refs = [get(goal["job"], t, goal["metric"]) for t in goal["ref"]]
    if a is None or any(b is None for b in refs):
        return None
    b = min(refs)
    if goal["op"] == "diff":
        return a, b, a - b
    return (a, b, a / b) if b else None


def goal_held(goal, v):
    return v >= goal["at_least"] if "at_least" in goal else v <= goal["at_most"]


def has_bound(goal):
    return goal.get("ref") == [REF_LOCAL]


def goal_bound(goal, get):
    """For a goal whose reference is local io_uring alone, the best figure
    that the servers without disk I/O (nbdkit null; blockd-unwritten on
    reads; blockd-mem on writes), which only fio's nbd engine, the network
    and their own work limit, show against it: the higher of their ratios
    to local io_uring, or for QD1 latency the lower of their whole
    latencies, the round trip that a server doing the disk's work pays on
    top of the disk's own latency (local io_uring's figure).  That sum
    counts fio's own work per request twice and the server's wake-up for
    the disk's completion not at all: an estimate within a few
    microseconds.  None for other goals, or if none of them ran."""
    if not has_bound(goal):
        return None
    fs = [f for f in (goal_figure(goal, get, t) for t in NO_DISK_SERVERS) if f]
    vals = [f[0] if goal["op"] == "diff" else f[2] for f in fs]
    return (min if "at_most" in goal else max)(vals) if vals else None


def build_goals(results, recs):
    """Each goal on the medians, and in every round on that round's figures."""
    med = {}
    for j in results:
        for r in j["targets"]:
            if "skipped" not in r:
                med[(j["job"], r["target"])] = r
    by_round = {}
    for r in recs:
        if "skipped" not in r:
            by_round[(r["job"], r["target"], r["round"])] = r
    rounds = sorted({r["round"] for r in recs})
    out = []
    get_med = lambda j, t, k: med.get((j, t), {}).get(k)
    for g in GOALS:
        m = goal_figure(g, get_med)
        if m is None:
            continue
        bound = goal_bound(g, get_med)
        per_round = []
        for n in rounds:
            f = goal_figure(g, lambda j, t, k: by_round.get((j, t, n), {}).get(k))
            if f is not None:
                per_round.append(f[2])
        out.append(dict(goal=g["text"], subject=m[0], reference=m[1], value=m[2],
                        held=goal_held(g, m[2]), rounds=per_round,
                        rounds_held=sum(goal_held(g, v) for v in per_round),
                        op=g["op"], metric=g["metric"], bound=bound,
                        bound_allows=None if bound is None else goal_held(g, bound),
                        has_bound=has_bound(g)))
    return out


def fmt_goal_value(op, v):
    return ("%+.1f µs" % v) if op == "diff" else ("%.2f×" % v)


def markdown_goals(goals):
    if not goals:
        return ""
    L = ["| goal | blockd | reference | on the medians | held? | round by round | rounds held"
         " | bound for any NBD server here |",
         "|---|---|---|---|---|---|---|---|"]
    for g in goals:
        nd = 1 if g["metric"].endswith("_us") else 0
        rr = g["rounds"]
        bound = "n/a" if g["has_bound"] else "–"    # n/a: no server without disk I/O ran
        if g["bound"] is not None:
            bound = "%s (%s)" % (fmt_goal_value(g["op"], g["bound"]),
                                 "allows the goal" if g["bound_allows"] else "**misses the goal**")
        L.append("| %s | %s | %s | %s | %s | %s | %d of %d | %s |" % (
            g["goal"], fmt(g["subject"], nd), fmt(g["reference"], nd),
            fmt_goal_value(g["op"], g["value"]), "yes" if g["held"] else "**no**",
            fmt_range(rr, lambda v: fmt_goal_value(g["op"], v), " … "), g["rounds_held"], len(rr),
            bound))
    return "\n".join(L) + "\n"


def fmt_range(xs, show=fmt, sep="–"):
    """Lowest and highest of a figure over the rounds: how far to trust a median."""
    xs = [x for x in xs or [] if x is not None]
    if len(xs) < 2:
        return "–"
    return "%s%s%s" % (show(min(xs)), sep, show(max(xs)))


def table_columns(job):
    """The columns of a job's table: (header, a row's cell).  The fio jobs
    show fio's completion and total latency percentiles and fio's CPU, the
    qemu-* jobs the mean latency and qemu-img's CPU."""
    inside = [("µs in server", lambda r: fmt(r.get("server_time_us"), 1)),
              ("µs on its store", lambda r: fmt(r.get("storage_time_us"), 1)),
              ("µs queued at server", lambda r: fmt(r.get("server_queue_us"), 1)),
              ("µs queued at client", lambda r: fmt(r.get("client_queue_us"), 1))]
    if is_qemu_job(job):
        lat = [("mean lat µs", lambda r: fmt(r.get("mean_lat_us"), 1))] + inside
        client = ("qemu-img CPU s/s", lambda r: fmt(r.get("client_cpu_s_per_s"), 2))
    else:
        lat = [("p50 µs", lambda r: fmt(r["p50_us"], 1)),
               ("p99 µs", lambda r: fmt(r["p99_us"], 1)),
               ("lat p50 µs", lambda r: fmt(r.get("lat_p50_us"), 1)),
               ("lat mean µs", lambda r: fmt(r.get("mean_lat_us"), 1))] + inside
        client = ("fio CPU s/s", lambda r: fmt(r["fio_cpu_s_per_s"], 2))
    return ([("target", lambda r: r["target"]),
             ("IOPS", lambda r: fmt(r["iops"])),
             ("IOPS, lowest–highest round", lambda r: fmt_range(r.get("iops_all_rounds"))),
             ("MiB/s", lambda r: fmt(r["mib_s"], 1))]
            + lat
            + [("server CPU s/s", lambda r: fmt(r["server_cpu_s_per_s"], 2)),
               ("IOs per server CPU-s", lambda r: fmt(r["ios_per_server_cpu_s"])),
               client,
               ("machine CPUs busy", lambda r: fmt(r.get("machine_cpu_busy_s_per_s"), 2)),
               ("IOPS vs qemu-nbd none", lambda r: fmt_ratio(r["iops_vs_qemu_nbd_none"])),
               ("IOPS vs nbdkit null", lambda r: fmt_ratio(r["iops_vs_nbdkit_null"])),
               ("IOs/CPU-s vs qemu-nbd none",
                lambda r: fmt_ratio(r["ios_per_cpu_vs_qemu_nbd_none"]))])


def markdown_tables(results):
    lines = []
    for j in results:
        cols = table_columns(j["job"])
        lines += ["### %s" % j["job"], "",
                  "| %s |" % " | ".join(h for h, _ in cols),
                  "|" + "---|" * len(cols)]
        for r in j["targets"]:
            if "skipped" in r:
                lines.append("| %s | skipped: %s |%s"
                             % (r["target"], r["skipped"], " |" * (len(cols) - 2)))
            else:
                lines.append("| %s |" % " | ".join(cell(r) for _, cell in cols))
        lines.append("")
    return "\n".join(lines)


NOTES_PLACEHOLDER = "(analysis to be written)"


def existing_notes(path):
    """The "## Notes" section of an existing file, if someone wrote one."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    i = text.find("\n## Notes")
    if i < 0:
        return None
    body = text[i + 1:]
    return None if NOTES_PLACEHOLDER in body else body.rstrip("\n") + "\n"


def write_docs(path, info, settings, targets, tables, goals_md):
    s = settings
    L = []
    L.append("# blockd benchmarks")
    L.append("")
    L.append("Side-by-side measurement of blockd against other NBD servers and the local disk,")
    L.append("with fio (and QEMU's own client) on the same machine over loopback TCP.")
    L.append("Written by `make bench`")
    L.append("(`fio-jobs/bench.sh` and `fio-jobs/bench-report.py`); raw numbers of the")
    L.append("last run are in `build/bench/results.json`.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    L.append("| CPUs (nproc) | %s |" % info["nproc"])
    L.append("| CPU model | %s |" % info["cpu_model"])
    L.append("| memory | %s GiB |" % info.get("memory_gib", "?"))
    L.append("| kernel | %s |" % info["kernel"])
    L.append("| data dir filesystem | %s (`stat -f`: %s) |"
             % (info["data_dir_fs"], info["data_dir_fs_statf"]))
    L.append("| fio | %s |" % info["fio"])
    L.append("| qemu-nbd | %s |" % info["qemu_nbd"])
    L.append("| nbdkit | %s |" % info["nbdkit"])
    L.append("| libnbd | %s |" % info["libnbd"])
    L.append("| blockd | commit %s |" % info["blockd_commit"])
    L.append("| run | %s |" % s.get("date", ""))
    L.append("")
    L.append("## How to reproduce")
    L.append("")
    L.append("```sh")
    L.append("make bench                 # 3 rounds x 10 s per job and target (~1 hour)")
    L.append("make bench QUICK=1         # 1 round x 2 s, no ramp (under 5 min): a smoke run")
    L.append("# experiments (do not rewrite this file):")
    L.append("TARGETS=\"blockd nbdkit-null\" JOBS=\"randread-4k-qd32\" make bench")
    L.append("BENCH_RUNTIME=30 BENCH_ROUNDS=5 make bench")
    L.append("```")
    L.append("")
    L.append("This run: %s round(s), %s s per job after a %s s ramp; every target gets"
             % (s.get("rounds"), s.get("runtime"), s.get("ramp")))
    L.append("a job in turn before the next job starts (the target order rotates each round);")
    L.append("the tables give the median over the rounds of each figure.")
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("Each target holds 1 GiB written sequentially (fio, 1 MiB blocks) before any")
    L.append("measurement, and every job works over that 1 GiB.")
    for t in targets:
        if t["only"] == "reads":
            L.append("%s is the exception: it is never written and runs only the read jobs."
                     % t["name"])
        elif t["only"] == "writes":
            L.append("%s runs only the jobs that write." % t["name"])
    L.append("All servers listen on 127.0.0.1; nothing is pinned to a CPU.")
    L.append("")
    L.append("| target | what | multi-conn |")
    L.append("|---|---|---|")
    for t in targets:
        L.append("| %s | %s | %s |" % (t["name"], t["description"], t["multi_conn"]))
    L.append("")
    L.append("Columns: IOPS and MiB/s from fio; the IOPS of the lowest and highest round")
    L.append("show how far apart the rounds were (the other columns are medians);")
    L.append("p50/p99 are completion latency (fio `clat`, from the engine's submission);")
    L.append("lat p50 is total latency (fio `lat`, from the request's issue: the QD1 goals")
    L.append("use it, because local io_uring's submission is the io_uring_enter that kicks")
    L.append("the disk, and an NBD client's is sending the request); lat mean is its mean;")
    L.append("µs in server is the mean time a request spent inside blockd, from its")
    L.append("arrival to its answer, by blockd's own count (`GET /v1/volumes/NAME/stats`,")
    L.append("the ramp's requests included; a write's payload arriving counted in it;")
    L.append("n/a: a server that does not count); µs on its store is the part of it from the")
    L.append("request's handing to blockd's store (a write's payload whole) to its answer")
    L.append("(disk, kernel and the loop's turns; 0 for one answered without the store):")
    L.append("what a write has beyond it is its wait for the payload; µs queued at server is the mean time a")
    L.append("request waited, received and unread, in the server's socket (before \"µs in")
    L.append("server\" begins; a write's payload still there after its header was read counts in")
    L.append("both), and µs queued at client the time its reply waited unread in the")
    L.append("client's, for any server: the bytes waiting in each socket of the")
    L.append("connections, read with sock_diag about every 5 ms after the ramp, over a")
    L.append("request's and a reply's bytes on the wire, over IOPS (Little's law); what")
    L.append("lat mean has beyond these three is the client's own time and the wire's;")
    L.append("server CPU s/s is the server process's utime+stime (all threads, from")
    L.append("`/proc/PID/stat`) over the fio run divided by its wall time (ramp and")
    L.append("connection setup included); IOs per server CPU-s = IOPS / server CPU s/s;")
    L.append("fio CPU s/s is fio's own CPU (the client; the only CPU figure for local-uring);")
    L.append("machine CPUs busy is every CPU's non-idle time over the run (client, server,")
    L.append("kernel threads, interrupts and anything else running) from `/proc/stat`.")
    L.append("Ratios compare IOPS (and IOs per CPU-second) with qemu-nbd --cache=none and")
    L.append("with nbdkit null, the server that does no I/O, which the goals take as the")
    L.append("ceiling of fio's nbd engine on this machine (blockd-unwritten, without disk")
    L.append("I/O either, goes past it on reads; blockd-mem, blockd with its pool file in")
    L.append("memory, is blockd's own path on writes without the disk's time: its rows")
    L.append("beside blockd's show what the disk adds). The 4conn jobs run 4 fio jobs,")
    L.append("each on its own NBD connection, only against servers that advertise multi-conn.")
    L.append("The qemu-* jobs use QEMU's own NBD client instead of fio: `qemu-img bench`,")
    L.append("through QEMU's block layer and its nbd driver, the path of a VM's disk")
    L.append("attached with `-blockdev driver=nbd` (on local-uring, QEMU's file driver")
    L.append("with O_DIRECT and io_uring on the same GiB). Each request lies 1 MiB + 4 KiB")
    L.append("after the one before, wrapping within the GiB, so that none follows another")
    L.append("and a long run visits every 4 KiB block; writes carry 0xa5 bytes. QEMU's nbd")
    L.append("driver keeps at most 16 requests in flight on a connection, so QD16 is the")
    L.append("deepest queue a VM's disk brings to its server. qemu-img bench runs a count")
    L.append("of requests (set from short calibration runs and a ramp run to last the")
    L.append("runtime) and reports only its time: mean lat is the depth over IOPS, and")
    L.append("qemu-img CPU is its own user and system time over its run.")
    L.append("`sync` runs before every measurement so that one target's dirty page cache")
    L.append("is not written back during another's run; the page-cache targets")
    L.append("(qemu-nbd-wb, nbdkit-file) therefore never pay for writeback in their")
    L.append("figures, and the kernel threads that do it are not counted in their CPU.")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append(tables)
    if goals_md:
        L.append("## Goals")
        L.append("")
        L.append("blockd's figures against the goals it is held to. \"On the medians\" divides")
        L.append("(or subtracts) the medians in the tables above; \"round by round\" does the")
        L.append("same with the figures of each round, in which the targets ran the job one")
        L.append("after another, and gives the lowest and highest; \"rounds held\" counts the")
        L.append("rounds in which the goal held. Where a reference is the lower of two")
        L.append("targets, the lower one is taken in each round. \"Bound for any NBD server")
        L.append("here\" is given for the goals against local io_uring alone, from the")
        L.append("servers that do no disk I/O (nbdkit null; blockd-unwritten on reads, and")
        L.append("blockd-mem, with its pool in memory, on writes):")
        L.append("the higher of their IOPS over local io_uring's, and for QD1 latency the")
        L.append("lower of their whole latencies, the round trip that a server doing the")
        L.append("disk's work pays on top of local io_uring's latency (an estimate within a")
        L.append("few µs). Where the bound misses the goal, no server without disk I/O")
        L.append("met it in this run, and a server that does the disk's work as well is")
        L.append("unlikely to; \"n/a\" is a goal whose bound was not measured.")
        L.append("")
        L.append(goals_md)
    notes = existing_notes(path)
    if notes:
        L.append(notes)
    else:
        L.append("## Notes")
        L.append("")
        L.append(NOTES_PLACEHOLDER)
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def cmd_report(args):
    targets = read_targets(args.targets)
    settings = dict(kv.split("=", 1) for kv in (args.settings or "").split())
    settings["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    recs = read_runs(args.runs)
    results = build_results(targets, recs)
    goals = build_goals(results, recs)
    info = machine_info(args.data_dir)
    doc = dict(machine=info, settings=settings,
               targets=[{k: v for k, v in t.items() if k != "pid"} for t in targets],
               jobs=results, goals=goals, runs=recs)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    tables = markdown_tables(results)
    goals_md = markdown_goals(goals)
    print(tables)
    if goals_md:
        print("### goals\n\n" + goals_md)
    if args.docs:
        write_docs(args.docs, info, settings, targets, tables, goals_md)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("jobs")
    p.add_argument("--only")
    p.add_argument("--quick", action="store_true")
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("run")
    p.add_argument("--targets", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--job", required=True, choices=list(JOB_OPTS))
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--runtime", type=int, required=True)
    p.add_argument("--ramp", type=int, default=1)
    p.add_argument("--out-dir", required=True)
    p = sub.add_parser("report")
    p.add_argument("--targets", required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--docs")
    p.add_argument("--data-dir")
    p.add_argument("--settings")
    args = ap.parse_args()
    {"jobs": cmd_jobs, "ports": cmd_ports, "run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
