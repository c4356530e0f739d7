"""Writing files so that readers and crashes never see half of one, and never through a link.

Every file ssmbench writes inside an output folder is its own: a symbolic link, a folder or any
other non-regular file found where one is expected is refused (`ForeignFile`), never followed, so
a link planted in a shared results folder cannot make a run overwrite a file elsewhere. A write
that fails (full disk, quota, I/O error) raises `OutputError`, one line naming the file, the
reason and the space left on its disk.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class OutputError(OSError):
    """Output that could not be written: str() is one line naming the file, the reason and the
    free space (`cannot write P: No space left on device (12 KiB free)`); errno is the cause's."""

    def __str__(self) -> str:
        return str(self.strerror)


class ForeignFile(ValueError):
    """A symbolic link or a non-regular file where ssmbench keeps its own file or folder: bad
    input, refused before anything is written through it."""


_KINDS = {
    stat.S_ISLNK: "a symbolic link",
    stat.S_ISDIR: "a folder",
    stat.S_ISREG: "a file",
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISSOCK: "a socket",
}


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "a device")


def check_own(path: Path, folder: bool = False, mode: int | None = None) -> None:
    """Refuse (ForeignFile) anything at `path` but a regular file (a real folder if `folder`);
    nothing there is fine. `mode`: that of a file opened already (fstat), else the path's own,
    never following a link (lstat)."""
    if mode is None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
    if (stat.S_ISDIR if folder else stat.S_ISREG)(mode):
        return
    expected = "folder" if folder else "file"
    raise ForeignFile(
        f"{path} is {_kind(mode)}, not the {expected} ssmbench keeps there (it never writes "
        "through a link or into a special file): move it away"
    )


def own_folder(path: Path) -> Path:
    """`path` as a real folder ssmbench writes in (made if missing; ForeignFile if a link or a
    file is there, OutputError if it cannot be made)."""
    with writing(path):
        Path(path).mkdir(parents=True, exist_ok=True)
    check_own(path, folder=True)
    return Path(path)


def free_space(path: Path | str) -> str:
    """The space left on the disk holding `path` (its nearest existing folder), e.g. '12 KiB'."""
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown space"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024:
            return f"{free:.0f} {unit}"
        free /= 1024
    return f"{free:.1f} TiB"


def cannot_write(error: OSError, path: Path | str) -> OutputError:
    """`error`, raised writing `path`, as the one-line OutputError the command prints."""
    if isinstance(error, OutputError):
        return error
    reason = error.strerror or str(error) or type(error).__name__
    return OutputError(error.errno, f"cannot write {path}: {reason} ({free_space(path)} free)")


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Any OSError raised within becomes the OutputError of writing `path`."""
    try:
        yield
    except OSError as e:
        raise cannot_write(e, path) from None


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a uniquely named temporary file beside `path`, then rename it over.

    The unique name (mkstemp) lets two writers race without one renaming the other's file away;
    the fsync before the rename means a crash leaves the old file or the new one, whole. What is
    at `path` must be a regular file or nothing (ForeignFile otherwise); a failed write raises
    OutputError and leaves the old file as it was.
    """
    path = Path(path)
    check_own(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for reading
            with os.fdopen(fd, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
