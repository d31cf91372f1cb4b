"""Atomic file writes: a file either appears whole or not at all.

The data goes to a hidden temp file beside the target (".<name>.<pid>.<random>.tmp"), is
fsynced, renamed over the target, and the folder is fsynced so the rename itself survives a
power cut. A process killed mid-write leaves its temp file behind; `remove_stale_temps`
deletes those whose process is gone (writers call it once per folder, e.g. the snapshots').
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import FcnkitError

# Errors of the write itself (disk full, quota, file-size limit, I/O, read-only file system):
# reported as FcnkitError naming the file, as OSError from write() carries no file name.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp")


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

    A missing or unwritable folder, and a write that fails (disk full, quota, file-size
    limit, I/O error), are reported as FcnkitError naming the path; the temp file is removed.
    """
    path = Path(path)
    folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=folder)
    except OSError as e:
        raise FcnkitError(f"{path}: cannot write in {folder}: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS and e.filename in (None, tmp):
            raise FcnkitError(f"{path}: cannot write: {e.strerror}") from None
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: fsync the directory); a no-op where folders
    cannot be opened or synced (Windows, some network file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete atomic_write temp files in `folder` whose writing process no longer runs.

    A `kill -9` during a snapshot leaves ".<name>.<pid>.<random>.tmp" behind; nothing reads
    these (the real file appears only by rename), and this clears them. Processes are looked
    up on this machine, so a temp file of a live writer elsewhere on a shared folder whose pid
    happens to be unused here would be removed too. Returns the files removed.
    """
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            m = _TEMP_NAME.fullmatch(entry.name)
            if m and entry.is_file(follow_symlinks=False) and not _running(int(m["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # it exists: another user's process
    except (OverflowError, ValueError):
        return False  # not a pid at all
    return True


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)
