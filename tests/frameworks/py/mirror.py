"""Every checkpoint write a test client makes, made twice: through the
ckptfs mount and into a reference tree on the local disk. Alongside, what
ckptfs must show for it:

REF/tree/             the live tree as it must be
REF/versions/<rel>/N  the N-th version `.ckpt/versions/<rel>/` must list
REF/states/<name>/    the tree snapshot <name> must hold

The Rust side compares the mount with REF after a remount.
"""

import json
import os
import shutil
import time


class Mirror:
    def __init__(self, mnt, ref):
        self.mnt = mnt
        self.ref = ref
        self.tree = os.path.join(ref, "tree")
        os.makedirs(self.tree, exist_ok=True)
        os.makedirs(os.path.join(ref, "versions"), exist_ok=True)
        os.makedirs(os.path.join(ref, "states"), exist_ok=True)

    def roots(self):
        return (self.mnt, self.tree)

    def live(self, rel):
        return os.path.join(self.mnt, rel)

    def ctl(self, rel):
        return os.path.join(self.mnt, ".ckpt", rel)

    def mkdir(self, rel):
        for r in self.roots():
            os.makedirs(os.path.join(r, rel), exist_ok=True)

    def save(self, rel, write):
        """`write(path)` creates or overwrites the file (open, write,
        close) under both roots; one version of `rel`."""
        for r in self.roots():
            write(os.path.join(r, rel))
        self.record(rel)

    def record(self, rel):
        """The reference's current content of `rel` is its next version."""
        d = os.path.join(self.ref, "versions", rel)
        os.makedirs(d, exist_ok=True)
        n = sum(1 for x in os.listdir(d) if x.isdigit()) + 1
        shutil.copyfile(os.path.join(self.tree, rel), os.path.join(d, f"{n:06d}"))

    def rename(self, src, dst):
        """os.rename under both roots; ckptfs records a version of every
        file arriving at `dst` (a file, or a directory's files)."""
        for r in self.roots():
            os.rename(os.path.join(r, src), os.path.join(r, dst))
        full = os.path.join(self.tree, dst)
        if os.path.isdir(full) and not os.path.islink(full):
            for d, _, files in os.walk(full):
                for f in files:
                    p = os.path.join(d, f)
                    if not os.path.islink(p):
                        self.record(os.path.relpath(p, self.tree))
        elif not os.path.islink(full):
            self.record(dst)

    def remove(self, rel):
        for r in self.roots():
            p = os.path.join(r, rel)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)

    def replace_symlink(self, target, rel):
        """Atomically points the symlink `rel` at `target` (a symlink under
        a temporary name, renamed over it); symlinks have no versions."""
        for r in self.roots():
            tmp = os.path.join(r, rel + ".tmp-link")
            os.symlink(target, tmp)
            os.replace(tmp, os.path.join(r, rel))

    def state(self, name):
        """What snapshot `name` must hold: the reference tree now."""
        shutil.copytree(self.tree, os.path.join(self.ref, "states", name), symlinks=True)

    def autos(self):
        return sorted(n for n in os.listdir(self.ctl("snapshots")) if n.startswith("auto-"))

    def wait_auto(self, before, what, timeout=20):
        """Waits for the one automatic snapshot a trigger takes after the
        snapshots `before`; records the reference tree as its content."""
        deadline = time.time() + timeout
        while True:
            new = [n for n in self.autos() if n not in before]
            if new:
                break
            if time.time() > deadline:
                raise SystemExit(f"no automatic snapshot within {timeout} s after {what}")
            time.sleep(0.02)
        # A second one would mean a spurious trigger.
        time.sleep(0.2)
        new = [n for n in self.autos() if n not in before]
        if len(new) != 1:
            raise SystemExit(f"{what} took {len(new)} automatic snapshots: {new}")
        self.state(new[0])
        return new[0]

    def snapshot(self, name):
        """mkdir .ckpt/snapshots/NAME, and what it must hold."""
        os.mkdir(self.ctl(f"snapshots/{name}"))
        self.state(name)
        return name

    def done(self, **info):
        with open(os.path.join(self.ref, "done.json"), "w") as f:
            json.dump(info, f)


def write_bytes(data):
    def w(path):
        with open(path, "wb") as f:
            f.write(data)
    return w
