"""engine.atomic: a write either completes or leaves the previous file and no temporary file."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

import engine.atomic as atomic
from engine.atomic import atomic_file, atomic_write, temporary_files


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bytes_text_and_streamed_content_round_trip(tmp_path):
    data = bytes(range(256)) * 1000
    assert atomic_write(tmp_path / "b.bin", data) == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == data
    atomic_write(tmp_path / "t.json", '{"ünï": "cödé ✓"}')
    assert (tmp_path / "t.json").read_text(encoding="utf-8") == '{"ünï": "cödé ✓"}'
    arr = np.random.default_rng(0).integers(0, 2, size=(7, 784), dtype=np.uint8)
    with atomic_file(tmp_path / "a.npy") as f:
        np.save(f, arr, allow_pickle=False)
    assert np.array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), arr)
    assert _names(tmp_path) == ["a.npy", "b.bin", "t.json"]


def test_a_write_that_raises_keeps_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old content")
    with pytest.raises(ZeroDivisionError):
        with atomic_file(path) as f:
            f.write(b"half of the new")
            assert len(temporary_files(path)) == 1  # the write goes to a temporary file...
            raise ZeroDivisionError("the caller fails mid-write")
    assert path.read_bytes() == b"old content"  # ...which never replaces the old one
    assert _names(tmp_path) == ["f.bin"]


def test_an_interrupted_write_of_a_new_file_leaves_nothing(tmp_path):
    path = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(path) as f:
            f.write(b"x" * 100_000)
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


@pytest.mark.parametrize("target, err", [("fsync", errno.ENOSPC), ("replace", errno.EROFS)])
def test_failed_sync_or_rename_keeps_the_old_file(tmp_path, monkeypatch, target, err):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old content")

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic.os, target, fail)
    with pytest.raises(OSError) as info:
        atomic_write(path, b"new content")
    monkeypatch.undo()
    assert info.value.errno == err
    assert path.read_bytes() == b"old content"
    assert _names(tmp_path) == ["f.bin"]


def test_the_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    atomic_write(tmp_path / "f.bin", b"content")
    assert calls[:2] == ["fsync", "replace"]


def test_a_failed_check_replaces_nothing(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"good")
    seen = []

    def check(tmp):
        seen.append(tmp.read_bytes())  # complete and readable when checked
        raise ValueError("not what was expected")

    with pytest.raises(ValueError, match="not what was expected"):
        atomic_write(path, b"bad download", check=check)
    assert seen == [b"bad download"]
    assert path.read_bytes() == b"good" and _names(tmp_path) == ["f.bin"]


def test_a_missing_folder_is_an_error_that_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(tmp_path / "no" / "f.bin", b"x")
    assert str(tmp_path / "no" / "f.bin") in str(info.value) and ".tmp" not in str(info.value)
    assert "No such file or directory" in str(info.value)
    assert _names(tmp_path) == []


def test_modes_new_files_readable_existing_mode_kept(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"1")
    assert path.stat().st_mode & 0o044 == 0o044  # not mkstemp's private 0o600
    os.chmod(path, 0o600)
    atomic_write(path, b"2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"2"


def _held(p):
    """Open ``p`` and lock it as a running write does; close the descriptor to let go."""
    import fcntl

    fd = os.open(p, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.skipif(atomic.fcntl is None, reason="needs flock")
def test_leftovers_of_killed_writes_are_removed_at_once_those_of_running_writes_kept(tmp_path):
    path = tmp_path / "m.bin"
    old, fresh, running = (tmp_path / f".m.bin.{tag}.tmp" for tag in ("abc123", "def456", "ghi789"))
    other = tmp_path / ".other.bin.abc123.tmp"  # another file's: not ours to remove
    for p in (old, fresh, running, other):
        p.write_bytes(b"left by a killed write")
    os.utime(old, (1e9, 1e9))
    fd = _held(running)  # a write in progress elsewhere holds its lock
    try:
        atomic_write(path, b"new")
        assert not old.exists() and not fresh.exists()  # a killed write's, however young: nobody holds its lock
        assert running.exists() and other.exists()
        assert temporary_files(path) == [running]
    finally:
        os.close(fd)
    atomic_write(path, b"newer")  # its writer is gone now
    assert temporary_files(path) == [] and other.exists()


@pytest.mark.skipif(atomic.fcntl is None, reason="needs flock")
def test_a_write_holds_the_lock_of_its_temporary_file_until_the_rename(tmp_path):
    path = tmp_path / "f.bin"
    with atomic_file(path) as f:
        f.write(b"in progress")
        (tmp,) = temporary_files(path)
        with pytest.raises(BlockingIOError):
            _held(tmp)
        atomic._remove_stale(path)  # another writer's clean-up leaves it alone
        assert tmp.exists()
    assert path.read_bytes() == b"in progress" and _names(tmp_path) == ["f.bin"]


def test_a_symlink_is_followed_and_its_target_replaced_atomically(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    atomic_write(link, b"new content")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new content"
    assert _names(tmp_path) == ["link.bin", "real"] and _names(tmp_path / "real") == ["model.bin"]
    dangling = tmp_path / "dangling.bin"
    dangling.symlink_to(tmp_path / "real" / "new.bin")  # a link to a file still to be made: made there
    atomic_write(dangling, b"made")
    assert dangling.is_symlink() and (tmp_path / "real" / "new.bin").read_bytes() == b"made"


def test_a_fifo_is_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting: the write does not block
    try:
        atomic_write(fifo, b"through the pipe")
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _names(tmp_path) == ["pipe.png"]


def test_a_character_device_is_written_to_not_replaced(tmp_path):
    """``--out /dev/null`` (here through a link, so that a broken writer cannot replace the real one)."""
    link = tmp_path / "null.png"
    link.symlink_to("/dev/null")
    atomic_write(link, b"discarded")
    with atomic_file(link) as f:
        np.save(f, np.zeros(3), allow_pickle=False)
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode) and _names(tmp_path) == ["null.png"]


def test_a_folder_or_a_socket_is_refused_with_one_line(tmp_path):
    import socket

    (tmp_path / "out.png").mkdir()
    with pytest.raises(atomic.WriteError, match=r"cannot write .*out\.png: it is a folder"):
        atomic_write(tmp_path / "out.png", b"x")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.png"))
        with pytest.raises(atomic.WriteError, match="not a regular file"):
            atomic_write(tmp_path / "s.png", b"x")
    finally:
        sock.close()
    assert stat.S_ISSOCK(os.lstat(tmp_path / "s.png").st_mode)


def test_a_full_disk_is_reported_with_the_file_name_not_an_errno(tmp_path, monkeypatch):
    path = tmp_path / "out.pxcz"
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(OSError) as info:
        atomic_write(path, b"data")
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert info.value.errno == errno.ENOSPC and "Errno" not in str(info.value) and ".tmp" not in str(info.value)


# ------------------------------------------------------------------------------- folders
def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    from engine.atomic import atomic_folder

    out = tmp_path / "pngs"
    with pytest.raises(ZeroDivisionError):
        with atomic_folder(out) as tmp:
            (tmp / "image_00000.png").write_bytes(b"1")
            assert not out.exists()
            raise ZeroDivisionError("killed half-way")
    assert _names(tmp_path) == []  # nothing half-done left behind
    with atomic_folder(out) as tmp:
        for k in range(3):
            (tmp / f"image_{k:05d}.png").write_bytes(b"x")
    assert _names(out) == ["image_00000.png", "image_00001.png", "image_00002.png"] and _names(tmp_path) == ["pngs"]


def test_a_folder_target_must_be_new_or_empty(tmp_path):
    from engine.atomic import WriteError, atomic_folder, check_folder_target

    out = tmp_path / "pngs"
    out.mkdir()
    with atomic_folder(out) as tmp:  # an empty folder is taken over
        (tmp / "a.png").write_bytes(b"a")
    assert _names(out) == ["a.png"]
    with pytest.raises(WriteError, match="not empty"):
        check_folder_target(out)
    with pytest.raises(WriteError, match="not empty"):
        with atomic_folder(out):
            pass
    assert _names(out) == ["a.png"] and _names(tmp_path) == ["pngs"]
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(WriteError, match="not a folder"):
        check_folder_target(tmp_path / "file")


@pytest.mark.skipif(atomic.fcntl is None, reason="needs flock")
def test_a_killed_folder_write_is_cleaned_up_by_the_next(tmp_path):
    from engine.atomic import atomic_folder

    stale = tmp_path / ".pngs.k1ll3d.tmp"
    stale.mkdir()
    (stale / "image_00000.png").write_bytes(b"half")
    with atomic_folder(tmp_path / "pngs") as tmp:
        (tmp / "image_00000.png").write_bytes(b"whole")
    assert _names(tmp_path) == ["pngs"]


def test_stale_part_files_of_earlier_versions_downloads_are_removed_too(tmp_path):
    path = tmp_path / "binarized_mnist_train.amat"
    old, fresh = tmp_path / ".binarized_mnist_train.amat.x1y2z3.part", tmp_path / ".binarized_mnist_train.amat.q9.part"
    for p in (old, fresh):
        p.write_bytes(b"half a download")
    os.utime(old, (1e9, 1e9))
    atomic_write(path, b"new")
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a download still running


def test_files_are_written_only_through_the_atomic_writer():
    """No engine or app module renames temporary files or writes a file in place by itself (an
    array or an image is saved into the writer's file object, never to a path)."""
    import re
    from pathlib import Path

    root = Path(atomic.__file__).parents[1]
    pattern = re.compile(r"os\.replace\(|os\.rename\(|mkstemp\(|NamedTemporaryFile\("
                         r"|\.write_bytes\(|\.write_text\(|open\([^)]*['\"][wa]b?['\"]"
                         r"|np\.save[z]?\((?!f\b)|\.save\((str\(|path\b|out\b|dest\b)")
    files = [p for pkg in ("engine", "app") for p in sorted((root / pkg).rglob("*.py")) if p.name != "atomic.py"]
    assert len(files) > 40
    offenders = [f"{p.relative_to(root)}:{n}" for p in files
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
    assert pattern.search("np.save(out, x)") and pattern.search("img.save(path, format='PNG')")
    assert not pattern.search("np.save(f, x, allow_pickle=False)")


def test_the_score_cache_ignores_a_failed_write_and_leaves_nothing(tmp_path, monkeypatch):
    from engine.tasks.score import _read_json, _write_json

    path = tmp_path / "cache" / "ref.json"
    _write_json(path, {"a": 1})
    assert _read_json(path)["a"] == 1
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    _write_json(path, {"a": 2})  # an unwritable cache only costs time
    monkeypatch.undo()
    assert _read_json(path)["a"] == 1 and _names(path.parent) == ["ref.json"]


@pytest.mark.skipif(atomic.fcntl is None or not hasattr(os, "mkfifo"), reason="needs flock and FIFOs")
def test_a_fifo_named_like_a_leftover_does_not_hang_the_write(tmp_path):
    import signal

    os.mkfifo(tmp_path / ".f.bin.trap.tmp")
    signal.alarm(10)  # a blocking open would hang here: fail instead
    try:
        atomic_write(tmp_path / "f.bin", b"x")
    finally:
        signal.alarm(0)
    assert (tmp_path / "f.bin").read_bytes() == b"x"
