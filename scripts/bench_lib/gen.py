"""Generates the checkpoint sequences of scripts/bench, once, before timing.

    .venv/bin/python scripts/bench_lib/gen.py OUTDIR --scale S --saves N \
        --sequences full,frozen,copies,sparse,ranks [--seed 1]

Writes OUTDIR/<seq>/<save>/<file> and OUTDIR/manifest.json (saves, files,
sizes, and which saves/files are duplicates). Deterministic for a seed.
Values are float32 as training leaves them (weights ~N(0, 0.02), Adam
moments, small updates), so lz4 gains little on them. At scale 1 with 3
saves the five sequences hold about 4 GiB:

  full    a 15M-parameter model with Adam: weights, exp_avg, exp_avg_sq, all
          changed at every save, in one torch.save-like zip per save,
          `step_K/step_K.pt`, whose records are named `step_K/data/0`, ...
  frozen  a fine-tune: the last block and the final norm (about 10% of the
          tensors) change, the rest is the same bytes; each save written as
          `model.pt` (zip) and `model.safetensors`.
  copies  each save writes the same weights as `best.pt` and `last.pt`
          (as torch does, their records are named `best/...` and
          `last/...`), then one more save `eval_K` holding the previous
          save's files again, byte for byte.
  sparse  a (1,000,000 x 64) float32 embedding table (np.save); 2% of
          the rows, scattered, change between saves.
  ranks   8 shards `rank_I.distcp` of 256 MiB each, new data at every save;
          saves // 3 saves (at least 1), since 8 x 256 MiB is 2 GiB.
"""

import argparse
import json
import os
import pickle
import shutil
import struct
import zipfile

import numpy as np
from safetensors.numpy import save_file

PARAMS = 15_000_000          # model parameters at scale 1
LAYERS = 12
SPARSE_ROWS, SPARSE_DIM, SPARSE_CHANGED = 1_000_000, 64, 0.02
RANKS, RANK_BYTES = 8, 256 << 20
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SEQUENCES = ("full", "frozen", "copies", "sparse", "ranks")


def model_shapes(scale):
    """A small transformer: tied embedding, LAYERS blocks, final norm."""
    d = max(16, round((PARAMS * scale / (12 * LAYERS + 4)) ** 0.5 / 16) * 16)
    shapes = {"embed.weight": (4 * d, d)}
    for i in range(LAYERS):
        b = f"layers.{i}."
        for n in "qkvo":
            shapes[f"{b}attn.{n}.weight"] = (d, d)
        shapes[b + "mlp.up.weight"] = (4 * d, d)
        shapes[b + "mlp.down.weight"] = (d, 4 * d)
        shapes[b + "norm1.weight"] = (d,)
        shapes[b + "norm2.weight"] = (d,)
    shapes["norm.weight"] = (d,)
    return shapes


def init_weights(rng, shapes):
    return {k: (1 + 0.01 * rng.standard_normal(s, dtype=np.float32)) if len(s) == 1
            else 0.02 * rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def nudge(rng, a, size=1e-4):
    """One optimizer step's worth of change: every element moves."""
    return a + np.float32(size) * rng.standard_normal(a.shape, dtype=np.float32)


def write_pt(path, tensors, serial):
    """A torch.save-like zip: stored records named after the file itself,
    data records 64-byte aligned by an 'FB' padding extra field as torch does."""
    prefix = os.path.splitext(os.path.basename(path))[0]
    meta = {k: ("storage", "FloatStorage", str(i), "cpu", a.shape)
            for i, (k, a) in enumerate(tensors.items())}
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        def record(name, data):
            name = f"{prefix}/{name}"
            pad = -(f.tell() + 30 + len(name.encode()) + 4) % 64
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            z.writestr(info, data)
        record("data.pkl", pickle.dumps(meta, protocol=2))
        record(".format_version", b"1")
        record("byteorder", b"little")
        for i, a in enumerate(tensors.values()):
            record(f"data/{i}", np.ascontiguousarray(a).reshape(-1).view(np.uint8))
        record("version", b"3\n")
        record(".data/serialization_id", f"{serial:020d}".encode())


def gen_full(rng, out, scale, saves):
    shapes = model_shapes(scale)
    w = init_weights(rng, shapes)
    m = {k: 1e-3 * rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    v = {k: 1e-6 * np.square(rng.standard_normal(s, dtype=np.float32)) for k, s in shapes.items()}
    for s in range(1, saves + 1):
        for k in shapes:
            g = 1e-3 * rng.standard_normal(shapes[k], dtype=np.float32)
            m[k] = np.float32(0.9) * m[k] + np.float32(0.1) * g
            v[k] = np.float32(0.999) * v[k] + np.float32(0.001) * g * g
            w[k] = w[k] - np.float32(1e-3) * m[k] / (np.sqrt(v[k]) + np.float32(1e-8))
        name = f"step_{100 * s}"
        os.makedirs(os.path.join(out, name))
        state = {**w, **{f"exp_avg.{k}": a for k, a in m.items()},
                 **{f"exp_avg_sq.{k}": a for k, a in v.items()}}
        write_pt(os.path.join(out, name, f"{name}.pt"), state, int(rng.integers(1 << 62)))
    return {}


def gen_frozen(rng, out, scale, saves):
    shapes = model_shapes(scale)
    w = init_weights(rng, shapes)
    trained = [k for k in shapes if k.startswith(f"layers.{LAYERS - 1}.")] + ["norm.weight"]
    for s in range(1, saves + 1):
        if s > 1:
            for k in trained:
                w[k] = nudge(rng, w[k])
        d = os.path.join(out, f"step_{100 * s}")
        os.makedirs(d)
        write_pt(os.path.join(d, "model.pt"), w, int(rng.integers(1 << 62)))
        save_file(w, os.path.join(d, "model.safetensors"))
    return {"dup_saves": [f"step_{100 * s}" for s in range(2, saves + 1)],
            "dup_label": f"saves 2+ (~{100 * len(trained) // len(shapes)}% of tensors new)"}


def gen_copies(rng, out, scale, saves):
    shapes = model_shapes(scale)
    w = init_weights(rng, shapes)
    for s in range(1, saves + 1):
        if s > 1:
            w = {k: nudge(rng, a) for k, a in w.items()}
        d = os.path.join(out, f"step_{100 * s}")
        os.makedirs(d)
        for f in ("best.pt", "last.pt"):
            write_pt(os.path.join(d, f), w, int(rng.integers(1 << 62)))
    shutil.copytree(d, os.path.join(out, f"eval_{100 * saves}"))
    return {"dup_saves": [f"eval_{100 * saves}"], "dup_label": "unchanged-model save",
            "dup_files": [[f"step_{100 * s}", "last.pt"] for s in range(1, saves + 1)]}


def gen_sparse(rng, out, scale, saves):
    rows = max(1000, int(SPARSE_ROWS * scale))
    table = 0.02 * rng.standard_normal((rows, SPARSE_DIM), dtype=np.float32)
    for s in range(1, saves + 1):
        if s > 1:
            idx = rng.choice(rows, size=int(rows * SPARSE_CHANGED), replace=False)
            table[idx] = nudge(rng, table[idx], 1e-3)
        d = os.path.join(out, f"step_{100 * s}")
        os.makedirs(d)
        np.save(os.path.join(d, "embedding.npy"), table)
    return {}


def gen_ranks(rng, out, scale, saves):
    n = max(1024, int(RANK_BYTES * scale) // 4)
    for s in range(1, max(1, saves // 3) + 1):
        d = os.path.join(out, f"step_{100 * s}")
        os.makedirs(d)
        for r in range(RANKS):
            with open(os.path.join(d, f"rank_{r}.distcp"), "wb") as f:
                for i in range(0, n, 1 << 24):
                    (0.02 * rng.standard_normal(min(1 << 24, n - i), dtype=np.float32)).tofile(f)
    return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--scale", type=float, required=True)
    ap.add_argument("--saves", type=int, default=3)
    ap.add_argument("--sequences", default=",".join(SEQUENCES))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    manifest = {}
    for seq in args.sequences.split(","):
        out = os.path.join(args.out, seq)
        os.makedirs(out)
        rng = np.random.default_rng([args.seed, SEQUENCES.index(seq)])
        info = globals()[f"gen_{seq}"](rng, out, args.scale, args.saves)
        saves = []
        for name in sorted(os.listdir(out), key=lambda n: (n.startswith("eval"), int(n.split("_")[1]))):
            files = [{"name": f, "bytes": os.path.getsize(os.path.join(out, name, f))}
                     for f in sorted(os.listdir(os.path.join(out, name)))]
            saves.append({"name": name, "files": files, "bytes": sum(f["bytes"] for f in files)})
        manifest[seq] = {"saves": saves, "bytes": sum(s["bytes"] for s in saves), **info}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
