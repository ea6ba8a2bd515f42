"""Writes and fsyncs files through the mount and keeps them open, for the
unclean-stop test: prints `synced` once every fsync returned, then waits
to be killed (after the daemon). Each promised content goes to REF.

    fsynchold.py DIR REF
"""

import os
import sys
import time

d, ref = sys.argv[1], sys.argv[2]


def keep(name, data):
    with open(os.path.join(ref, name), "wb") as f:
        f.write(data)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


held = []
# A new file: 3 MiB fsynced, then 1 MiB more, never synced.
synced, more = os.urandom(3 * 2**20 + 17), os.urandom(2**20)
keep("new.bin", synced)
keep("new.bin.more", more)
fd = os.open(os.path.join(d, "new.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
write_all(fd, synced)
os.fsync(fd)
write_all(fd, more)
held.append(fd)
# An existing file rewritten with O_TRUNC, fdatasynced.
v2 = os.urandom(2**20 + 5)
keep("prev.bin", v2)
fd = os.open(os.path.join(d, "prev.bin"), os.O_WRONLY | os.O_TRUNC)
write_all(fd, v2)
os.fdatasync(fd)
held.append(fd)
# 20 MiB: chunks past the first MiB go to pack files, not the WAL.
big = os.urandom(20 * 2**20 + 3)
keep("big.bin", big)
fd = os.open(os.path.join(d, "big.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
write_all(fd, big)
os.fsync(fd)
held.append(fd)
# A small one in a new subdirectory, the directory fsynced too.
os.mkdir(os.path.join(d, "sub"))
small = b"epoch=7 step=700\n" * 6
keep("sub-small.txt", small)
fd = os.open(os.path.join(d, "sub/small.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
write_all(fd, small)
os.fsync(fd)
dfd = os.open(os.path.join(d, "sub"), os.O_RDONLY | os.O_DIRECTORY)
os.fsync(dfd)
os.close(dfd)
held.append(fd)
# The atomic save over an existing file: tmp fsynced, renamed, dir fsynced.
model = os.urandom(2 * 2**20 + 1)
keep("model.bin", model)
fd = os.open(os.path.join(d, "model.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
write_all(fd, model)
os.fsync(fd)
os.close(fd)
os.replace(os.path.join(d, "model.tmp"), os.path.join(d, "model.bin"))
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.fsync(dfd)
os.close(dfd)
print("synced", flush=True)
time.sleep(120)
