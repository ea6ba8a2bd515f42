"""A PyTorch-DCP-like save through the mount, mirrored to a reference
tree (see mirror.py): for each step, four rank *processes* start together
(a barrier) and each writes its shard `__R_0.distcp` in 256 KiB pieces;
once all have closed, the coordinator writes `.metadata.tmp` and renames
it to `.metadata`, which takes an automatic snapshot. Right after each
snapshot appears, its four shards are read back and compared.

    dcp.py save MNT REF
"""

import hashlib
import multiprocessing as mp
import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirror import Mirror, write_bytes  # noqa: E402

RANKS = 4
PIECE = 256 << 10


def shard(step, rank):
    size = (3 << 20) + 4096 * rank + step
    return np.random.default_rng(step * 10 + rank).bytes(size)


def rank_main(mnt, ref, step, rank, barrier):
    m = Mirror(mnt, ref)
    rel = f"ckpt/step_{step}/__{rank}_0.distcp"
    data = shard(step, rank)
    barrier.wait()
    for root in m.roots():
        with open(os.path.join(root, rel), "wb") as f:
            for i in range(0, len(data), PIECE):
                f.write(data[i:i + PIECE])
    m.record(rel)


def save(m):
    ctx = mp.get_context("fork")
    autos = []
    for step in (100, 200, 300):
        d = f"ckpt/step_{step}"
        m.mkdir(d)
        barrier = ctx.Barrier(RANKS)
        procs = [ctx.Process(target=rank_main, args=(m.mnt, m.ref, step, r, barrier))
                 for r in range(RANKS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise SystemExit(f"step {step}: ranks exited with {bad}")
        meta = {"step": step, "shards": {r: hashlib.sha256(shard(step, r)).hexdigest()
                                         for r in range(RANKS)}}
        m.save(f"{d}/.metadata.tmp", write_bytes(pickle.dumps(meta, protocol=4)))
        before = m.autos()
        m.rename(f"{d}/.metadata.tmp", f"{d}/.metadata")
        name = m.wait_auto(before, f"renaming {d}/.metadata.tmp")
        autos.append(name)
        snap = m.ctl(f"snapshots/{name}/{d}")
        got = sorted(os.listdir(snap))
        want = sorted([".metadata"] + [f"__{r}_0.distcp" for r in range(RANKS)])
        if got != want:
            raise SystemExit(f"{name}: {d} holds {got}")
        with open(os.path.join(snap, ".metadata"), "rb") as f:
            meta = pickle.load(f)
        for r in range(RANKS):
            with open(os.path.join(snap, f"__{r}_0.distcp"), "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()
            if h != meta["shards"][r]:
                raise SystemExit(f"{name}: shard {r} of step {step} is not what rank {r} wrote")
    m.done(autos=autos)


if __name__ == "__main__":
    save(Mirror(sys.argv[2], sys.argv[3]))
