"""Atomic file writes: a file holds either its previous content or the complete new one, never half.

Every file the engine writes (checkpoints, the data cache, score caches, compressed files,
decoded arrays and PNGs) goes through here. The new content is written to a temporary file in
the target's own folder (the same file system, so the final rename is atomic), flushed and
fsynced (so a crash just after the rename cannot leave an empty or short file behind the new
name), and then renamed over the target with :func:`os.replace`. Whatever stops the write -- an
exception from the caller, a full disk, a refused rename, ``KeyboardInterrupt`` -- the temporary
file is removed and the previous file, if any, is left exactly as it was.

Temporary files are named ``.NAME.XXXXXXXX.tmp`` beside ``NAME``. A process killed mid-write
cannot remove its own; the next write of the same file removes those older than
:data:`STALE_SECONDS` (a younger one may belong to a write still in progress elsewhere).

Two forms::

    atomic_write(path, data)                 # bytes (or str, written as UTF-8)
    with atomic_file(path) as f:             # stream into a binary file object
        np.save(f, array, allow_pickle=False)

Both raise :class:`OSError` when the file cannot be written; callers turn that into their own
error types with a message for the user.
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

__all__ = ["atomic_file", "atomic_write", "temporary_files", "STALE_SECONDS", "TEMP_SUFFIX"]

#: suffix of the temporary files (``.NAME.XXXXXXXX.tmp``)
TEMP_SUFFIX = ".tmp"
#: temporary files older than this many seconds are leftovers of killed writes
STALE_SECONDS = 600.0
#: mode of a new file that replaces none (an existing file's mode is kept); mkstemp's own 0o600
#: would make every checkpoint private to its writer
DEFAULT_MODE = 0o644


def temporary_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files of writes of ``path`` (in progress, or left by killed processes)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    return sorted(folder.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"))


#: the suffix earlier versions gave the temporary files of downloads; their leftovers go too
LEGACY_SUFFIX = ".part"


def _remove_stale(path: Path) -> None:
    legacy = sorted(path.parent.glob(f".{glob.escape(path.name)}.*{LEGACY_SUFFIX}"))
    try:
        for stale in temporary_files(path) + legacy:
            if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink()
    except OSError:  # a leftover that cannot be removed does not stop this write
        pass


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it (POSIX); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where a folder cannot be opened like this
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` when the ``with`` block ends without an exception.

    ``check``, if given, is called with the temporary file's path once it is complete and on disk,
    before the rename; if it raises, nothing is replaced and the exception propagates (e.g. to
    verify a download before it takes the place of a good file). The folder must exist.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():  # named here: mkstemp's error would name a temporary file
        raise FileNotFoundError(errno.ENOENT, f"{os.strerror(errno.ENOENT)} (folder {folder})", str(path))
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
        try:
            mode = path.stat().st_mode & 0o777 if path.exists() else DEFAULT_MODE
            os.chmod(tmp, mode)
        except OSError:  # a file system without modes: the file is still complete
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | str,
                 check: Callable[[Path], None] | None = None) -> Path:
    """Replace ``path`` by ``data`` (a ``str`` is written as UTF-8) atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_file(path, check=check) as f:
        f.write(data)
    return Path(path)
