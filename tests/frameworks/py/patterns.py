"""Save patterns of training frameworks, through the mount and mirrored
to a reference tree (see mirror.py).

    patterns.py save atomic|deepspeed|lightning MNT REF
    patterns.py check CHECKS.json     [{"kind", "file", "v", "path"}, ...]

- atomic: numpy weights and a pickled state written to `x.tmp`, fsynced,
  `os.replace`d over `x`, the directory fsynced.
- deepspeed: `global_stepN/` files, then `latest` naming it (its close
  takes an automatic snapshot).
- lightning: `epoch=E-step=S.ckpt`, then `last.ckpt` re-pointed at it (a
  symlink under a temporary name renamed over the old one), top-k
  deletion of worse epochs, a snapshot per epoch.
"""

import json
import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirror import Mirror, write_bytes  # noqa: E402


def weights(v, shape=(256, 512)):
    return np.random.default_rng(1000 + v).standard_normal(shape, dtype=np.float32)


def state(v):
    return {"step": v * 100, "lr": 1e-3 / v, "weights": weights(v, (64, 64)), "rng": list(range(v))}


def pickled(obj):
    return pickle.dumps(obj, protocol=4)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(m):
    m.mkdir("run")
    for v in range(1, 6):
        def npy(p, v=v):
            with open(p, "wb") as f:
                np.save(f, weights(v))
                f.flush()
                os.fsync(f.fileno())

        def pkl(p, v=v):
            with open(p, "wb") as f:
                pickle.dump(state(v), f, protocol=4)
                f.flush()
                os.fsync(f.fileno())

        m.save("run/model.npy.tmp", npy)
        m.rename("run/model.npy.tmp", "run/model.npy")
        m.save("run/state.pkl.tmp", pkl)
        m.rename("run/state.pkl.tmp", "run/state.pkl")
        for root in m.roots():
            fsync_dir(os.path.join(root, "run"))
        if v in (2, 5):
            m.snapshot(f"atomic-{v}")


def save_deepspeed(m):
    for k, step in enumerate((10, 20, 30), start=1):
        d = f"ds/global_step{step}"
        m.mkdir(d)
        m.save(f"{d}/mp_rank_00_model_states.pt",
               write_bytes(pickled({"module": weights(k), "global_steps": step})))
        m.save(f"{d}/zero_pp_rank_0_mp_rank_00_optim_states.pt",
               write_bytes(pickled({"optimizer_state_dict": state(k)})))
        before = m.autos()
        m.save("ds/latest", write_bytes(f"global_step{step}".encode()))
        m.wait_auto(before, f"writing latest = global_step{step}")


def save_lightning(m):
    ck = "lightning_logs/version_0/checkpoints"
    m.mkdir(ck)
    losses = [0.9, 0.5, 0.7, 0.4, 0.6]
    kept = []  # (loss, name), save_top_k = 2
    for epoch, loss in enumerate(losses):
        name = f"epoch={epoch}-step={(epoch + 1) * 50}.ckpt"
        m.save(f"{ck}/{name}", write_bytes(pickled({"epoch": epoch, "val_loss": loss,
                                                      "state_dict": state(epoch + 1)})))
        m.replace_symlink(name, f"{ck}/last.ckpt")
        kept.append((loss, name))
        kept.sort()
        while len(kept) > 2:
            _, worst = kept.pop()
            # Lightning keeps the file `last.ckpt` points at.
            if worst != name:
                m.remove(f"{ck}/{worst}")
        m.snapshot(f"epoch{epoch}")


def check(kind, file, v, path):
    if kind == "atomic" and file.startswith("run/model.npy"):
        for a in (np.load(path), np.load(path, mmap_mode="r")):
            assert np.array_equal(a, weights(v)), f"{path}: not version {v}"
    elif kind == "atomic" and file.startswith("run/state.pkl"):
        with open(path, "rb") as f:
            got = pickle.load(f)
        want = state(v)
        assert got["step"] == want["step"] and np.array_equal(got["weights"], want["weights"]), path
    elif kind == "deepspeed" and file.endswith("/latest"):
        # DeepSpeed's `latest` names the newest step directory in plain text.
        with open(path, "rb") as f:
            text = f.read().decode()
        assert text.startswith("global_step") and text[len("global_step"):].isdigit(), f"{path}: {text!r}"
    else:
        with open(path, "rb") as f:
            pickle.load(f)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        m = Mirror(sys.argv[3], sys.argv[4])
        {"atomic": save_atomic, "deepspeed": save_deepspeed, "lightning": save_lightning}[sys.argv[2]](m)
        m.done()
    else:
        with open(sys.argv[2]) as f:
            for c in json.load(f):
                try:
                    check(c["kind"], c["file"], c["v"], c["path"])
                except Exception as e:
                    raise SystemExit(f"check of {c['path']} as version {c['v']} of {c['file']} failed: {e!r}")
                print("ok", c["path"])
