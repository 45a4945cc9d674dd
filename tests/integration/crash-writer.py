#!/usr/bin/python3
"""Crash-consistency writer and verifier for blockd.

write URI STATE SEED: write 4 KiB blocks with contents derived from
    (block, generation) at random places, QD 8, a FLUSH every 64 writes;
    one write in 32 is a whole 1 MiB (256 blocks, aligned: a whole chunk
    at the test's chunk size, which a snapshot makes a copy-on-write);
    record in STATE (JSON, rewritten often) for each block the generation
    last acknowledged and the generations still in flight.  It runs until
    the server goes away (the test kills it) and exits 0.
verify URI STATE: every block must hold its acknowledged generation, or one
    of the generations that were in flight for it when the server died.
    Acknowledged writes survive a process crash (the data is in the pool and
    the chunk map in the WAL before the reply); after a power loss only the
    flushed ones would have to.
"""
import hashlib, json, os, random, sys, time
import nbd

BS = 4096
CHUNK_BLOCKS = 256          # 1 MiB

def block_data(block, gen):
    if gen == 0:
        return bytes(BS)
    seed = hashlib.sha256(b"%d:%d" % (block, gen)).digest()
    return seed * (BS // len(seed))

def save(path, acked, pending, flushed_writes, writes):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"acked": acked, "pending": {k: sorted(v) for k, v in pending.items()},
                   "writes": writes, "flushed_writes": flushed_writes}, f)
    os.replace(tmp, path)

def write(uri, state, seed):
    rnd = random.Random(int(seed))
    h = nbd.NBD()
    h.connect_uri(uri)
    nblocks = h.get_size() // BS
    acked, pending = {}, {}
    gens = {}
    writes = flushed = 0
    inflight = {}
    if os.path.exists(state):
        # Go on from the last round: generations keep growing, and blocks
        # whose last write had an unknown outcome get a definite one first.
        prev = json.load(open(state))
        acked = prev["acked"]
        for key, g in acked.items():
            gens[int(key)] = g
        for key, gs in prev["pending"].items():
            b = int(key)
            g = max(max(gs), gens.get(b, 0)) + 1
            h.pwrite(block_data(b, g), b * BS)
            gens[b] = g
            acked[key] = g
        h.flush()
    try:
        while True:
            while len(inflight) < 8:
                # never two writes to one block at once: the server may run
                # them in either order, so the result would be undefined
                busy = {b for x in inflight.values() for b, _ in x[0]}
                n = CHUNK_BLOCKS if rnd.random() < 1 / 32 else 1
                b0 = rnd.randrange(nblocks // n) * n
                while busy & set(range(b0, b0 + n)):
                    b0 = rnd.randrange(nblocks // n) * n
                blocks = []
                for b in range(b0, b0 + n):
                    gens[b] = gens.get(b, 0) + 1
                    blocks.append((b, gens[b]))
                    pending.setdefault(str(b), set()).add(gens[b])
                buf = nbd.Buffer.from_bytearray(bytearray(b"".join(block_data(b, g) for b, g in blocks)))
                c = h.aio_pwrite(buf, b0 * BS)
                inflight[c] = (blocks, buf)
            h.poll(-1)
            for c in list(inflight):
                if h.aio_command_completed(c):
                    blocks, _ = inflight.pop(c)
                    for b, g in blocks:
                        key = str(b)
                        pending[key].discard(g)
                        if not pending[key]:
                            del pending[key]
                        if acked.get(key, 0) < g:
                            acked[key] = g
                    writes += 1
                    if writes % 64 == 0:
                        h.flush()
                        flushed = writes
            if writes % 16 == 0:
                save(state, acked, pending, flushed, writes)
    except nbd.Error:
        pass   # the server was killed
    save(state, acked, pending, flushed, writes)

def verify(uri, state):
    st = json.load(open(state))
    acked = st["acked"]
    pending = {k: set(v) for k, v in st["pending"].items()}
    h = nbd.NBD()
    h.connect_uri(uri)
    bad = 0
    checked = 0
    for key in set(acked) | set(pending):
        b = int(key)
        got = h.pread(BS, b * BS)
        ok = {acked.get(key, 0)} | {g for g in pending.get(key, ()) if g > acked.get(key, 0)}
        # A write that was never acknowledged may be torn at sector
        # granularity, as on any disk: each 512-byte sector holds one of the
        # allowed generations.
        if not all(any(got[i:i + 512] == block_data(b, g)[i:i + 512] for g in ok)
                   for i in range(0, BS, 512)) or (not pending.get(key)
                                                  and got != block_data(b, acked.get(key, 0))):
            bad += 1
            if bad <= 5:
                what = "zeros" if got == bytes(BS) else "?"
                for g in range(0, max(ok) + 3):
                    if got == block_data(b, g):
                        what = "generation %d" % g
                print("block %d: holds none of generations %s (it holds %s)" % (b, sorted(ok), what))
        checked += 1
    h.shutdown()
    print("verified %d blocks (%d bytes), %d writes acknowledged, %d flushed, %d bad"
          % (checked, checked * BS, st["writes"], st["flushed_writes"], bad))
    return 1 if bad else 0

if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(verify(sys.argv[2], sys.argv[3]))
