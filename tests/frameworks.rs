//! Real clients and real faults against the real binary: Python training
//! code with numpy, safetensors and h5py, the save patterns of HF Trainer,
//! PyTorch DCP, DeepSpeed, Lightning and hyperparameter searches; SIGKILL
//! of the daemon, fsync, corrupted chunks, a full disk, heavy concurrency
//! and other users. One theme per file:
//!
//! - `formats`: numpy (`load`, `mmap_mode='r'`), safetensors (`safe_open`),
//!   h5py (in-place rewrites at scattered offsets).
//! - `patterns`: the atomic save, DeepSpeed's `latest`, Lightning's
//!   `last.ckpt` symlink.
//! - `trainer`: an HF-Trainer-like run with `save_total_limit` and a
//!   keep-best retention policy.
//! - `multiproc`: a DCP-like save by four processes; a hyperparameter
//!   search with four concurrent trials.
//! - `kill`: SIGKILL at random moments of a save loop; fsynced files left
//!   open.
//! - `corruption`: a flipped byte in a stored chunk.
//! - `full_disk`: a store on a small loop-mounted ext4.
//! - `concurrency`: 8 writers and 8 readers for a minute.
//! - `permissions`: another user against the live tree and history.
//!
//! The Python clients live in `tests/frameworks/py/`; `py/mirror.py` makes
//! each of their writes twice, through the mount and into a reference tree
//! on the local disk, and records what every snapshot and every version
//! must hold (`support::Ref` compares). They need `CKPTFS_TEST_PYTHON`
//! pointing at the venv that `scripts/setup-python` makes (numpy,
//! safetensors, h5py).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod frameworks {
    mod concurrency;
    mod corruption;
    mod formats;
    mod full_disk;
    mod kill;
    mod multiproc;
    mod patterns;
    mod permissions;
    mod support;
    mod trainer;
}
