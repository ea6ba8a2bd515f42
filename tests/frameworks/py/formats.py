"""Real serialization libraries through the mount: numpy (.npy, .npz),
safetensors (numpy flavour, no torch) and h5py (an HDF5 file resized and
rewritten in place at scattered offsets).

    formats.py save KIND MNT REF      KIND: numpy | safetensors | h5py
    formats.py check CHECKS.json      [{"kind", "file", "v", "path"}, ...]

`save` writes every version through mirror.Mirror; `check` loads each
path with the library (memory-mapped where it can) and compares it with
version `v` of `file`, regenerated from its seed.
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirror import Mirror  # noqa: E402

# ----------------------------------------------------------------- numpy


def npy_weights(v):
    return np.random.default_rng(100 + v).standard_normal((512, 1024), dtype=np.float32)


def npz_opt(v):
    rng = np.random.default_rng(200 + v)
    return {
        "exp_avg": rng.standard_normal((256, 256), dtype=np.float32),
        "exp_avg_sq": rng.random((256, 256), dtype=np.float32),
        "step": np.array([v * 100], dtype=np.int64),
    }


def npy_emb(v):
    # 10 MiB: past the first MiB, whose chunks go through the WAL.
    return np.random.default_rng(300 + v).standard_normal((2560, 2048)).astype(np.float16)


def save_numpy(m):
    m.mkdir("np")
    for v in (1, 2, 3):
        m.save("np/weights.npy", lambda p: np.save(p, npy_weights(v)))
        if v == 1:
            m.save("np/emb.npy", lambda p: np.save(p, npy_emb(1)))
        if v >= 2:
            m.save("np/opt.npz", lambda p: np.savez(p, **npz_opt(v - 1)))
        if v == 2:
            m.snapshot("np-mid")
    m.snapshot("np-final")


def check_numpy(file, v, path):
    if file == "np/weights.npy" or file == "np/emb.npy":
        want = npy_weights(v) if file == "np/weights.npy" else npy_emb(v)
        full = np.load(path)
        mm = np.load(path, mmap_mode="r")
        assert isinstance(mm, np.memmap), type(mm)
        for a in (full, mm):
            assert a.dtype == want.dtype and a.shape == want.shape, (a.dtype, a.shape)
            assert np.array_equal(a, want), f"{path}: values differ"
        # Scattered reads through the mapping.
        idx = np.random.default_rng(v).integers(0, want.shape[0], 50)
        assert np.array_equal(mm[idx], want[idx])
        del mm
    elif file == "np/opt.npz":
        want = npz_opt(v)
        with np.load(path) as z:
            assert sorted(z.files) == sorted(want), z.files
            for k, a in want.items():
                assert np.array_equal(z[k], a), f"{path}: {k} differs"
    else:
        raise SystemExit(f"unknown numpy file {file}")


# ----------------------------------------------------------- safetensors


def st_tensors(v):
    frozen = np.random.default_rng(400)
    t = {
        "embed.weight": frozen.standard_normal((4096, 256), dtype=np.float32),
        "layers.0.weight": frozen.standard_normal((256, 256), dtype=np.float32),
    }
    rng = np.random.default_rng(500 + v)
    t["head.weight"] = rng.standard_normal((256, 1000), dtype=np.float32)
    t["head.bias"] = rng.standard_normal(1000).astype(np.float16)
    t["step"] = np.array([v], dtype=np.int64)
    return t


def save_safetensors(m):
    # One metadata key: safetensors writes the metadata map in hash order,
    # and the reference copy must come out byte-identical.
    from safetensors.numpy import save_file

    m.mkdir("st")
    for v in (1, 2, 3):
        m.save("st/model.safetensors",
               lambda p: save_file(st_tensors(v), p, metadata={"step": str(v)}))
        if v == 1:
            m.snapshot("st-mid")
    m.snapshot("st-final")


def check_safetensors(file, v, path):
    from safetensors import safe_open

    assert file == "st/model.safetensors", file
    want = st_tensors(v)
    with safe_open(path, framework="np") as f:
        assert f.metadata() == {"step": str(v)}, f.metadata()
        assert sorted(f.keys()) == sorted(want), list(f.keys())
        for k, a in want.items():
            got = f.get_tensor(k)
            assert got.dtype == a.dtype and got.shape == a.shape, (k, got.dtype, got.shape)
            assert np.array_equal(got, a), f"{path}: {k} differs"
        # A partial, memory-mapped read of a slice.
        part = f.get_slice("embed.weight")[1000:1100]
        assert np.array_equal(part, want["embed.weight"][1000:1100])


# ------------------------------------------------------------------ h5py

ROUNDS = 5


def h5_states():
    """What the file holds after each round's close (index 1..ROUNDS),
    and the operations of each round, replayed in memory."""
    rng = np.random.default_rng(600)
    w = rng.standard_normal((64, 256), dtype=np.float32)
    loss = np.array([2.0], dtype=np.float64)
    m = rng.random((128, 128), dtype=np.float32)
    ops = {1: ("create", w.copy(), loss.copy(), m.copy())}
    states = {1: (w.copy(), loss.copy(), m.copy())}
    for r in range(2, ROUNDS + 1):
        grow = rng.standard_normal((48, 256), dtype=np.float32)
        n = w.shape[0]
        rows = sorted(int(i) for i in rng.choice(n, 6, replace=False))
        row_vals = rng.standard_normal((6, 256), dtype=np.float32)
        blocks = []
        for _ in range(4):
            i, j = int(rng.integers(0, 112)), int(rng.integers(0, 112))
            blocks.append((i, j, rng.random((16, 16), dtype=np.float32)))
        new_loss = float(loss[-1] * 0.8)
        ops[r] = ("update", grow, rows, row_vals, blocks, new_loss)
        w = np.concatenate([w, grow])
        for k, i in enumerate(rows):
            w[i] = row_vals[k]
        for i, j, b in blocks:
            m[i:i + 16, j:j + 16] = b
        loss = np.append(loss, new_loss)
        states[r] = (w.copy(), loss.copy(), m.copy())
    return ops, states


def save_h5py(m):
    import h5py

    m.mkdir("h5")
    ops, _ = h5_states()
    for r in range(1, ROUNDS + 1):
        op = ops[r]
        for root in m.roots():
            p = os.path.join(root, "h5/train.h5")
            if op[0] == "create":
                _, w, loss, mom = op
                with h5py.File(p, "w") as f:
                    f.attrs["round"] = 1
                    f.create_dataset("weights", data=w, maxshape=(None, 256),
                                     chunks=(16, 256), track_times=False)
                    f.create_dataset("loss", data=loss, maxshape=(None,),
                                     chunks=(8,), track_times=False)
                    g = f.create_group("opt", track_order=False)
                    g.create_dataset("momentum", data=mom, chunks=(32, 32), track_times=False)
            else:
                _, grow, rows, row_vals, blocks, new_loss = op
                with h5py.File(p, "r+") as f:
                    d = f["weights"]
                    n = d.shape[0]
                    d.resize(n + grow.shape[0], axis=0)
                    d[n:] = grow
                    for k, i in enumerate(rows):
                        d[i] = row_vals[k]
                    mom = f["opt/momentum"]
                    for i, j, b in blocks:
                        mom[i:i + 16, j:j + 16] = b
                    l = f["loss"]
                    l.resize(l.shape[0] + 1, axis=0)
                    l[-1] = new_loss
                    f.attrs["round"] = r
        m.record("h5/train.h5")
        if r == 1:
            m.snapshot("h5-r1")
        if r == 3:
            m.snapshot("h5-r3")
    m.snapshot("h5-final")


def check_h5py(file, v, path):
    import h5py

    assert file == "h5/train.h5", file
    _, states = h5_states()
    w, loss, mom = states[v]
    with h5py.File(path, "r", locking=False) as f:
        assert int(f.attrs["round"]) == v, f.attrs["round"]
        assert f["weights"].shape == w.shape, f["weights"].shape
        assert np.array_equal(f["weights"][...], w), f"{path}: weights differ"
        assert np.array_equal(f["loss"][...], loss), f"{path}: loss differs"
        assert np.array_equal(f["opt/momentum"][...], mom), f"{path}: momentum differs"
        # A scattered partial read.
        assert np.array_equal(f["weights"][30:50, 100:120], w[30:50, 100:120])


SAVE = {"numpy": save_numpy, "safetensors": save_safetensors, "h5py": save_h5py}
CHECK = {"numpy": check_numpy, "safetensors": check_safetensors, "h5py": check_h5py}

if __name__ == "__main__":
    if sys.argv[1] == "save":
        m = Mirror(sys.argv[3], sys.argv[4])
        SAVE[sys.argv[2]](m)
        m.done()
    elif sys.argv[1] == "check":
        with open(sys.argv[2]) as f:
            checks = json.load(f)
        for c in checks:
            try:
                CHECK[c["kind"]](c["file"], c["v"], c["path"])
            except Exception as e:
                raise SystemExit(f"check of {c['path']} as version {c['v']} of {c['file']} failed: {e!r}")
            print("ok", c["path"])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
