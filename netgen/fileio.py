"""Atomic file writes: a file either appears whole or not at all."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import FcnkitError


def check_writable(path: str | os.PathLike) -> Path:
    """The folder `path` would be written in; FcnkitError if it is missing or `path` is a folder.

    CLIs call it before long work so a bad output path fails first, not after minutes.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FcnkitError(f"{path}: folder {folder} does not exist")
    if path.is_dir():
        raise FcnkitError(f"{path}: is a folder; give a file name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FcnkitError(f"{path}: cannot write in {folder}: permission denied")
    return folder


def _mode_for(path: Path) -> int:
    """Permissions the written file gets: those of the file it replaces, else what a plain
    open() would give (0666 less the umask), not mkstemp's private 0600."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    A missing or unwritable folder is reported as FcnkitError naming the path.
    """
    path = Path(path)
    folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise FcnkitError(f"{path}: cannot write in {folder}: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)
