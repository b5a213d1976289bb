"""Greyscale MNIST: the real files, where they are found, the strict IDX parser (truncated, altered,
foreign and decompression-bomb files), the mirror download with an injected transport, pixel levels.

The real files come from ``../shared/data/mnist``; damaged ones are made from them in ``tmp_path``
(symbolic links or copies, never into the repository).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import engine.mnist as mnist
from engine.data import DataError, cache_dir
from engine.errors import PixelchainError
from engine.mnist import LEVELS, LevelsError, dequantize, level_centres, load_file, load_labels, load_split, parse_idx, quantize

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT.parent / "shared" / "data").resolve()
MNIST = SHARED / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_data = pytest.mark.skipif(not MNIST.is_dir(), reason=f"the shared MNIST folder {MNIST} is missing")


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch, tmp_path):
    """No data folder from the environment, and a download cache of this test's own."""
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PIXELCHAIN_DATA", raising=False)
    monkeypatch.delenv("PIXELCHAIN_MNIST_URL", raising=False)


def gz_name(kind: str) -> str:
    return mnist.FILES[kind].name + ".gz"


def link_all(directory: Path) -> Path:
    """``directory`` holding links to the four real files."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind in mnist.FILES:
        (directory / gz_name(kind)).symlink_to(MNIST / gz_name(kind))
    return directory


def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and isinstance(exc_info.value, PixelchainError)
    return msg


def idx_bytes(values: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, values.ndim) + struct.pack(f">{values.ndim}i", *values.shape) + values.tobytes()


# ----------------------------------------------------------------------------- the real files
@needs_data
def test_real_splits_labels_and_shapes():
    splits = mnist.load_splits(SHARED)  # a folder holding mnist/, as ../shared/data is
    sizes = {s: len(x) for s, (x, _) in splits.items()}
    assert sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    for x, y in splits.values():
        assert x.dtype == np.uint8 and x.shape[1] == 784 and y.dtype == np.int64
        assert int(x.max()) == 255 and int(x.min()) == 0
    (xtr, ytr), (xva, yva), (xte, yte) = splits["train"], splits["valid"], splits["test"]
    assert list(np.bincount(np.concatenate([ytr, yva]), minlength=10)) == TRAIN_COUNTS
    assert list(np.bincount(yte, minlength=10)) == TEST_COUNTS
    assert list(ytr[:5]) == [5, 0, 4, 1, 9] and list(yte[:5]) == [7, 2, 1, 0, 4]
    # valid is the last 10,000 training images, in file order
    full = load_file("train-images", MNIST)
    assert full.shape == (60_000, 28, 28)
    assert np.array_equal(xva, full[50_000:].reshape(10_000, 784)) and np.array_equal(xtr[-1], full[49_999].ravel())
    assert np.array_equal(load_labels("valid", MNIST), yva)
    # (N, 28, 28) on request, the same pixels in raster order
    square = load_split("test", MNIST, flat=False)
    assert square.shape == (10_000, 28, 28) and np.array_equal(square.reshape(10_000, 784), xte)


# ----------------------------------------------------------------------------- where the files are found
@needs_data
def test_search_order_explicit_env_cache(tmp_path, monkeypatch):
    direct = link_all(tmp_path / "direct")  # the folder holding the files
    parent = tmp_path / "parent"
    link_all(parent / "mnist")  # a folder holding mnist/
    want = load_labels("test", MNIST)
    assert np.array_equal(load_labels("test", direct), want)
    assert np.array_equal(load_labels("test", parent), want)
    monkeypatch.setenv("PIXELCHAIN_DATA", str(parent))
    assert np.array_equal(load_labels("test"), want)
    assert mnist.find_mnist_dir(direct) == (direct, False)  # the explicit folder wins over the environment
    monkeypatch.delenv("PIXELCHAIN_DATA")
    assert mnist.find_mnist_dir() == (cache_dir() / "mnist", True)
    link_all(cache_dir() / "mnist")
    assert np.array_equal(load_labels("test", download=False), want)


def test_missing_folder_and_files_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        load_split("test", tmp_path / "nowhere")
    assert "does not exist" in one_line_error(e)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        load_split("test", empty)
    assert "has no t10k-images-idx3-ubyte" in one_line_error(e)
    monkeypatch.setenv("PIXELCHAIN_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="PIXELCHAIN_DATA="):
        load_labels("test")
    with pytest.raises(DataError, match="unknown split"):
        load_split("training", empty)


# ----------------------------------------------------------------------------- strict parsing
@needs_data
def test_plain_and_recompressed_files_are_accepted(tmp_path):
    """The MD5 is checked on the content, so the decompressed files or a re-compressed copy load too."""
    plain, again = tmp_path / "plain", tmp_path / "again"
    plain.mkdir()
    again.mkdir()
    for kind in ("test-images", "test-labels"):
        content = gzip.decompress((MNIST / gz_name(kind)).read_bytes())
        (plain / mnist.FILES[kind].name).write_bytes(content)
        (again / gz_name(kind)).write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    want = load_split("test", MNIST)
    assert np.array_equal(load_split("test", plain), want) and np.array_equal(load_split("test", again), want)
    assert np.array_equal(load_labels("test", plain), load_labels("test", again))


@needs_data
@pytest.mark.parametrize(
    "damage, expect",
    [
        ("gz-truncated", "compressed stream ends early"),
        ("gz-garbled", "cannot read"),
        ("plain-truncated", r"truncated: its header declares 10,000 values but it holds 9,000"),
        ("plain-header-only", "truncated: its header declares"),
        ("plain-altered", "is not the canonical MNIST t10k-labels-idx1-ubyte .*altered"),
        ("plain-extra", "more data than the 10,000 values"),
        ("bad-magic", r"wrong magic number 00000803 \(expected 00000801\)"),
        ("wrong-dims", "declares dimensions 9999, expected 10000"),
        ("empty", "magic number missing"),
    ],
)
def test_damaged_label_file_is_refused(tmp_path, damage, expect):
    gz = (MNIST / gz_name("test-labels")).read_bytes()
    content = gzip.decompress(gz)
    if damage == "gz-truncated":
        name, body = gz_name("test-labels"), gz[: len(gz) // 2]
    elif damage == "gz-garbled":
        name, body = gz_name("test-labels"), gz[:100] + bytes(b ^ 0x5A for b in gz[100:200]) + gz[200:]
    else:
        name = mnist.FILES["test-labels"].name
        body = {
            "plain-truncated": content[: 8 + 9_000],
            "plain-header-only": content[:8],
            "plain-altered": content[:500] + bytes([(content[500] + 1) % 10]) + content[501:],
            "plain-extra": content + b"\x00",
            "bad-magic": b"\x00\x00\x08\x03" + content[4:],  # an image file's magic on a label file
            "wrong-dims": content[:4] + struct.pack(">i", 9_999) + content[8:-1],
            "empty": b"",
        }[damage]
    (tmp_path / name).write_bytes(body)
    with pytest.raises(DataError) as e:
        load_labels("test", tmp_path)
    msg = one_line_error(e)
    assert str(tmp_path) in msg
    assert re.search(expect, msg), msg
    assert "Replace it with the original file" in msg


@needs_data
def test_altered_image_file_is_refused(tmp_path):
    content = bytearray(gzip.decompress((MNIST / gz_name("test-images")).read_bytes()))
    content[16 + 784 * 7 + 300] ^= 0x01  # one grey level of one pixel, one step
    (tmp_path / gz_name("test-images")).write_bytes(gzip.compress(bytes(content), compresslevel=1))
    with pytest.raises(DataError, match="not the canonical MNIST t10k-images-idx3-ubyte"):
        load_split("test", tmp_path)


def _gzip_bomb(path: Path, header: bytes, zeros: int) -> None:
    """A small gzip file that decompresses to ``header`` and ``zeros`` zero bytes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(comp.compress(header))
        for _ in range(zeros // len(block)):
            f.write(comp.compress(block))
        f.write(comp.flush())


def test_gzip_bomb_is_refused_without_allocating_it(tmp_path):
    bomb = tmp_path / gz_name("test-labels")
    _gzip_bomb(bomb, struct.pack(">BBBBi", 0, 0, 8, 1, 10_000), 64 << 20)  # a right header, then 64 MiB
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            load_labels("test", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "more data than the 10,000 values its header declares" in one_line_error(e)
    assert peak < 8 << 20, f"{peak:,} bytes allocated"


def test_header_declaring_too_much_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge.gz"
    _gzip_bomb(huge, struct.pack(">BBBBiii", 0, 0, 8, 3, 2_000_000_000, 28, 28), 0)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            parse_idx(huge)  # no expected dimensions: the size bound alone refuses it
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "declares 1,568,000,000,000 values, more than the" in one_line_error(e)
    assert peak < 1 << 20
    for dims in ((0,), (-5, 28)):
        bad = tmp_path / "bad.idx"
        bad.write_bytes(struct.pack(">BBBB", 0, 0, 8, len(dims)) + struct.pack(f">{len(dims)}i", *dims))
        with pytest.raises(DataError, match="impossible dimensions"):
            parse_idx(bad)


def test_parse_idx_reads_any_unsigned_byte_idx(tmp_path):
    x = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    (tmp_path / "a.idx").write_bytes(idx_bytes(x))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(x)))
    for p in ("a.idx", "a.idx.gz"):
        got = parse_idx(tmp_path / p)
        assert got.shape == (2, 3, 5) and np.array_equal(got, x)
        got[0, 0, 0] = 9  # writable, not a view of a read-only buffer
    floats = tmp_path / "f.idx"
    floats.write_bytes(struct.pack(">BBBBi", 0, 0, 0x0D, 1, 2) + b"\0" * 8)  # type 0x0D: float32
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        parse_idx(floats)


# ----------------------------------------------------------------------------- download (no network: an injected fetch)
class FakeMirror:
    """Serves the real files under any base URL, or bad ones from URLs listed in ``bad``."""

    def __init__(self, bad: dict[str, bytes | Exception] | None = None, chunk: int = 1000):
        self.bad, self.chunk, self.calls = bad or {}, chunk, []

    def __call__(self, url: str):
        self.calls.append(url)
        for prefix, what in self.bad.items():
            if url.startswith(prefix):
                if isinstance(what, Exception):
                    raise what
                yield what
                return
        body = (MNIST / url.rsplit("/", 1)[1]).read_bytes()
        for i in range(0, len(body), self.chunk):
            yield body[i : i + self.chunk]


def no_leftovers(directory: Path) -> bool:
    return not directory.exists() or not [p for p in directory.iterdir() if p.name.startswith(".")]


@needs_data
def test_download_into_cache_then_load_without_fetching(tmp_path):
    fetch = FakeMirror()
    seen = []
    y = load_labels("test", fetch=fetch, progress=lambda done, total: seen.append((done, total)))
    assert np.array_equal(y, load_labels("test", MNIST))
    cached = cache_dir() / "mnist" / gz_name("test-labels")
    assert cached.read_bytes() == (MNIST / gz_name("test-labels")).read_bytes()
    assert fetch.calls == [mnist.MIRRORS[0] + gz_name("test-labels")]
    assert seen[-1] == (4_542, 4_542) and len(seen) == 5  # 1000-byte chunks
    x = load_split("test", fetch=fetch)
    assert len(fetch.calls) == 2 and np.array_equal(x, load_split("test", MNIST))
    load_labels("test", fetch=fetch)
    load_split("test", fetch=fetch)
    assert len(fetch.calls) == 2  # both now come from the cache
    assert no_leftovers(cache_dir() / "mnist")


@needs_data
def test_download_refuses_checksum_mismatch_and_tries_the_next_mirror(tmp_path):
    good = (MNIST / gz_name("test-labels")).read_bytes()
    altered = good[:-9] + bytes([good[-9] ^ 1]) + good[-8:]  # same size, other MD5
    fetch = FakeMirror(bad={"https://bad.example/": altered})
    with pytest.raises(DataError) as e:
        mnist.download_file("test-labels", tmp_path, mirrors=["https://bad.example/"], fetch=fetch)
    msg = one_line_error(e)
    assert "not the published file" in msg and "nothing was kept" in msg
    assert not (tmp_path / gz_name("test-labels")).exists() and no_leftovers(tmp_path)
    path = mnist.download_file("test-labels", tmp_path, mirrors=["https://bad.example/", "https://good.example/m"], fetch=fetch)
    assert path.read_bytes() == good and no_leftovers(tmp_path)
    assert fetch.calls[-1] == "https://good.example/m/" + gz_name("test-labels")


def test_download_failures_of_every_mirror_in_one_line(tmp_path, monkeypatch):
    fetch = FakeMirror(bad={
        "https://a.example/": OSError("connection refused"),
        "https://b.example/": bytes(5_000),  # more than the 4,542 bytes of the file
        "https://c.example/": b"short",
    })
    with pytest.raises(DataError) as e:
        mnist.download_file("test-labels", tmp_path, mirrors=["https://a.example/", "https://b.example/", "https://c.example/"],
                            fetch=fetch)
    msg = one_line_error(e)
    assert "connection refused" in msg and "sent more than the 4,542 bytes" in msg and "gave 5 bytes" in msg
    assert "--data or PIXELCHAIN_DATA" in msg and no_leftovers(tmp_path)
    # PIXELCHAIN_MNIST_URL is tried before the public mirrors; without it the public mirrors are used
    monkeypatch.setenv("PIXELCHAIN_MNIST_URL", "https://a.example/")
    offline = FakeMirror(bad={"https://": OSError("offline")})
    with pytest.raises(DataError, match="offline"):
        load_labels("test", fetch=offline)
    assert offline.calls == [base + gz_name("test-labels") for base in ("https://a.example/", *mnist.MIRRORS)]
    assert not (cache_dir() / "mnist" / gz_name("test-labels")).exists()


def test_download_disabled_or_outside_the_cache_is_an_error(tmp_path):
    fetch = FakeMirror()
    with pytest.raises(DataError, match="has no t10k-labels"):
        load_labels("test", download=False, fetch=fetch)
    with pytest.raises(DataError, match="has no t10k-labels"):
        load_labels("test", tmp_path, fetch=fetch)  # an explicit folder is never written into
    assert fetch.calls == []


@needs_data
def test_damaged_cached_file_says_how_to_recover():
    cached = cache_dir() / "mnist" / gz_name("test-labels")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes((MNIST / gz_name("test-labels")).read_bytes()[:3000])
    with pytest.raises(DataError, match="Delete it and load again"):
        load_labels("test", fetch=FakeMirror())


def test_canonical_checksums_are_those_of_the_readme():
    readme = MNIST / "README.md"
    if not readme.is_file():
        pytest.skip("no shared README")
    text = readme.read_text()
    for spec in mnist.FILES.values():
        assert f"| {spec.name}.gz |" in text and spec.gz_md5 in text and f"{spec.gz_size:,}" in text
        if (MNIST / (spec.name + ".gz")).is_file():
            gz = (MNIST / (spec.name + ".gz")).read_bytes()
            assert hashlib.md5(gz).hexdigest() == spec.gz_md5
            assert hashlib.md5(gzip.decompress(gz)).hexdigest() == spec.md5


# ----------------------------------------------------------------------------- pixel levels
@pytest.mark.parametrize("k", LEVELS)
def test_quantize_is_floor_of_intensity_times_k_over_256(k):
    grey = np.arange(256, dtype=np.uint8)
    q = quantize(grey, k)
    assert q.dtype == np.uint8
    assert list(q) == [int(v) * k // 256 for v in range(256)]
    assert list(np.bincount(q, minlength=k)) == [256 // k] * k  # every level covers 256/K grey levels
    assert np.array_equal(quantize(grey.astype(np.float32), k), q)
    assert np.array_equal(quantize(grey.astype(np.int64).reshape(16, 16), k), q.reshape(16, 16))
    centres = level_centres(k)
    shown = dequantize(np.arange(k), k)
    for level in range(k):
        members = grey[q == level].astype(float)
        assert centres[level] == members.mean()  # the centre of the level's interval
        assert shown[level] == int(np.floor(centres[level] + 0.5))
    assert np.array_equal(quantize(shown, k), np.arange(k))  # a displayed level reads back as itself


def test_levels_examples_and_errors():
    assert list(dequantize(np.array([0, 1]), 2)) == [64, 192]
    assert np.array_equal(dequantize(np.arange(256), 256), np.arange(256))
    assert np.array_equal(quantize(np.array([0, 127, 128, 255]), 2), [0, 0, 1, 1])
    assert np.array_equal(quantize(np.array([0.0, 15.99, 16.0, 255.9]), 16), [0, 0, 1, 15])
    for bad_k in (3, 1, 0, 512, 2.0, True, "4"):
        with pytest.raises(LevelsError, match="pixel levels must be one of 2, 4, 8, 16, 256"):
            quantize(np.zeros(3), bad_k)
    with pytest.raises(LevelsError, match="grey levels must lie in 0-255"):
        quantize(np.array([0, 256]), 4)
    with pytest.raises(LevelsError, match="grey levels must lie in 0-255"):
        quantize(np.array([-1.0]), 4)
    with pytest.raises(LevelsError, match="grey levels must lie in 0-255"):
        quantize(np.array([np.nan]), 4)
    with pytest.raises(LevelsError, match="levels must be integers in 0-3"):
        dequantize(np.array([4]), 4)
    with pytest.raises(LevelsError, match="levels must be integers in 0-3"):
        dequantize(np.array([1.0]), 4)
    assert isinstance(LevelsError("x"), ValueError)
