"""Data: where the splits are found, the .amat parser, the parse cache, checksums, downloads.

Downloads are tested against a loopback HTTP server started by the test (``hostile.serve``);
most tests use a small fake split (sizes and checksums monkeypatched) so they stay fast, one
downloads the real test split.
"""

from __future__ import annotations

import gzip
import itertools
import os
import time
import zlib

import numpy as np
import pytest

import engine.atomic as atomic
import engine.data as data
from engine.data import DataError, cache_dir, content_checksum, load_split, parse_amat

from .hostile import amat_bytes, serve

NAMES = {s: f"binarized_mnist_{s}.amat" for s in data.SPLITS}


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Small random splits that the loader accepts as the real ones; a private cache; no env data."""
    rng = np.random.default_rng(0)
    splits = {s: (rng.random((n, 784)) < 0.15).astype(np.uint8) for s, n in (("train", 30), ("valid", 20), ("test", 10))}
    for s, x in splits.items():
        monkeypatch.setitem(data.SPLIT_SIZES, s, len(x))
        monkeypatch.setitem(data.CHECKSUMS, s, content_checksum(x))
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PIXELCHAIN_DATA", raising=False)
    monkeypatch.setenv("PIXELCHAIN_DATA_URL", "http://127.0.0.1:9/nothing-here/")  # discard port: never reached
    return splits


def write_split(directory, split, x, gz=False, **fmt):
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / (NAMES[split] + (".gz" if gz else ""))
    body = amat_bytes(x, **fmt)
    p.write_bytes(gzip.compress(body) if gz else body)
    return p


def no_leftovers(directory) -> bool:
    return not directory.exists() or not [p for p in directory.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


# ----------------------------------------------------------------------------- search order
def test_explicit_directory_wins_over_environment(fake, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write_split(a, "test", fake["test"])
    write_split(b, "test", fake["test"][::-1])  # other content: its checksum would fail
    monkeypatch.setenv("PIXELCHAIN_DATA", str(b))
    assert np.array_equal(load_split("test", a), fake["test"])
    with pytest.raises(DataError, match=str(b)):
        load_split("test")  # PIXELCHAIN_DATA is used when no directory is given


def test_environment_then_cache(fake, tmp_path, monkeypatch):
    env = tmp_path / "env"
    write_split(env, "valid", fake["valid"], gz=True)
    monkeypatch.setenv("PIXELCHAIN_DATA", str(env))
    assert np.array_equal(load_split("valid"), fake["valid"])
    monkeypatch.delenv("PIXELCHAIN_DATA")
    write_split(cache_dir() / "binarized_mnist", "valid", fake["valid"])
    assert np.array_equal(load_split("valid"), fake["valid"])  # from the cache, no download


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("PIXELCHAIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pixelchain"


@pytest.mark.parametrize("where", ["explicit", "env"])
def test_missing_directory_is_a_clear_error(fake, tmp_path, monkeypatch, where):
    missing = tmp_path / "no-such-folder"
    if where == "env":
        monkeypatch.setenv("PIXELCHAIN_DATA", str(missing))
        call = lambda: load_split("train")  # noqa: E731
    else:
        call = lambda: load_split("train", missing)  # noqa: E731
    with pytest.raises(DataError, match=f"{missing}.*(does not exist|not a directory)") as info:
        call()
    assert ("PIXELCHAIN_DATA" in str(info.value)) == (where == "env")


def test_directory_without_the_files(fake, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no binarized_mnist_train.amat"):
        load_split("train", tmp_path / "empty")
    with pytest.raises(DataError, match="unknown split"):
        load_split("training", tmp_path / "empty")


# ------------------------------------------------------------------------------ the parser
def test_real_split_plain_and_gz_agree(data_dir, tmp_path):
    gz = data_dir / "binarized_mnist_test.amat.gz"
    plain = tmp_path / "binarized_mnist_test.amat"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    a, b = parse_amat(gz), parse_amat(plain, 10_000)
    assert a.shape == (10_000, 784) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert content_checksum(a) == data.CHECKSUMS["test"]
    assert int(a.sum()) == 1_038_896  # ones, as documented in ../shared/data/README.md


@pytest.mark.parametrize(
    "fmt",
    [dict(sep="\t"), dict(sep="  "), dict(eol="\r\n"), dict(eol=" \n\n"), dict(sep=" \x0b")],
    ids=["tabs", "double-spaces", "crlf", "blank-lines", "vertical-tab"],
)
def test_whitespace_tolerance(tmp_path, fmt):
    x = (np.random.default_rng(1).random((5, 784)) < 0.3).astype(np.uint8)
    p = tmp_path / "w.amat"
    p.write_bytes(b"\n  " + amat_bytes(x, **fmt).rstrip(b"\n"))  # leading blank line, no final newline
    assert np.array_equal(parse_amat(p, 5), x)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no images"),
        (b"0 1 0\n", "malformed or truncated"),
        (b"2 " * 784 + b"\n", "values other than 0 and 1"),
        (b"x " * 784 + b"\n", "values other than 0 and 1"),
        (b"0 " * 784 + b"\n" + b"1 " * 400, "malformed or truncated"),  # cut mid-line
        (b"0 " * 784 + b"\n", "holds 1 images, expected 3"),
        (gzip.compress(b"0 " * 784 * 3)[:30], "cannot read"),  # truncated .gz
    ],
    ids=["empty", "short-line", "digit-2", "letters", "cut-mid-line", "too-few-images", "truncated-gz"],
)
def test_broken_files_are_clear_errors(tmp_path, content, message):
    p = tmp_path / "bad.amat"
    p.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        parse_amat(p, 3)
    assert str(p) in str(info.value)


def test_altered_file_fails_the_checksum(fake, tmp_path):
    x = fake["test"].copy()
    x[3, 100] ^= 1  # one pixel flipped: the shape is right, the content is not
    write_split(tmp_path / "d", "test", x)
    with pytest.raises(DataError, match=r"does not match the static binarized MNIST test split.*altered or truncated.*Replace it"):
        load_split("test", tmp_path / "d")
    write_split(tmp_path / "e", "test", fake["test"][:7])  # truncated: fewer images
    with pytest.raises(DataError, match="holds 7 images, expected 10"):
        load_split("test", tmp_path / "e")


# ----------------------------------------------------------------------------- parse cache
def test_parse_cache(fake, tmp_path, monkeypatch):
    d = tmp_path / "d"
    src = write_split(d, "train", fake["train"])
    first = load_split("train", d)
    parsed = list((cache_dir() / "parsed").glob("*.npy"))
    assert len(parsed) == 1 and no_leftovers(cache_dir())
    calls = []
    real_parse = data.parse_amat
    monkeypatch.setattr(data, "parse_amat", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    assert np.array_equal(load_split("train", d), first) and calls == []  # from the cache
    future = time.time() + 100
    os.utime(src, (future, future))  # a newer source is parsed again
    assert np.array_equal(load_split("train", d), first) and calls == [1]
    newest = max((cache_dir() / "parsed").glob("*.npy"), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(b"garbage")  # a broken cache is rebuilt, not fatal
    assert np.array_equal(load_split("train", d), first) and len(calls) == 2
    assert np.array_equal(load_split("train", d), first) and len(calls) == 2


def test_unwritable_cache_only_costs_speed(fake, tmp_path, monkeypatch):
    d = tmp_path / "d"
    write_split(d, "valid", fake["valid"])
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic.tempfile, "mkstemp", refuse)  # the cache folder is not writable
        assert np.array_equal(load_split("valid", d), fake["valid"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        assert np.array_equal(load_split("valid", d), fake["valid"])  # a full disk neither
    assert no_leftovers(cache_dir())


# -------------------------------------------------------------------------------- downloads
def test_download_of_the_real_test_split(data_dir, tmp_path, monkeypatch):
    """The real file over HTTP into an empty cache, with progress, verified and cached."""
    monkeypatch.delenv("PIXELCHAIN_DATA")
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(tmp_path / "cache"))
    body = gzip.decompress((data_dir / "binarized_mnist_test.amat.gz").read_bytes())
    seen = []
    with serve({NAMES["test"]: body}) as url:
        monkeypatch.setenv("PIXELCHAIN_DATA_URL", url)
        x = load_split("test", progress=lambda done, total: seen.append((done, total)))
    assert content_checksum(x) == data.CHECKSUMS["test"]
    assert (tmp_path / "cache" / "binarized_mnist" / NAMES["test"]).stat().st_size == len(body)
    assert seen and seen[-1] == (len(body), len(body)) and all(b[0] > a[0] for a, b in itertools.pairwise(seen))
    assert no_leftovers(tmp_path / "cache")


def test_download_that_breaks_off_then_a_retry(fake, tmp_path, monkeypatch):
    body = amat_bytes(fake["test"])
    dest = cache_dir() / "binarized_mnist"
    with serve({NAMES["test"]: body}, drop_after=len(body) // 2) as url:
        monkeypatch.setenv("PIXELCHAIN_DATA_URL", url)
        with pytest.raises(DataError, match=r"broke off after \d+ of \d+ bytes|cannot download") as info:
            load_split("test")
    assert url in str(info.value)
    assert not (dest / NAMES["test"]).exists() and no_leftovers(cache_dir())
    with serve({NAMES["test"]: body}) as url:  # the retry succeeds
        monkeypatch.setenv("PIXELCHAIN_DATA_URL", url)
        assert np.array_equal(load_split("test"), fake["test"])
    assert no_leftovers(cache_dir())


@pytest.mark.parametrize(
    "case, message",
    [
        ("altered", "does not match the static binarized MNIST test split"),
        ("truncated", "is not the test split.*holds 6 images, expected 10"),
        ("html", "is not the test split"),
        ("missing", "cannot download.*404"),
        ("refused", "cannot download"),
    ],
)
def test_bad_downloads_keep_nothing(fake, monkeypatch, case, message):
    x = fake["test"].copy()
    x[0, 0] ^= 1
    files = {
        "altered": {NAMES["test"]: amat_bytes(x)},
        "truncated": {NAMES["test"]: amat_bytes(fake["test"][:6])},
        "html": {NAMES["test"]: b"<html><body>Moved</body></html>"},
        "missing": {},
    }
    if case == "refused":
        monkeypatch.setenv("PIXELCHAIN_DATA_URL", "http://127.0.0.1:9/")  # nothing listens there
        with pytest.raises(DataError, match=message):
            load_split("test")
    else:
        with serve(files[case]) as url:
            monkeypatch.setenv("PIXELCHAIN_DATA_URL", url)
            with pytest.raises(DataError, match=message):
                load_split("test")
    assert no_leftovers(cache_dir()) and not (cache_dir() / "binarized_mnist" / NAMES["test"]).exists()


def test_disk_full_during_a_download(fake, monkeypatch):
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(data.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with serve({NAMES["test"]: amat_bytes(fake["test"])}) as url:
        monkeypatch.setenv("PIXELCHAIN_DATA_URL", url)
        with pytest.raises(DataError, match="cannot write the download into .*No space left on device.*PIXELCHAIN_CACHE"):
            load_split("test")
    assert no_leftovers(cache_dir())


def test_gzip_served_under_the_plain_name(fake, monkeypatch):
    with serve({NAMES["valid"]: gzip.compress(amat_bytes(fake["valid"]))}) as url:
        monkeypatch.setenv("PIXELCHAIN_DATA_URL", url)
        assert np.array_equal(load_split("valid"), fake["valid"])


def test_no_download_when_disabled(fake):
    with pytest.raises(DataError, match="has no"):
        load_split("test", download=False)


# ------------------------------------------------------------------ verified and bounded
def test_an_altered_parse_cache_is_parsed_again_not_used(fake, tmp_path, monkeypatch):
    """The issue's altered parse cache made eval report 4059.7 nats instead of 108.7, exit 0."""
    d = tmp_path / "d"
    write_split(d, "test", fake["test"])
    assert np.array_equal(load_split("test", d), fake["test"])
    (cached,) = (cache_dir() / "parsed").glob("*.npy")
    packed = np.load(cached)
    packed[:, :40] = 255  # a well-formed .npy of the right shape: only the checksum tells
    with open(cached, "wb") as f:
        np.save(f, packed)
    calls = []
    real_parse = data.parse_amat
    monkeypatch.setattr(data, "parse_amat", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    assert np.array_equal(load_split("test", d), fake["test"]) and calls == [1]
    assert np.array_equal(load_split("test", d), fake["test"]) and calls == [1]  # rebuilt whole: read again


@pytest.mark.parametrize("content", [
    b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (100000000000, 99), }" + b" " * 40 + b"\n",
    b"\x93NUMPY\x01\x00\x10\x00{'descr': (((" + b" " * 4 + b"\n",
    b"\x93NUMPY\x01\x00v\x00{'descr': [('a', '<u1')], 'fortran_order': False, 'shape': (10, 99), }" + b" " * 30 + b"\n" + b"\0" * 990,
    b"\x00" * (50 << 20),
], ids=["claims-a-huge-shape", "malformed-header", "structured-dtype", "far-too-large"])
def test_a_hostile_parse_cache_is_rebuilt_without_a_traceback(fake, tmp_path, content):
    d = tmp_path / "d"
    write_split(d, "test", fake["test"])
    load_split("test", d)
    (cached,) = (cache_dir() / "parsed").glob("*.npy")
    cached.write_bytes(content)
    assert np.array_equal(load_split("test", d), fake["test"])


def test_a_gzip_bomb_is_refused_after_reading_a_bounded_amount(fake, tmp_path):
    """The issue's 1.9 MB of gzip took 3.9 GB; here 128 MiB of text compress to ~130 KB."""
    import tracemalloc

    d = tmp_path / "d"
    d.mkdir()
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    block = b"0 " * (1 << 19)
    with open(d / (NAMES["test"] + ".gz"), "wb") as f:
        for _ in range(128):
            f.write(comp.compress(block))
        f.write(comp.flush())
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"decompresses to more than the 0 MiB that 10 images take as text"):
            load_split("test", d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
