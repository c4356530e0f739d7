"""One writer per results folder: `run` holds an OS lock on `OUT/.ssmbench.lock` for its life.

The kernel drops an `fcntl.flock` lock when its holder exits, however it exits (SIGKILL too), so
a stale lock cannot block a later run. The file holds the holder's PID, for the message a second
run prints. `report` and `export` only read, and take no lock. The lock file is opened without
following a symbolic link (O_NOFOLLOW) and must be a regular file: a link, folder or pipe in its
place is refused (ForeignFile), so the PID is never written into a file outside the folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssmbench.experiment.config import ConfigError
from ssmbench.files import ForeignFile, cannot_write, check_own, writing

LOCKFILE = ".ssmbench.lock"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _holder(fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"PID {pid}" if pid.isdigit() else "another process"


def _open_own(path: Path) -> int:
    """The lock file's descriptor, opened without following a link; ForeignFile unless it is a
    regular file (checked on the open file too: it cannot be swapped between check and open)."""
    check_own(path)
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            check_own(path)  # replaced by a link or a folder since the check: say what is there
        raise cannot_write(e, path) from None
    try:
        check_own(path, mode=os.fstat(fd).st_mode)
    except ForeignFile:
        os.close(fd)
        raise
    return fd


@contextmanager
def folder_lock(out: Path, wait: bool = False) -> Iterator[None]:
    """Hold `out`'s writer lock; ConfigError naming the holder if it is taken and not `wait`."""
    out = Path(out)
    with writing(out):  # --out itself may be a link to a folder: the user's choice
        out.mkdir(parents=True, exist_ok=True)
    path = out / LOCKFILE
    fd = _open_own(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise ConfigError(
                    f"{out} is being written by another ssmbench run ({holder}); "
                    "wait for it to end, add --wait, or choose another --out"
                ) from None
            print(f"waiting for {holder} to finish writing {out}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor drops the lock
