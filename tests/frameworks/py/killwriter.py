"""A save loop for the SIGKILL test: writes files under DIR until the
mount dies, logging each step to LOG (one line per write(2), O_APPEND)
and keeping each content in REF/<id>:

    A id name    before creating/truncating `name` with content `id`
    D id name    after its close() returned
    R id name    before renaming `name.tmp` (content `id`) over `name`
    RD id name   after rename() returned

`pN` are rewritten in place (O_TRUNC); `aN` are saved atomically
(`aN.tmp` written and closed, then renamed over `aN`).

    killwriter.py DIR REF LOG SEED FIRST_ID
"""

import os
import random
import sys

d, ref, logp, seed, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
log = os.open(logp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def note(line):
    os.write(log, (line + "\n").encode())


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


i = first
try:
    while True:
        i += 1
        kind = rng.random()
        size = rng.randrange(0, 4096) if kind < 0.3 else rng.randrange(4096, 200_000) if kind < 0.9 \
            else rng.randrange(200_000, 1_500_000)
        data = rng.randbytes(size)
        with open(os.path.join(ref, str(i)), "wb") as f:
            f.write(data)
        if rng.random() < 0.65:
            name = f"p{rng.randrange(6)}"
            note(f"A {i} {name}")
            write_file(os.path.join(d, name), data)
            note(f"D {i} {name}")
        else:
            name = f"a{rng.randrange(3)}"
            note(f"A {i} {name}.tmp")
            write_file(os.path.join(d, name + ".tmp"), data)
            note(f"D {i} {name}.tmp")
            note(f"R {i} {name}")
            os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
            note(f"RD {i} {name}")
except OSError as e:
    # The mount is gone: ENOTCONN, or ENOENT once it is detached.
    print(f"stopped at {i}: {e}", file=sys.stderr)
