"""Saves SIZE random bytes over PATH (O_TRUNC) in 1 MiB writes, the way a
checkpoint writer would, stopping at the first error; keeps the bytes the
filesystem accepted in REF and prints, as JSON, the errno of the failed
write (or null), the errno of close() (or null) and the bytes accepted.

    fill.py PATH SIZE REF
"""

import json
import os
import sys

path, size, ref = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
write_errno, written = None, 0
with open(ref, "wb") as keep:
    while written < size and write_errno is None:
        block = memoryview(os.urandom(min(1 << 20, size - written)))
        while block:
            try:
                n = os.write(fd, block)
            except OSError as e:
                write_errno = e.errno
                break
            keep.write(block[:n])
            written += n
            block = block[n:]
close_errno = None
try:
    os.close(fd)
except OSError as e:
    close_errno = e.errno
print(json.dumps({"write_errno": write_errno, "close_errno": close_errno, "written": written}))
