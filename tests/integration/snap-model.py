#!/usr/bin/python3
"""Model-based checks of blockd snapshots, clones and rollback.

Every scenario talks to a running blockd: the HTTP API at $BLOCKD_API and NBD
at the base URI given (nbd://127.0.0.1:PORT).  Each exits 0 when blockd
behaved as its model says, and prints what differed otherwise.

bytes NBDBASE SEED
    A byte-exact model of one volume and of every snapshot taken of it:
    unaligned writes, partial- and whole-chunk trims, write-zeroes (with and
    without NO_HOLE) on frozen and unfrozen chunks; after every step the
    snapshots must still read exactly what the volume held when each was
    taken, through connections opened before and after.
chain NBDBASE N
    N snapshots of one volume, each after a distinct 4 KiB write; a sample
    of them reads exactly the writes before it; a snapshot in the middle is
    deleted (freeing exactly its exclusive bytes) and its neighbours still
    read right.
accounting NBDBASE SEED STEPS
    A chunk-level model of which pool chunks each volume, clone and
    snapshot sees, under random writes, whole-chunk trims, snapshots,
    clones, rollbacks and deletes: pool allocated/shared/leaked and every
    snapshot's referenced/exclusive must agree with it exactly, deleting a
    snapshot frees exactly its exclusive bytes, every view reads its data,
    and deleting everything returns allocated to 0.
churn NBDBASE VOL SEED [BUSYVOL]
    For the crash test: an endless loop of writes, snapshot create/delete,
    clone, clone delete and rollback on VOL, and snapshots of BUSYVOL (which
    a writer keeps busy), until blockd goes away.
coherent NBDBASE [STATE]
    After a restart: every listed volume and snapshot export can be
    connected to and read; the pool has nothing leaked; counts agree; every
    snapshot recorded in STATE by the last call reads the same as then.
"""
import errno, hashlib, json, os, random, sys, time, urllib.error, urllib.parse, urllib.request
import nbd

API = os.environ.get("BLOCKD_API", "http://127.0.0.1:10810")
M = 1 << 20
K4 = 4096


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def api(method, path, body=None, ok=None):
    """(status, decoded json or None); raises Fail when status not in ok."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    j = json.loads(raw) if raw else None
    if ok is not None and status not in ok:
        raise Fail("%s %s -> %d %s" % (method, path, status, raw[:300]))
    return status, j


def q(ref):
    return urllib.parse.quote(ref, safe="")


def pool():
    return api("GET", "/v1/pool", ok=(200,))[1]


def snapshots():
    return {"%s@%s" % (s["volume"], s["name"]): s
            for s in api("GET", "/v1/snapshots", ok=(200,))[1]["snapshots"]}


def volumes():
    return {v["name"]: v for v in api("GET", "/v1/volumes", ok=(200,))[1]["volumes"]}


def connect(base, export):
    h = nbd.NBD()
    h.connect_uri(base + "/" + export)
    return h


def read_all(h, size):
    out = bytearray()
    for off in range(0, size, M):
        out += h.pread(min(M, size - off), off)
    return bytes(out)


def first_diff(a, b):
    for i in range(0, len(a), K4):
        if a[i:i + K4] != b[i:i + K4]:
            for j in range(i, min(i + K4, len(a))):
                if a[j] != b[j]:
                    return j
    return -1


# ---------------------------------------------------------------- bytes
def scenario_bytes(base, seed):
    rnd = random.Random(int(seed))
    cs = pool()["chunk_size"]
    size = 12 * cs
    api("POST", "/v1/volumes", {"name": "bm", "size": size}, ok=(201,))
    live = bytearray(size)
    h = connect(base, "bm")
    # chunks 0..9 hold data (some whole, some in part), 10 and 11 are holes
    for c in range(10):
        if c % 3 == 0:
            data = rnd.randbytes(cs)
            h.pwrite(data, c * cs)
            live[c * cs:(c + 1) * cs] = data
        else:
            off = c * cs + rnd.randrange(0, cs - 70000)
            data = rnd.randbytes(rnd.randrange(1, 70000))
            h.pwrite(data, off)
            live[off:off + len(data)] = data
    snaps = []          # (name, model bytes, handle opened at creation)
    ops = {"write": 0, "trim": 0, "trim-chunk": 0, "zero": 0, "zero-nohole": 0, "zero-chunk": 0}
    fast_zero = h.can_fast_zero()

    def take(name):
        api("POST", "/v1/volumes/bm/snapshots", {"name": name}, ok=(201,))
        snaps.append((name, bytes(live), connect(base, "bm@" + name)))

    def verify(where):
        got = read_all(h, size)
        check(got == live, "%s: live volume differs from the model at byte %d"
              % (where, first_diff(got, live)))
        for name, model, sh in snaps:
            got = read_all(sh, size)
            check(got == model, "%s: snapshot bm@%s changed: first difference at byte %d"
                  " (it must read what the volume held when it was taken)"
                  % (where, name, first_diff(got, model)))

    def trimmed(off, n):
        # NBD lets a trimmed range read as anything it held or zero; take
        # what it reads (byte by byte it must be one of the two) as the model
        got = h.pread(n, off)
        for j in range(n):
            check(got[j] == 0 or got[j] == live[off + j],
                  "trim at %d+%d: byte %d reads %d, neither old data nor zero" % (off, n, off + j, got[j]))
        live[off:off + n] = got

    take("s0")
    verify("after s0")
    for step in range(1, 181):
        kind = rnd.choice(["write", "write", "write", "trim", "trim-chunk", "zero", "zero-nohole", "zero-chunk"])
        frozen_chunk = rnd.randrange(12)
        if kind == "write":
            n = rnd.choice([1, 511, 513, 4095, 4097, rnd.randrange(1, 3 * cs)])
            off = rnd.randrange(0, size - n)
            if rnd.random() < 0.3:   # straddle a chunk boundary
                off = max(0, min(size - n, frozen_chunk * cs - n // 2))
            data = rnd.randbytes(n)
            h.pwrite(data, off, nbd.CMD_FLAG_FUA if rnd.random() < 0.2 else 0)
            live[off:off + n] = data
        elif kind == "trim":
            n = rnd.randrange(1, cs)
            off = frozen_chunk * cs + rnd.randrange(0, cs - n + 1)
            h.trim(n, off)
            trimmed(off, n)
        elif kind == "trim-chunk":
            n = cs * rnd.randrange(1, 3)
            off = min(frozen_chunk, 12 - n // cs) * cs
            h.trim(n, off)
            trimmed(off, n)
        elif kind in ("zero", "zero-nohole"):
            n = rnd.randrange(1, 2 * cs)
            off = rnd.randrange(0, size - n)
            flags = nbd.CMD_FLAG_NO_HOLE if kind == "zero-nohole" else 0
            h.zero(n, off, flags)
            live[off:off + n] = bytes(n)
        else:   # zero-chunk
            off = frozen_chunk * cs
            flags = 0
            if fast_zero and rnd.random() < 0.5:
                flags = nbd.CMD_FLAG_FAST_ZERO
            try:
                h.zero(cs, off, flags)
                live[off:off + cs] = bytes(cs)
            except nbd.Error as e:
                # FAST_ZERO may refuse with ENOTSUP; then nothing changed
                check(flags and e.errnum == errno.ENOTSUP, "zero of chunk at %d: %s" % (off, e))
        ops[kind] += 1
        if step % 30 == 0:
            verify("step %d" % step)
            take("s%d" % (step // 30))
    h.flush()
    verify("end")
    # fresh connections read the same
    h.shutdown()
    for name, model, sh in snaps:
        sh.shutdown()
        h2 = connect(base, "bm@" + name)
        check(read_all(h2, size) == model, "snapshot bm@%s reads differently on a new connection" % name)
        h2.shutdown()
    h2 = connect(base, "bm")
    check(read_all(h2, size) == live, "live volume reads differently on a new connection")
    h2.shutdown()
    print("byte model: %d snapshots of a %d-chunk volume stayed frozen through %s"
          % (len(snaps), size // cs, ", ".join("%d %s" % (v, k) for k, v in ops.items())))


# ---------------------------------------------------------------- chain
def chain_offset(i, cs):
    # 64 chunks, each written at several distinct 4k blocks over the chain
    return (i % 64) * cs + (i // 64) * 7 * K4 + K4


def chain_data(i):
    return hashlib.sha256(b"chain %d" % i).digest() * (K4 // 32)


def check_chain_snap(base, k, n, cs):
    h = connect(base, "ch@c%d" % k)
    for i in range(n):
        got = h.pread(K4, chain_offset(i, cs))
        want = chain_data(i) if i <= k else bytes(K4)
        check(got == want, "snapshot ch@c%d: block of write %d reads %s"
              % (k, i, "wrong data" if i <= k else "data written after the snapshot"))
    h.shutdown()


def scenario_chain(base, n):
    n = int(n)
    cs = pool()["chunk_size"]
    api("POST", "/v1/volumes", {"name": "ch", "size": 64 * cs}, ok=(201,))
    h = connect(base, "ch")
    times = []
    for i in range(n):
        h.pwrite(chain_data(i), chain_offset(i, cs))
        t = time.monotonic()
        api("POST", "/v1/volumes/ch/snapshots", {"name": "c%d" % i}, ok=(201,))
        times.append(time.monotonic() - t)
    print("chain: %d snapshots taken, create time median %.1f ms, max %.1f ms"
          % (n, sorted(times)[n // 2] * 1000, max(times) * 1000))
    mine = [s for s in snapshots() if s.startswith("ch@")]
    check(len(mine) == n, "%d snapshots of ch listed, expected %d" % (len(mine), n))
    vol = api("GET", "/v1/volumes/ch", ok=(200,))[1]
    check(vol["snapshots"] == n, "volume snapshots is %d, expected %d" % (vol["snapshots"], n))
    mid = n // 2
    for k in sorted({0, 1, mid - 1, mid, mid + 1, n - 2, n - 1}):
        check_chain_snap(base, k, n, cs)
    # the live volume at the end of a long chain still reads (and writes)
    t = time.monotonic()
    for i in range(n):
        check(h.pread(K4, chain_offset(i, cs)) == chain_data(i), "live volume lost write %d" % i)
    dt = time.monotonic() - t
    print("chain: %d 4k reads of the live volume at the end of the chain: %.2f ms each"
          % (n, dt * 1000 / n))
    h.pwrite(b"\x5a" * K4, 0)
    check(h.pread(K4, 0) == b"\x5a" * K4, "write to the live volume at the end of the chain")
    h.shutdown()
    # delete the middle one: it frees exactly its exclusive bytes
    before = pool()
    s = api("GET", "/v1/snapshots/" + q("ch@c%d" % mid), ok=(200,))[1]
    api("DELETE", "/v1/snapshots/" + q("ch@c%d" % mid), ok=(204,))
    after = pool()
    check(before["allocated"] - after["allocated"] == s["exclusive"],
          "deleting ch@c%d (exclusive %d) freed %d bytes"
          % (mid, s["exclusive"], before["allocated"] - after["allocated"]))
    check(after["leaked"] == 0, "leaked %d after deleting a snapshot" % after["leaked"])
    check(after["snapshots"] == before["snapshots"] - 1, "pool snapshots %d after a delete (was %d)"
          % (after["snapshots"], before["snapshots"]))
    check(api("GET", "/v1/snapshots/" + q("ch@c%d" % mid))[0] == 404, "deleted snapshot still shown")
    for k in (mid - 1, mid + 1):
        check_chain_snap(base, k, n, cs)
    # what the volume and its snapshots hold: the 64 chunks written, each
    # referenced by every snapshot taken after its first write
    snaps = snapshots()
    for k in (0, mid - 1, n - 1):
        s = snaps["ch@c%d" % k]
        want = min(k + 1, 64) * cs
        check(s["referenced"] == want, "ch@c%d referenced %d, expected %d" % (k, s["referenced"], want))
    check(after["allocated"] >= after["shared"], "allocated < shared")
    print("chain: deleted ch@c%d, freed %d bytes (its exclusive), neighbours read right, leaked 0"
          % (mid, before["allocated"] - after["allocated"]))


# ---------------------------------------------------------------- accounting
class View:
    def __init__(self, name, chunks, lineage):
        self.name = name
        self.map = dict(chunks)     # chunk -> pid
        self.lineage = lineage      # for a live volume: pids it wrote itself belong to it


def scenario_accounting(base, seed, steps):
    rnd = random.Random(int(seed))
    steps = int(steps)
    cs = pool()["chunk_size"]
    NCH = 12
    size = NCH * cs
    start = pool()
    check(start["allocated"] == 0, "pool not empty at start: %s" % start)
    vols = {}       # name -> View
    snaps = {}      # "vol@snap" -> View
    content = {}    # pid -> {offset in chunk: tag}
    owner = {}      # pid -> lineage that wrote it
    counters = {"pid": 0, "lin": 0, "vol": 0, "snap": 0, "tag": 0}
    hist = []

    def new(kind):
        counters[kind] += 1
        return counters[kind]

    def visible_pids():
        out = {}
        for v in list(vols.values()) + list(snaps.values()):
            for pid in v.map.values():
                out[pid] = out.get(pid, 0) + 1
        return out

    def tag_bytes(tag):
        return hashlib.sha256(b"acct %d" % tag).digest() * (K4 // 32)

    def mkvol(name, from_snap=None):
        body = {"name": name}
        if from_snap:
            body["from_snapshot"] = from_snap
        else:
            body["size"] = size
        api("POST", "/v1/volumes", body, ok=(201,))
        vols[name] = View(name, snaps[from_snap].map if from_snap else {}, new("lin"))

    def write(vname, c, off):
        v = vols[vname]
        tag = new("tag")
        h = connect(base, vname)
        h.pwrite(tag_bytes(tag), c * cs + off)
        h.shutdown()
        refs = visible_pids()
        pid = v.map.get(c)
        if pid is None or refs[pid] > 1 or owner[pid] != v.lineage:
            npid = new("pid")
            content[npid] = dict(content[pid]) if pid is not None else {}
            owner[npid] = v.lineage
            v.map[c] = npid
            pid = npid
        content[pid][off] = tag

    def trim_chunk(vname, c):
        h = connect(base, vname)
        h.trim(cs, c * cs)
        h.shutdown()
        vols[vname].map.pop(c, None)

    def verify(where, deep):
        refs = visible_pids()
        p = pool()
        want_alloc = len(refs) * cs
        want_shared = sum(1 for n in refs.values() if n > 1) * cs
        ctx = "%s (history: %s)" % (where, "; ".join(hist[-6:]))
        check(p["leaked"] == 0, "%s: pool leaked %d" % (ctx, p["leaked"]))
        check(p["allocated"] == want_alloc, "%s: pool allocated %d, model says %d" % (ctx, p["allocated"], want_alloc))
        check(p["shared"] == want_shared, "%s: pool shared %d, model says %d" % (ctx, p["shared"], want_shared))
        check(p["volumes"] == len(vols), "%s: pool volumes %d, model %d" % (ctx, p["volumes"], len(vols)))
        check(p["snapshots"] == len(snaps), "%s: pool snapshots %d, model %d" % (ctx, p["snapshots"], len(snaps)))
        got = snapshots()
        check(set(got) == set(snaps), "%s: snapshots listed %s, model %s" % (ctx, sorted(got), sorted(snaps)))
        for ref, v in snaps.items():
            excl = sum(1 for pid in v.map.values() if refs[pid] == 1) * cs
            check(got[ref]["referenced"] == len(v.map) * cs, "%s: %s referenced %d, model %d"
                  % (ctx, ref, got[ref]["referenced"], len(v.map) * cs))
            check(got[ref]["exclusive"] == excl, "%s: %s exclusive %d, model %d"
                  % (ctx, ref, got[ref]["exclusive"], excl))
        gotv = volumes()
        check(set(gotv) == set(vols), "%s: volumes listed %s, model %s" % (ctx, sorted(gotv), sorted(vols)))
        for name, v in vols.items():
            own = sum(1 for pid in v.map.values() if owner[pid] == v.lineage) * cs
            check(gotv[name]["allocated"] == own, "%s: volume %s allocated %d, model (its own writes) %d"
                  % (ctx, name, gotv[name]["allocated"], own))
        if deep:
            for export, v in list(vols.items()) + list(snaps.items()):
                h = connect(base, export)
                for c in range(NCH):
                    pid = v.map.get(c)
                    offs = content[pid] if pid is not None else {}
                    for off, tag in offs.items():
                        check(h.pread(K4, c * cs + off) == tag_bytes(tag),
                              "%s: %s chunk %d +%d does not hold its write" % (ctx, export, c, off))
                    free = next(o for o in range(0, cs, K4) if o not in offs)
                    check(h.pread(K4, c * cs + free) == bytes(K4),
                          "%s: %s chunk %d +%d is not zero" % (ctx, export, c, free))
                h.shutdown()

    mkvol("a0")
    hist.append("create a0")
    freed_checks = 0
    if os.environ.get("SNAP_MODEL_HISTORY"):
        import atexit
        atexit.register(lambda: open(os.environ["SNAP_MODEL_HISTORY"], "w").write("\n".join(hist) + "\n"))
    for step in range(steps):
        r = rnd.random()
        vnames = sorted(vols)
        snames = sorted(snaps)
        if not vnames:
            if snames and rnd.random() < 0.7:
                src = rnd.choice(snames)
                name = "a%d" % new("vol")
                mkvol(name, src)
                hist.append("clone %s from %s" % (name, src))
            else:
                name = "a%d" % new("vol")
                mkvol(name)
                hist.append("create %s" % name)
        elif r < 0.40:
            vn = rnd.choice(vnames)
            c = rnd.randrange(NCH)
            off = rnd.randrange(cs // K4) * K4
            write(vn, c, off)
            hist.append("write %s chunk %d" % (vn, c))
        elif r < 0.48:
            vn = rnd.choice(vnames)
            c = rnd.randrange(NCH)
            trim_chunk(vn, c)
            hist.append("trim %s chunk %d" % (vn, c))
        elif r < 0.64:
            vn = rnd.choice(vnames)
            sn = "s%d" % new("snap")
            api("POST", "/v1/volumes/%s/snapshots" % vn, {"name": sn}, ok=(201,))
            snaps["%s@%s" % (vn, sn)] = View("%s@%s" % (vn, sn), vols[vn].map, None)
            hist.append("snapshot %s@%s" % (vn, sn))
        elif r < 0.74 and snames:
            ref = rnd.choice(snames)
            before = pool()
            excl = api("GET", "/v1/snapshots/" + q(ref), ok=(200,))[1]["exclusive"]
            api("DELETE", "/v1/snapshots/" + q(ref), ok=(204,))
            after = pool()
            check(before["allocated"] - after["allocated"] == excl,
                  "deleting %s (exclusive %d) freed %d bytes (history: %s)"
                  % (ref, excl, before["allocated"] - after["allocated"], "; ".join(hist[-6:])))
            freed_checks += 1
            del snaps[ref]
            hist.append("delete %s" % ref)
        elif r < 0.82 and snames:
            src = rnd.choice(snames)
            name = "a%d" % new("vol")
            mkvol(name, src)
            hist.append("clone %s from %s" % (name, src))
        elif r < 0.90:
            vn = rnd.choice(vnames)
            mine = [s for s in snames if s.startswith(vn + "@")]
            if not mine:
                continue
            ref = rnd.choice(mine)
            api("POST", "/v1/volumes/%s/rollback" % vn, {"snapshot": ref.split("@")[1]}, ok=(200,))
            v = vols[vn]
            v.map = dict(snaps[ref].map)
            v.lineage = new("lin")
            hist.append("rollback %s to %s" % (vn, ref))
        elif r < 0.95 and len(vnames) > 1:
            vn = rnd.choice(vnames)
            api("DELETE", "/v1/volumes/" + vn, ok=(204,))
            del vols[vn]
            hist.append("delete volume %s" % vn)
        else:
            continue
        verify("step %d: %s" % (step, hist[-1]), deep=(step % 10 == 0))
    verify("end of random steps", deep=True)
    peak = pool()
    # delete everything in random order; every snapshot delete frees its exclusive bytes
    items = [("s", s) for s in snaps] + [("v", v) for v in vols]
    rnd.shuffle(items)
    for kind, name in items:
        if kind == "s":
            before = pool()
            excl = api("GET", "/v1/snapshots/" + q(name), ok=(200,))[1]["exclusive"]
            api("DELETE", "/v1/snapshots/" + q(name), ok=(204,))
            after = pool()
            check(before["allocated"] - after["allocated"] == excl,
                  "final clean-up: deleting %s (exclusive %d) freed %d bytes"
                  % (name, excl, before["allocated"] - after["allocated"]))
            freed_checks += 1
            del snaps[name]
            hist.append("delete %s" % name)
        else:
            api("DELETE", "/v1/volumes/" + name, ok=(204,))
            del vols[name]
            hist.append("delete volume %s" % name)
        verify("clean-up: %s" % hist[-1], deep=False)
    end = pool()
    check(end["allocated"] == 0 and end["shared"] == 0 and end["leaked"] == 0,
          "after deleting everything the pool is %s" % end)
    print("accounting: %d steps (seed %s), peak %d volumes + %d snapshots, %d MiB allocated, "
          "%d MiB shared; %d snapshot deletes freed exactly their exclusive bytes; all deleted: allocated 0"
          % (steps, seed, peak["volumes"], peak["snapshots"], peak["allocated"] >> 20,
             peak["shared"] >> 20, freed_checks))


# ---------------------------------------------------------------- crash churn
def scenario_churn(base, vol, seed, busy=None):
    rnd = random.Random(int(seed))
    n = 0
    try:
        cs = pool()["chunk_size"]
        size = api("GET", "/v1/volumes/" + vol, ok=(200,))[1]["size"]
        while True:
            n += 1
            tag = "%d-%d" % (int(seed), n)
            r = rnd.random()
            # a few writes so that snapshots and clones have copy-on-write to do
            h = connect(base, vol)
            for _ in range(rnd.randrange(1, 6)):
                c = rnd.randrange(size // cs)
                h.pwrite(hashlib.sha256(tag.encode()).digest() * 128, c * cs + rnd.randrange(0, cs // K4) * K4)
            h.shutdown()
            api("POST", "/v1/volumes/%s/snapshots" % vol, {"name": "k" + tag}, ok=(201,))
            snaps = sorted(s for s in snapshots() if s.startswith(vol + "@"))
            if r < 0.3 and snaps:
                api("DELETE", "/v1/snapshots/" + q(rnd.choice(snaps)), ok=(204, 404))
            elif r < 0.55 and snaps:
                api("POST", "/v1/volumes", {"name": "kc" + tag, "from_snapshot": rnd.choice(snaps)}, ok=(201,))
                h = connect(base, "kc" + tag)
                h.pwrite(b"\xc1" * K4, rnd.randrange(0, size // K4) * K4)
                h.shutdown()
            elif r < 0.7:
                clones = sorted(v for v in volumes() if v.startswith("kc"))
                if clones:
                    api("DELETE", "/v1/volumes/" + rnd.choice(clones), ok=(204, 404))
            elif r < 0.85 and snaps:
                api("POST", "/v1/volumes/%s/rollback" % vol, {"snapshot": rnd.choice(snaps)}, ok=(200,))
            # keep the number of snapshots bounded
            if len(snaps) > 12:
                api("DELETE", "/v1/snapshots/" + q(snaps[0]), ok=(204, 404))
            # snapshots of the volume a writer is busy with: its next writes copy on write
            if busy and n % 3 == 0:
                api("POST", "/v1/volumes/%s/snapshots" % busy, {"name": "b" + tag}, ok=(201,))
                bs = sorted(s for s in snapshots() if s.startswith(busy + "@"))
                if len(bs) > 4:
                    api("DELETE", "/v1/snapshots/" + q(bs[0]), ok=(204, 404))
    except (OSError, nbd.Error, urllib.error.URLError, ConnectionError):
        pass        # blockd was killed
    except Fail as e:
        # an API call that failed while blockd was alive is a real error,
        # unless blockd died under it (the test tells by whether it is alive)
        print("churn: %s" % e)
        sys.exit(2)
    print("churn: %d rounds" % n)


def export_digest(h, size):
    d = hashlib.sha256()
    for off in range(0, size, M):
        d.update(h.pread(min(M, size - off), off))
    return d.hexdigest()


def scenario_coherent(base, state=None):
    p = pool()
    check(p["leaked"] == 0, "pool leaked %d" % p["leaked"])
    check(p["allocated"] >= p["shared"], "pool allocated %d < shared %d" % (p["allocated"], p["shared"]))
    vs = volumes()
    ss = snapshots()
    check(p["volumes"] == len(vs), "pool volumes %d but %d listed" % (p["volumes"], len(vs)))
    check(p["snapshots"] == len(ss), "pool snapshots %d but %d listed" % (p["snapshots"], len(ss)))
    # snapshots are immutable: one seen before (same id) must read the same now
    prev = json.load(open(state)) if state and os.path.exists(state) else {}
    digests = {}
    same = 0
    for export, size in [(n, v["size"]) for n, v in vs.items()] + [(n, s["size"]) for n, s in ss.items()]:
        try:
            h = connect(base, export)
        except nbd.Error as e:
            raise Fail("export %s is listed but cannot be opened: %s" % (export, e))
        check(h.get_size() == size, "export %s size %d, listed %d" % (export, h.get_size(), size))
        d = export_digest(h, size)
        h.shutdown()
        if export in ss:
            sid = ss[export]["id"]
            digests[sid] = [export, d]
            if sid in prev:
                check(prev[sid][1] == d, "snapshot %s reads differently than before the crash" % export)
                same += 1
    if state:
        with open(state, "w") as f:
            json.dump(digests, f)
    for ref, s in ss.items():
        vol = ref.split("@")[0]
        if vol in vs:
            st, _ = api("GET", "/v1/snapshots/%s/diff?to=%s" % (q(ref), q(vol)))
            check(st == 200, "diff %s -> %s: %d" % (ref, vol, st))
    print("coherent: %d volumes, %d snapshots, all readable (%d snapshots unchanged since the last round);"
          " allocated %d, shared %d, leaked 0" % (len(vs), len(ss), same, p["allocated"], p["shared"]))


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    try:
        {"bytes": scenario_bytes, "chain": scenario_chain, "accounting": scenario_accounting,
         "churn": scenario_churn, "coherent": scenario_coherent}[what](*args)
    except Fail as e:
        print("FAIL:", e)
        sys.exit(1)
