"""A hyperparameter search through the mount, mirrored to a reference
tree (see mirror.py): four trial *processes* train at once, each in
`hp/trial_K/`: every epoch overwrites `last.pt`, appends a line to
`history.jsonl`, and overwrites `best.pt` when the eval loss improved.

    hpsearch.py save MNT REF      (takes the snapshot `final` at the end)
    hpsearch.py check MNT         every trial's best and history, live,
                                  in `final` and in `.ckpt/versions/`
"""

import json
import multiprocessing as mp
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirror import Mirror, write_bytes  # noqa: E402

TRIALS = 4
EPOCHS = 12


def loss(k, e):
    # Improves with noise: not every epoch is a new best.
    noise = np.random.default_rng(50 + k).random(EPOCHS)
    return round(float(1.0 / (1 + e * (k + 1) * 0.1) + 0.3 * noise[e]), 6)


def weights(k, e):
    return np.random.default_rng(1000 * k + e).standard_normal((128, 256), dtype=np.float32)


def ckpt(k, e):
    return pickle.dumps({"trial": k, "epoch": e, "loss": loss(k, e), "w": weights(k, e)}, protocol=4)


def bests(k):
    """The epochs at which trial k's best.pt was written."""
    out, best = [], float("inf")
    for e in range(EPOCHS):
        if loss(k, e) < best:
            best = loss(k, e)
            out.append(e)
    return out


def trial(mnt, ref, k, barrier):
    m = Mirror(mnt, ref)
    d = f"hp/trial_{k}"
    m.mkdir(d)
    m.save(f"{d}/config.json", write_bytes(json.dumps({"trial": k, "lr": 10 ** -(k + 2)}).encode()))
    barrier.wait()
    for e in range(EPOCHS):
        m.save(f"{d}/last.pt", write_bytes(ckpt(k, e)))
        line = json.dumps({"epoch": e, "eval_loss": loss(k, e)}) + "\n"
        for root in m.roots():
            with open(os.path.join(root, d, "history.jsonl"), "a") as f:
                f.write(line)
        m.record(f"{d}/history.jsonl")
        if e in bests(k):
            m.save(f"{d}/best.pt", write_bytes(ckpt(k, e)))
        time.sleep(0.02)


def save(m):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(TRIALS)
    procs = [ctx.Process(target=trial, args=(m.mnt, m.ref, k, barrier)) for k in range(TRIALS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise SystemExit(f"trials exited with {bad}")
    m.snapshot("final")
    m.done(bests={k: bests(k) for k in range(TRIALS)})


def load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def check_dir(d, k, what):
    hist = [json.loads(l) for l in open(os.path.join(d, "history.jsonl"))]
    assert hist == [{"epoch": e, "eval_loss": loss(k, e)} for e in range(EPOCHS)], f"{what}: history"
    best = load(os.path.join(d, "best.pt"))
    e = min(range(EPOCHS), key=lambda e: hist[e]["eval_loss"])
    assert best["epoch"] == e and best["loss"] == hist[e]["eval_loss"], f"{what}: best.pt is epoch {best['epoch']}"
    assert np.array_equal(best["w"], weights(k, e)), f"{what}: best.pt weights"
    last = load(os.path.join(d, "last.pt"))
    assert last["epoch"] == EPOCHS - 1 and np.array_equal(last["w"], weights(k, EPOCHS - 1)), what


def check(mnt):
    n = 0
    for k in range(TRIALS):
        rel = f"hp/trial_{k}"
        check_dir(os.path.join(mnt, rel), k, f"live {rel}")
        check_dir(os.path.join(mnt, ".ckpt/snapshots/final", rel), k, f"final/{rel}")
        vdir = os.path.join(mnt, ".ckpt/versions", rel, "best.pt")
        versions = sorted(v for v in os.listdir(vdir) if v != "latest")
        epochs = [load(os.path.join(vdir, v))["epoch"] for v in versions]
        assert epochs == bests(k), f"trial {k}: best.pt versions are epochs {epochs}, want {bests(k)}"
        losses = [loss(k, e) for e in epochs]
        assert all(a > b for a, b in zip(losses, losses[1:])), f"trial {k}: {losses}"
        hdir = os.path.join(mnt, ".ckpt/versions", rel, "history.jsonl")
        hv = sorted(v for v in os.listdir(hdir) if v != "latest")
        assert len(hv) == EPOCHS, f"trial {k}: {len(hv)} versions of history.jsonl"
        for i, v in enumerate(hv):
            lines = open(os.path.join(hdir, v)).read().splitlines()
            assert len(lines) == i + 1, f"trial {k}: history version {i + 1} has {len(lines)} lines"
        n += 1
    print("trials ok", n)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(Mirror(sys.argv[2], sys.argv[3]))
    else:
        check(sys.argv[2])
