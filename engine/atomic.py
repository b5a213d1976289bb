"""Atomic file writes: a file holds either its previous content or the complete new one, never half.

Every file the engine writes (checkpoints, the data cache, score caches, compressed files,
decoded arrays and PNGs) goes through here. The new content is written to a temporary file in
the target's own folder (the same file system, so the final rename is atomic), flushed and
fsynced (so a crash just after the rename cannot leave an empty or short file behind the new
name), and then renamed over the target with :func:`os.replace`. Whatever stops the write -- an
exception from the caller, a full disk, a refused rename, ``KeyboardInterrupt`` -- the temporary
file is removed and the previous file, if any, is left exactly as it was.

What the target already is decides how it is written, so that a write never destroys what a
name points at:

* a regular file, or nothing: replaced atomically as above;
* a symbolic link: the file it points at is replaced atomically; the link stays a link;
* a character device or a FIFO (``--out /dev/null``, a pipe): written to directly, as other
  Unix tools do (there is nothing to replace);
* a folder or any other kind of file: refused with a :class:`WriteError`.

:func:`atomic_folder` does the same for a whole folder of files (``decompress --out DIR``): it
is filled under a temporary name and renamed into place complete, so the folder is either the
whole result or untouched; an existing folder must be empty.

Temporary files and folders are named ``.NAME.XXXXXXXX.tmp`` beside ``NAME``. A write holds an
exclusive lock (``flock``) on its temporary file for as long as it runs; the kernel drops the
lock when the process dies, however it dies. The next write of the same name removes every
temporary whose lock it can take, i.e. every leftover of a killed write, at once; one whose
lock is held belongs to a write still running elsewhere and is kept. Where locks are not
available (Windows, some network file systems), leftovers older than :data:`STALE_SECONDS` go.

Two forms::

    atomic_write(path, data)                 # bytes (or str, written as UTF-8)
    with atomic_file(path) as f:             # stream into a binary file object
        np.save(f, array, allow_pickle=False)

Both raise :class:`WriteError` (an :class:`OSError` whose message names the target, never a
temporary file) when the file cannot be written.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import PixelchainError

try:
    import fcntl
except ImportError:  # Windows: leftovers are recognised by their age instead
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "WriteError",
    "atomic_file",
    "atomic_folder",
    "atomic_write",
    "check_folder_target",
    "check_writable",
    "temporary_files",
    "STALE_SECONDS",
    "TEMP_SUFFIX",
]

#: suffix of the temporary files (``.NAME.XXXXXXXX.tmp``)
TEMP_SUFFIX = ".tmp"
#: without file locks, temporary files older than this many seconds are leftovers of killed writes
STALE_SECONDS = 600.0
#: mode of a new file that replaces none (an existing file's mode is kept); mkstemp's own 0o600
#: would make every checkpoint private to its writer
DEFAULT_MODE = 0o644
#: errors of the storage itself, which are reported as :class:`WriteError` naming the target
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM,
                   errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE}


class WriteError(PixelchainError, OSError):
    """A file or folder that cannot be written: ``errno`` and ``strerror`` as the system gave them,
    ``filename`` the target the caller named (never a temporary file)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class _MissingError(WriteError, FileNotFoundError):
    """The folder a file should go into does not exist."""


def _error(code: int | None, reason: str | None, target: str | os.PathLike) -> WriteError:
    code = code or errno.EIO
    cls = _MissingError if code == errno.ENOENT else WriteError
    return cls(code, reason or os.strerror(code), str(target))


def temporary_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files (and folders) of writes of ``path``: in progress, or left by killed processes."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    return sorted(folder.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"))


#: the suffix earlier versions gave the temporary files of downloads; their leftovers go too
LEGACY_SUFFIX = ".part"


def _lock(fd: int, wait: bool) -> bool | None:
    """Take an exclusive lock on ``fd``: True, False (another open file holds it) or None (no locks here)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP)
        return None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink()


def _remove_stale(path: Path) -> None:
    """Remove the temporaries of ``path`` that no running write holds (see the module's docstring)."""
    legacy = sorted(path.parent.glob(f".{glob.escape(path.name)}.*{LEGACY_SUFFIX}"))
    for stale in temporary_files(path) + legacy:
        try:  # non-blocking: a FIFO named like a temporary file must not hang the write
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:  # gone already, or not ours to open
            continue
        try:
            held = _lock(fd, wait=False) if stale.suffix == TEMP_SUFFIX else None
            if held is None:
                held = time.time() - os.fstat(fd).st_mtime > STALE_SECONDS
            if held:  # we hold its lock now (or it is old): no write owns it
                _remove(stale)
        except OSError:  # a leftover that cannot be removed does not stop this write
            pass
        finally:
            os.close(fd)


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


def _target(path: Path) -> tuple[Path, str]:
    """What a write of ``path`` writes: (the real path, ``replace`` or ``direct``); a symlink is
    followed; a folder or an unwritable kind of file is refused."""
    real = Path(os.path.realpath(path)) if os.path.islink(path) else path
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real, "replace"  # a new file (or a dangling link: its target is created)
    except OSError as exc:  # a symlink loop, a path through a file, ...
        raise _error(exc.errno, exc.strerror, path) from None
    if stat.S_ISREG(st.st_mode):
        return real, "replace"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return real, "direct"
    if stat.S_ISDIR(st.st_mode):
        raise _error(errno.EISDIR, "it is a folder", path)
    raise _error(errno.EINVAL, "it exists and is not a regular file, a character device or a FIFO", path)


@contextmanager
def atomic_file(path: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` when the ``with`` block ends without an exception.

    ``check``, if given, is called with the temporary file's path once it is complete and on disk,
    before the rename; if it raises, nothing is replaced and the exception propagates (e.g. to
    verify a download before it takes the place of a good file). The folder must exist. A
    character device or FIFO is written directly (``check`` is then refused: there is nothing to
    check before the data has gone).
    """
    given = Path(path)
    real, how = _target(given)
    if how == "direct":
        if check is not None:
            raise _error(errno.EINVAL, "a verified write needs a regular file", given)
        try:
            f = open(real, "wb")
        except OSError as exc:
            raise _error(exc.errno, exc.strerror, given) from None
        with f:
            try:
                yield f
                f.flush()
            except OSError as exc:
                if exc.errno in _STORAGE_ERRNOS or exc.errno == errno.EPIPE:
                    raise _error(exc.errno, exc.strerror, given) from None
                raise
        return
    folder = real.parent if str(real.parent) else Path(".")
    if not folder.is_dir():  # named here: mkstemp's error would name a temporary file
        raise _error(errno.ENOENT, f"{os.strerror(errno.ENOENT)} (folder {folder})", given)
    _remove_stale(real)
    try:
        fd, tmp, lock = _locked_temp(folder, real.name)
    except OSError as exc:
        raise _error(exc.errno, exc.strerror, given) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
        try:
            mode = real.stat().st_mode & 0o777 if real.exists() else DEFAULT_MODE
            os.chmod(tmp, mode)
        except OSError:  # a file system without modes: the file is still complete
            pass
        os.replace(tmp, real)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.errno in _STORAGE_ERRNOS:
            raise _error(exc.errno, exc.strerror, given) from None
        raise
    finally:
        if lock is not None:
            os.close(lock)  # held until after the rename: no one else may take the file away before
    _fsync_folder(folder)


def _locked_temp(folder: Path, name: str, is_dir: bool = False) -> tuple[int, str, int | None]:
    """A new temporary file (or folder) for ``name`` in ``folder``, locked: (fd or -1, path, lock fd)."""
    for _ in range(10):
        if is_dir:
            tmp = tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=TEMP_SUFFIX)
            fd = -1
            lock = os.open(tmp, os.O_RDONLY)
        else:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=TEMP_SUFFIX)
            lock = os.dup(fd)  # the same open file: the lock lives until both are closed
        if _lock(lock, wait=True) is None:
            os.close(lock)
            return fd, tmp, None
        if os.fstat(lock).st_nlink > 0:
            return fd, tmp, lock
        # another write's clean-up removed it in the instant before we locked it: take another
        os.close(lock)
        if fd >= 0:
            os.close(fd)
    raise OSError(errno.EAGAIN, "temporary files keep disappearing")


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | str,
                 check: Callable[[Path], None] | None = None) -> Path:
    """Replace ``path`` by ``data`` (a ``str`` is written as UTF-8) atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_file(path, check=check) as f:
        f.write(data)
    return Path(path)


def check_writable(path: str | os.PathLike) -> None:
    """Raise :class:`WriteError` unless ``path`` can be written (its folder exists and takes a new
    file, or it is a device or FIFO): call it before long work whose result goes there."""
    given = Path(path)
    real, how = _target(given)
    if how == "direct":
        return
    folder = real.parent if str(real.parent) else Path(".")
    if not folder.is_dir():
        raise _error(errno.ENOENT, f"folder {folder} does not exist", given)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{real.name}.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _error(exc.errno, f"folder {folder} does not take new files ({exc.strerror or exc})", given) from None


def check_folder_target(path: str | os.PathLike) -> Path:
    """The folder :func:`atomic_folder` would create at ``path`` (a symlink followed), or a
    :class:`WriteError` when it cannot: the path is a non-empty folder, not a folder, or its parent
    folder is missing. Call it before long work whose result goes there."""
    given = Path(path)
    real = Path(os.path.realpath(given))
    parent = real.parent
    if not parent.is_dir():
        raise _error(errno.ENOENT, f"{os.strerror(errno.ENOENT)} (folder {parent})", given)
    if real.exists():
        if not real.is_dir():
            raise _error(errno.ENOTDIR, "it exists and is not a folder", given)
        try:
            with os.scandir(real) as entries:
                empty = next(entries, None) is None
        except OSError as exc:
            raise _error(exc.errno, exc.strerror, given) from None
        if not empty:
            raise _error(errno.ENOTEMPTY, "the folder is not empty; give a new or an empty folder, so that it holds "
                                          "exactly this result", given)
    return real


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder, to be filled inside the ``with`` block, that becomes ``path`` whole when
    the block ends without an exception (one rename); on any failure it is removed and ``path`` is
    left as it was. ``path`` must not exist or be an empty folder (:func:`check_folder_target`)."""
    given = Path(path)
    real = check_folder_target(given)
    _remove_stale(real)
    try:
        _, tmp, lock = _locked_temp(real.parent, real.name, is_dir=True)
    except OSError as exc:
        raise _error(exc.errno, exc.strerror, given) from None
    try:
        yield Path(tmp)
        with os.scandir(tmp) as entries:  # every file on disk before the folder takes its name
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    fd = os.open(entry.path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        _fsync_folder(Path(tmp))
        check_folder_target(given)  # still empty or absent (another process may have filled it)
        os.chmod(tmp, 0o755)  # mkdtemp's own 0o700 would make the result private to its writer
        os.rename(tmp, real)  # replaces an empty folder in one step (POSIX)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.errno in _STORAGE_ERRNOS | {errno.ENOTEMPTY}:
            raise _error(exc.errno, exc.strerror, given) from None
        raise
    finally:
        if lock is not None:
            os.close(lock)
    _fsync_folder(real.parent)

