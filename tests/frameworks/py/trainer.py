"""An HF-Trainer-like run through the mount, mirrored to a reference
tree (see mirror.py).

    trainer.py save MNT REF
    trainer.py check CHECKS.json

Each save writes `run/tmp-checkpoint-N/` (model.safetensors with a frozen
backbone and a trained head, optimizer.npz, scheduler.pkl,
trainer_state.json with the eval loss in `log_history`), renames it to
`run/checkpoint-N` (ckptfs takes an automatic snapshot there; the run
waits for it, as later training would not touch the checkpoint), then
rotates with `save_total_limit = 2`: older checkpoint directories are
deleted.
"""

import json
import os
import pickle
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirror import Mirror, write_bytes  # noqa: E402

# The eval loss at steps 100..800: the best is step 200.
LOSSES = [0.90, 0.42, 0.70, 0.65, 0.60, 0.58, 0.55, 0.53]
SAVE_TOTAL_LIMIT = 2


def model(k):
    frozen = np.random.default_rng(77)
    t = {
        "embed.weight": frozen.standard_normal((2048, 256), dtype=np.float32),
        "layers.0.weight": frozen.standard_normal((256, 256), dtype=np.float32),
    }
    t["head.weight"] = np.random.default_rng(800 + k).standard_normal((256, 512), dtype=np.float32)
    return t


def optimizer(k):
    rng = np.random.default_rng(900 + k)
    return {"exp_avg": rng.standard_normal((256, 512), dtype=np.float32),
            "exp_avg_sq": rng.random((256, 512), dtype=np.float32),
            "step": np.array([100 * k])}


def trainer_state(k):
    history = []
    for i, loss in enumerate(LOSSES[:k], start=1):
        history.append({"loss": round(loss + 0.1, 4), "learning_rate": 5e-5, "step": 100 * i})
        history.append({"eval_loss": loss, "eval_runtime": 1.25, "step": 100 * i})
    best = min(range(k), key=lambda i: LOSSES[i])
    return {
        "best_metric": LOSSES[best],
        "best_model_checkpoint": f"run/checkpoint-{100 * (best + 1)}",
        "epoch": k / 4,
        "global_step": 100 * k,
        "log_history": history,
        "save_steps": 100,
    }


def save(m):
    m.mkdir("run")
    kept = []
    autos = []
    for k in range(1, len(LOSSES) + 1):
        step = 100 * k
        tmp = f"run/tmp-checkpoint-{step}"
        m.mkdir(tmp)
        m.save(f"{tmp}/model.safetensors",
               lambda p: save_file(model(k), p, metadata={"format": "np"}))
        m.save(f"{tmp}/optimizer.npz", lambda p: np.savez(p, **optimizer(k)))
        m.save(f"{tmp}/scheduler.pkl",
               write_bytes(pickle.dumps({"last_epoch": step, "lr": [5e-5]}, protocol=4)))
        m.save(f"{tmp}/trainer_state.json",
               write_bytes(json.dumps(trainer_state(k), indent=2).encode()))
        before = m.autos()
        m.rename(tmp, f"run/checkpoint-{step}")
        autos.append(m.wait_auto(before, f"renaming {tmp}"))
        kept.append(step)
        while len(kept) > SAVE_TOTAL_LIMIT:
            m.remove(f"run/checkpoint-{kept.pop(0)}")
    m.done(autos=autos, losses=LOSSES)


def check(file, v, path):
    # Every checkpoint file has one version; its step is in its path.
    step = int(file.split("checkpoint-")[1].split("/")[0])
    k = step // 100
    if file.endswith("model.safetensors"):
        from safetensors import safe_open
        want = model(k)
        with safe_open(path, framework="np") as f:
            assert sorted(f.keys()) == sorted(want), list(f.keys())
            for name, a in want.items():
                assert np.array_equal(f.get_tensor(name), a), f"{path}: {name} differs"
    elif file.endswith("optimizer.npz"):
        with np.load(path) as z:
            for name, a in optimizer(k).items():
                assert np.array_equal(z[name], a), f"{path}: {name} differs"
    elif file.endswith("trainer_state.json"):
        with open(path) as f:
            got = json.load(f)
        assert got == trainer_state(k), f"{path}: differs"
        assert got["log_history"][-1]["eval_loss"] == LOSSES[k - 1]
    else:
        raise SystemExit(f"no check for {file}")


if __name__ == "__main__":
    if sys.argv[1] == "save":
        m = Mirror(sys.argv[2], sys.argv[3])
        save(m)
    else:
        with open(sys.argv[2]) as f:
            for c in json.load(f):
                try:
                    check(c["file"], c["v"], c["path"])
                except Exception as e:
                    raise SystemExit(f"check of {c['path']} as version {c['v']} of {c['file']} failed: {e!r}")
                print("ok", c["path"])
