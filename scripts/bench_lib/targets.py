"""The four places scripts/bench stores a sequence in: a plain directory, a
ckptfs mount, a restic repository and a borg repository.

Each target has the same life cycle per (round, sequence, mode):
open() makes a fresh directory/store/repository, save() stores one save
and returns its timing, cpu() is the target's cumulative CPU seconds,
read() reads a save back (caches already dropped by the caller), rss_kib()
its peak RSS, close() returns the stored bytes and deletes everything.
abort() is for cleanup after an error: it must leave no mount or daemon."""

import json
import multiprocessing
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time

CHUNK = 4 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "ckptfs")
# The null FUSE filesystem (examples/null_fs.rs): FUSE's own ceiling.
NULL_FS = os.path.join(ROOT, "target", "release", "examples", "null_fs")
STAGE_COSTS = os.path.join(ROOT, "target", "release", "examples", "stage_costs")
# The venv with numpy and safetensors that gen.py runs in.
PY = os.path.join(ROOT, ".venv", "bin", "python")
# Extra `ckptfs mount` options for every ckptfs pass (`bench --ckptfs-args`).
MOUNT_ARGS = []


def ensure_python():
    """Makes the venv (scripts/setup-python) unless it has numpy and
    safetensors already; returns its interpreter."""
    if not os.path.exists(PY) or subprocess.run([PY, "-c", "import numpy, safetensors.numpy"]).returncode:
        subprocess.run([os.path.join(ROOT, "scripts", "setup-python")], check=True)
    return PY


def rotated(items, rnd):
    """items in round rnd's order: starting at item rnd mod len, so that
    over the rounds each goes first as often as the others."""
    k = rnd % len(items)
    return items[k:] + items[:k]


def du(path):
    out = subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def mounted(path):
    """path is a mount point in /proc/self/mounts (also a dead FUSE mount,
    which os.path.ismount misses)."""
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def read_file(path, buf):
    fd = os.open(path, os.O_RDONLY)
    try:
        total = 0
        while n := os.readv(fd, [buf]):
            total += n
        return total
    finally:
        os.close(fd)


def copy_file(src, dst, fsync):
    """Copies in 4 MiB os.read/os.write pieces; fsyncs the file if asked.
    The close (where ckptfs commits the version) is part of the copy."""
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    fi = os.open(src, os.O_RDONLY)
    try:
        fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            total = 0
            while n := os.readv(fi, [buf]):
                view = mv[:n]
                while view:
                    view = view[os.write(fo, view):]
                total += n
            if fsync:
                os.fsync(fo)
        finally:
            os.close(fo)
    finally:
        os.close(fi)
    return total


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writer(src, dst, fsync, go, results):
    try:
        go.wait()
        t0 = time.monotonic()
        n = copy_file(src, dst, fsync)
        results.put((os.path.basename(dst), n, t0, time.monotonic()))
    except BaseException as e:  # reported to the parent, which fails the run
        results.put((os.path.basename(dst), repr(e), 0, 0))


def parallel_copy(pairs, fsync):
    """One process per file, all released at once (distributed ranks).
    Returns the wall time and, per writer, (file, bytes, start, end)."""
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(s, d, fsync, go, results)) for s, d in pairs]
    for p in procs:
        p.start()
    try:
        t0 = time.monotonic()
        go.set()
        got = [results.get(timeout=3600) for _ in procs]
        secs = time.monotonic() - t0
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    bad = [g for g in got if not isinstance(g[1], int)]
    if bad or any(p.exitcode for p in procs):
        raise RuntimeError(f"parallel writers failed: {bad}")
    return secs, got


def copy_save(src_dir, dst_dir, files, fsync, parallel=False):
    """Writes one save's files into dst_dir; returns (seconds, per-file
    [name, bytes, seconds], per-writer stats or None)."""
    writers = None
    t0 = time.monotonic()
    os.makedirs(dst_dir)
    if parallel:
        _, got = parallel_copy([(os.path.join(src_dir, f), os.path.join(dst_dir, f)) for f in files], fsync)
        per_file = [[name, n, end - start] for name, n, start, end in got]
        writers = {"mbps": [n / 1e6 / (end - start) for _, n, start, end in got],
                   "all_overlapped": max(g[2] for g in got) < min(g[3] for g in got)}
    else:
        per_file = []
        for f in files:
            t = time.monotonic()
            n = copy_file(os.path.join(src_dir, f), os.path.join(dst_dir, f), fsync)
            per_file.append([f, n, time.monotonic() - t])
    if fsync:
        fsync_dir(dst_dir)
        fsync_dir(os.path.dirname(dst_dir))
    return time.monotonic() - t0, per_file, writers


def read_tree(path):
    """Reads every file under path with 4 MiB reads; returns bytes read."""
    buf = bytearray(CHUNK)
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            total += read_file(os.path.join(d, f), buf)
    return total


def run_child(cmd, env=None, cwd=None):
    """Runs cmd; returns (seconds, CPU seconds, peak RSS KiB) of the child
    from wait4's resource usage."""
    with tempfile.TemporaryFile() as err:
        t = time.monotonic()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.monotonic() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err.read().decode()[-2000:]}")
    return secs, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


class Plain:
    name, modes, parallel_ranks = "plain", ("nofsync", "fsync"), True

    def __init__(self, work):
        self.work = work

    def open(self, seq, mode, rnd):
        self.dir = os.path.join(self.work, "plain", seq + ("-fsync" if mode == "fsync" else ""))
        os.makedirs(self.dir)

    def save(self, src_dir, save, files, fsync, parallel):
        return copy_save(src_dir, os.path.join(self.dir, save), files, fsync, parallel)

    def read(self, save):
        return read_tree(os.path.join(self.dir, save))

    def path(self, save):
        return os.path.join(self.dir, save)

    def cpu(self):
        return None

    def rss_kib(self):
        return None

    def written(self):
        return None

    def close(self, keep):
        stored = du(self.dir)
        if not keep:
            shutil.rmtree(self.dir)
        return stored

    def abort(self):
        pass


class Daemon:
    def __init__(self, store, mnt, cmd=None):
        """Mounts `store` on `mnt` with ckptfs, or runs `cmd`, a FUSE
        server that mounts on `mnt` itself."""
        self.mnt = mnt
        self.name = os.path.basename(cmd[0]) if cmd else "ckptfs"
        cmd = cmd or [BIN, "mount", store, mnt, "--log-level", "warn", *MOUNT_ARGS]
        # Own session: a Ctrl-C reaches the harness, which unmounts cleanly.
        self.proc = subprocess.Popen(cmd, start_new_session=True)
        for _ in range(600):
            if os.path.ismount(mnt) and os.stat(mnt).st_ino == 1:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} mount exited {self.proc.returncode}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} mount did not come up in 30 s")

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
        return 0

    def written_bytes(self):
        """Bytes the daemon sent to the storage layer (counted when it
        dirties page-cache pages: packs, RocksDB files, staging)."""
        with open(f"/proc/{self.proc.pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
        return None

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        """umount, wait for the daemon; else umount -l; else kill it (ours)."""
        if mounted(self.mnt):
            if subprocess.run(["umount", self.mnt]).returncode != 0:
                subprocess.run(["umount", "-l", self.mnt])
        try:
            self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            subprocess.run(["umount", "-l", self.mnt])
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt])
        if self.proc.returncode:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}")


def save_label(save_dir):
    """`sequence/save` for a save's source directory."""
    return os.path.basename(os.path.dirname(save_dir)) + "/" + os.path.basename(save_dir)


def fuse_ceiling(work, size=512 << 20, rounds=3):
    """What FUSE alone moves here: MB/s of a sequential read and a write of
    `size` bytes, 4 MiB at a time as the copier does, through the null
    filesystem of examples/null_fs.rs (ckptfs's request size, thread
    count and direct I/O; no storage behind it), median of `rounds`; then
    the same write with the server keeping the bytes in a file under work
    (`pwrite` into the page cache, the file emptied before each round):
    the least any FUSE server that stores data locally does, with the
    server's CPU seconds per GB for it. None when
    that example is not built."""
    if not os.path.exists(NULL_FS):
        return None
    mnt = os.path.join(work, "null-mnt")
    os.makedirs(mnt)
    path, buf = os.path.join(mnt, "data"), bytearray(CHUNK)
    written = size // CHUNK * CHUNK

    def write_pass():
        started = time.monotonic()
        fd = os.open(path, os.O_WRONLY)
        try:
            for _ in range(size // CHUNK):
                os.write(fd, buf)
        finally:
            os.close(fd)
        return written / 1e6 / (time.monotonic() - started)

    reads, writes, kept, kept_cpu = [], [], [], []
    try:
        server = Daemon(None, mnt, cmd=[NULL_FS, mnt, str(size)])
        try:
            for _ in range(rounds):
                started = time.monotonic()
                n = read_file(path, buf)
                reads.append(n / 1e6 / (time.monotonic() - started))
                if n != size:
                    raise RuntimeError(f"null_fs read {n} bytes of {size}")
                writes.append(write_pass())
        finally:
            server.stop()
        sink = os.path.join(work, "null-sink")
        server = Daemon(None, mnt, cmd=[NULL_FS, mnt, str(size), sink])
        try:
            for _ in range(rounds):
                os.truncate(sink, 0)
                cpu0 = server.cpu_seconds()
                kept.append(write_pass())
                kept_cpu.append((server.cpu_seconds() - cpu0) / (written / 1e9))
                if os.path.getsize(sink) != written:
                    raise RuntimeError(f"null_fs kept {os.path.getsize(sink)} bytes of {size}")
        finally:
            server.stop()
            if os.path.exists(sink):
                os.unlink(sink)
    finally:
        os.rmdir(mnt)
    return {"read_mbs": statistics.median(reads), "write_mbs": statistics.median(writes),
            "write_kept_mbs": statistics.median(kept), "write_kept_cpu_s_per_gb": statistics.median(kept_cpu),
            "reads_mbs": reads, "writes_mbs": writes,
            "writes_kept_mbs": kept, "writes_kept_cpu_s_per_gb": kept_cpu, "bytes": size}


def fuse_copy_ceiling(work, src_dir, rounds=3):
    """What FUSE allows against plain on the saves' own workload: the
    files of src_dir (page-cached first) copied as the saves copy them
    (copy_file, 4 MiB pieces, no fsync), in each round once into a new
    plain directory under work and once into `data` on the null
    filesystem of examples/null_fs.rs in each of its modes: writes
    dropped (the most any server that sees the bytes can reach, so the
    ceiling of a save of duplicates), kept in a file with `pwrite` (the
    least a server that stores them locally does), and kept by the
    kernel in FUSE passthrough mode (no request reaches the server).
    The order rotates from round to round, as the saves' does. Returns
    each one's MB/s, and its ratio to plain's copy in the same round,
    median of `rounds`; passthrough is None, with the reason, where the
    kernel lacks it. None when that example is not built."""
    if not os.path.exists(NULL_FS):
        return None
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src_dir) for f in fs)
    size = read_tree(src_dir)
    mnt = os.path.join(work, "null-copy-mnt")
    sink = os.path.join(work, "null-copy-sink")
    os.makedirs(mnt)

    def plain():
        into = os.path.join(work, "null-copy-plain")
        os.makedirs(into)
        try:
            started = time.monotonic()
            for i, src in enumerate(files):
                copy_file(src, os.path.join(into, f"f{i}"), False)
            return size / 1e6 / (time.monotonic() - started)
        finally:
            shutil.rmtree(into)

    def through(*mode):
        # A server, and a new sink, for every file: each copy lands in
        # fresh page-cache pages, as in a new plain file, and the sink's
        # pages are dropped after it, outside the clock (as plain's files
        # are deleted after its round).
        took = 0.0
        for src in files:
            server = None
            try:
                server = Daemon(None, mnt, cmd=[NULL_FS, mnt, str(size), *mode])
                started = time.monotonic()
                copy_file(src, os.path.join(mnt, "data"), False)
                took += time.monotonic() - started
                kept = os.path.getsize(sink) if os.path.exists(sink) else 0
                if mode and kept != os.path.getsize(src):
                    raise RuntimeError(f"null_fs {' '.join(mode[1:]) or 'pwrite'} kept "
                                       f"{kept} bytes of {os.path.getsize(src)}")
            finally:
                if server:
                    server.stop()
                elif mounted(mnt):
                    subprocess.run(["umount", "-l", mnt])
                if os.path.exists(sink):
                    os.unlink(sink)
        return size / 1e6 / took

    kinds = {"plain": plain, "dropped": through, "kept": lambda: through(sink),
             "passthrough": lambda: through(sink, "passthrough")}
    passthrough_missing = None
    runs = {k: [] for k in kinds}
    try:
        for r in range(rounds):
            order = rotated(list(kinds), r)
            for kind in order[::-1] if r % 2 else order:
                if kind == "passthrough" and passthrough_missing:
                    continue
                try:
                    runs[kind].append(kinds[kind]())
                except (RuntimeError, OSError) as e:
                    if kind != "passthrough":
                        raise
                    passthrough_missing = f"null_fs could not serve in passthrough mode ({e})"
    finally:
        os.rmdir(mnt)
    out = {"source": save_label(src_dir), "bytes": size, "rounds": rounds,
           "passthrough_missing": passthrough_missing}
    for kind, mbs in runs.items():
        usable = mbs and len(mbs) == rounds
        out[f"{kind}_mbs"] = statistics.median(mbs) if usable else None
        out[f"{kind}_runs_mbs"] = mbs
        if kind != "plain":
            out[f"{kind}_vs_plain"] = (statistics.median(m / p for m, p in zip(mbs, runs["plain"]))
                                       if usable else None)
    return out


def cpu_reference(work, src_dir, rounds=3):
    """What compressing fresh data costs in CPU on this machine: CPU
    seconds per GB of `tar cf - | lz4 -1` over src_dir (page-cached first)
    into a file under work, both processes' rusage from wait4, median of
    `rounds`. The CPU target of issue 5 was set next to about 1 s/GB for
    this pipe on the machine it was written on; the same run's figure
    turns it into a ratio. None when tar or lz4 is missing."""
    if not (shutil.which("tar") and shutil.which("lz4")):
        return None
    size = read_tree(src_dir)  # into the page cache, as the saves find it
    out = os.path.join(work, "tar-lz4-probe.lz4")
    pipe = f"tar cf - -C {shlex.quote(src_dir)} . | lz4 -1 -q > {shlex.quote(out)}"
    per_gb = []
    try:
        for _ in range(rounds):
            _, cpu, _ = run_child(["bash", "-o", "pipefail", "-c", pipe])
            per_gb.append(cpu / (size / 1e9))
    finally:
        if os.path.exists(out):
            os.unlink(out)
    return {"cpu_s_per_gb": statistics.median(per_gb), "values": per_gb, "bytes": size, "source": save_label(src_dir)}


def stage_costs(src_dir, fuse_null):
    """ckptfs's own per-byte work on one core, with no FUSE, threads or
    disk (examples/stage_costs over the files of src_dir: the cut search
    with chunk ids, lane coding, one copy), and, with what the FUSE server
    that only keeps the bytes in a file costs (fuse_null, from
    fuse_ceiling), the least CPU per GB a fresh save can take here:
    `floor_s_per_gb`. None when that example is not built."""
    if not os.path.exists(STAGE_COSTS):
        return None
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(src_dir) for f in names)
    out = subprocess.run([STAGE_COSTS, *files], capture_output=True, text=True, check=True)
    costs = json.loads(out.stdout)
    work = costs["cut_and_id_s_per_gb"] + costs["coding_s_per_gb"] + costs["copy_s_per_gb"]
    server = fuse_null["write_kept_cpu_s_per_gb"] if fuse_null else None
    return {**costs, "work_s_per_gb": work,
            "floor_s_per_gb": work + server if server is not None else None, "source": save_label(src_dir)}


class Ckptfs(Plain):
    name = "ckptfs"

    def __init__(self, work):
        self.work = work
        self.mnt = os.path.join(work, "mnt")
        self.daemon = None
        os.makedirs(self.mnt, exist_ok=True)

    def open(self, seq, mode, rnd):
        self.store = os.path.join(self.work, f"store-r{rnd}-{seq}" + ("-fsync" if mode == "fsync" else ""))
        self.daemon = Daemon(self.store, self.mnt)
        self.dir = os.path.join(self.mnt, seq)
        os.makedirs(self.dir)

    def cpu(self):
        return self.daemon.cpu_seconds()

    def rss_kib(self):
        return self.daemon.status("VmHWM:")

    def written(self):
        return self.daemon.written_bytes()

    def close(self, keep):
        d, self.daemon = self.daemon, None
        d.stop()
        stored = du(self.store)
        if not keep:
            shutil.rmtree(self.store)
        return stored

    def abort(self):
        if self.daemon is not None:
            d, self.daemon = self.daemon, None
            d.stop()


class Repo:
    """restic or borg: one backup command per save, of the source save dir."""
    modes, parallel_ranks = ("once",), False

    def __init__(self, work):
        self.work = work
        self.cache = os.path.join(work, "cache", self.name)

    def open(self, seq, mode, rnd):
        """A fresh, empty repository: a copy of one initialized once per run
        (restic's init calibrates its KDF for seconds; the copy is the same
        empty repository, and its cache is deleted after every pass)."""
        template = os.path.join(self.work, f"{self.name}-empty")
        if not os.path.exists(template):
            self.repo = template
            run_child(self.init_cmd(), self.env())
            shutil.rmtree(self.cache, ignore_errors=True)
        self.repo = os.path.join(self.work, f"{self.name}-r{rnd}-{seq}")
        shutil.copytree(template, self.repo, symlinks=True)
        self.seq, self.cpu_s, self.rss, self.last = seq, 0.0, 0, None

    def child(self, cmd, cwd=None):
        secs, cpu, rss = run_child(cmd, self.env(), cwd)
        self.cpu_s += cpu
        self.rss = max(self.rss, rss)
        return secs

    def save(self, src_dir, save, files, fsync, parallel):
        self.last = save
        secs = self.child(self.backup_cmd(src_dir, save))
        return secs, None, None

    def read(self, save):
        assert save == self.last
        tmp = tempfile.mkdtemp(prefix="restore-", dir=self.work)
        try:
            self.child(self.restore_cmd(save, tmp), cwd=tmp)
            return read_size(tmp)
        finally:
            shutil.rmtree(tmp)

    def path(self, save):
        return None

    def cpu(self):
        return self.cpu_s

    def rss_kib(self):
        return self.rss

    def written(self):
        return None

    def close(self, keep):
        stored = du(self.repo)
        if not keep:
            shutil.rmtree(self.repo)
        shutil.rmtree(self.cache, ignore_errors=True)
        return stored

    def abort(self):
        pass


def read_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


class Restic(Repo):
    name = "restic"

    def env(self):
        return {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": self.cache}

    def init_cmd(self):
        return ["restic", "-r", self.repo, "init"]

    def backup_cmd(self, src_dir, save):
        return ["restic", "-r", self.repo, "backup", "--quiet", "--host", "bench", src_dir]

    def restore_cmd(self, save, tmp):
        return ["restic", "-r", self.repo, "restore", "latest", "--host", "bench", "--target", tmp]


class Borg(Repo):
    name = "borg"

    def env(self):
        return {**os.environ, "BORG_BASE_DIR": self.cache, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def init_cmd(self):
        return ["borg", "init", "-e", "none", self.repo]

    def backup_cmd(self, src_dir, save):
        return ["borg", "create", f"{self.repo}::{self.seq}-{save}", src_dir]

    def restore_cmd(self, save, tmp):
        return ["borg", "extract", f"{self.repo}::{self.seq}-{save}"]


TARGETS = {t.name: t for t in (Plain, Ckptfs, Restic, Borg)}
