#!/usr/bin/env python3
"""Follow a ckptfs mount's event log and log every snapshot to MLflow.

    scripts/mlflow_follow.py MOUNTPOINT [--tracking-uri URI] [--experiment NAME]

Reads MOUNTPOINT/.ckpt/events (JSON lines, like `tail -f`) and, for each
snapshot, starts an MLflow run named after it with the snapshot's
metadata as tags and its metric (the retention policy's metric, read from
the `user.ckpt.metric.NAME` xattr of the snapshot directory), files and
bytes as metrics. The default tracking URI is a local SQLite file in the
current directory (MLflow's recommended local store; no server needed).
"""

import argparse
import json
import os
import sys
import time


def snapshot_xattrs(path):
    out = {}
    for name in os.listxattr(path):
        if name.startswith("user.ckpt."):
            try:
                out[name[len("user.ckpt."):]] = os.getxattr(path, name).decode()
            except OSError:
                pass
    return out


def follow(f, path, poll):
    """Yields complete lines appended to the open log `f`, forever."""
    with f:
        pending = b""
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                # The log may have been rotated: start over if it shrank.
                if os.stat(path).st_size < f.tell():
                    f.seek(0)
                time.sleep(poll)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line


def log_snapshot(mlflow, ctl, event):
    name = event["name"]
    meta = snapshot_xattrs(os.path.join(ctl, "snapshots", name))
    metrics = {k[len("metric."):]: float(v) for k, v in meta.items() if k.startswith("metric.")}
    seq = int(name.split("-")[1]) if name.startswith("auto-") else None
    with mlflow.start_run(run_name=name):
        mlflow.set_tags({
            "ckptfs.snapshot": name,
            "ckptfs.trigger": event.get("trigger", ""),
            "ckptfs.created": event.get("created", ""),
            "ckptfs.auto": str(event.get("auto", False)).lower(),
        })
        mlflow.log_metrics({"files": event.get("files", 0), "logical_bytes": event.get("logical_bytes", 0)}, step=seq or 0)
        if "stored_bytes" in meta:
            mlflow.log_metric("stored_bytes", float(meta["stored_bytes"]), step=seq or 0)
        for key, value in metrics.items():
            mlflow.log_metric(key, value, step=seq or 0)
    print(f"logged snapshot {name}: {metrics or 'no metric'}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mountpoint")
    ap.add_argument("--tracking-uri", default=f"sqlite:///{os.path.abspath('mlflow.db')}")
    ap.add_argument("--experiment", default="ckptfs")
    ap.add_argument("--control-dir", default=".ckpt")
    ap.add_argument("--from-start", action="store_true", help="also log snapshots already in the log")
    ap.add_argument("--exit-after", type=int, default=0, help="stop after logging this many snapshots")
    ap.add_argument("--poll", type=float, default=0.2, help="seconds between reads when idle")
    args = ap.parse_args()

    ctl = os.path.join(args.mountpoint, args.control_dir)
    events = os.path.join(ctl, "events")
    # Take the log's position before the (slow) MLflow import, so that
    # snapshots taken while it loads are not missed.
    log = open(events, "rb", buffering=0)
    if not args.from_start:
        log.seek(0, os.SEEK_END)

    import mlflow  # imported late: --help works without it

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    logged = 0
    for line in follow(log, events, args.poll):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") != "snapshot":
            continue
        log_snapshot(mlflow, ctl, event)
        logged += 1
        if args.exit_after and logged >= args.exit_after:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
