"""Greyscale MNIST (LeCun, Cortes & Burges): find, download, verify and parse the four IDX files.

The canonical files are ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, plain or ``.gz``. Where
the loader looks, in the same order as the binarized loader (:mod:`engine.data`):

1. an explicit directory (``--data DIR`` on the command line, ``data_dir=`` here);
2. the ``PIXELCHAIN_DATA`` environment variable;
3. the per-user cache (``<cache>/mnist``, see :func:`engine.data.cache_dir`), downloading the
   public files into it when they are missing.

A directory given by 1. or 2. may hold the four files itself or in a ``mnist/`` folder inside it,
so a folder that holds both data sets (``binarized_mnist/`` and ``mnist/``, as ``../shared/data``
does) serves either loader.

Every file is parsed strictly -- the IDX magic number, the dimensions it declares against those of
the canonical file, the number of bytes that follow -- and its decompressed content must have the
canonical MD5, so an altered, truncated or foreign file is refused with a one-line
:class:`~engine.data.DataError`. Decompression never produces more than the declared size plus one
byte, so a gzip bomb is refused before anything of its size is allocated. Downloads are checked
against the MD5 of the published ``.gz`` file before they take a place in the cache.

Splits (the common 50k/10k/10k convention): ``train`` = the first 50,000 training images,
``valid`` = the last 10,000, ``test`` = the 10,000 test images. Images come as uint8 grey levels
0-255, ``(N, 784)`` in raster order like the binarized arrays (or ``(N, 28, 28)``), labels as int64.

Pixel levels: :func:`quantize` maps a grey level to one of K levels, ``floor(x * K / 256)``, and
:func:`dequantize` maps a level back to the centre of its interval of grey levels for display.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from .atomic import atomic_file
from .data import IMAGE_SHAPE, SPLIT_SIZES, SPLITS, D, DataError, find_folder
from .errors import PixelchainError
from .models.heads import LEVELS  # the pixel levels a model may have: one list for the models and the data

__all__ = [
    "SPLITS",
    "SPLIT_SIZES",
    "FILES",
    "MIRRORS",
    "LEVELS",
    "IMAGE_SHAPE",
    "MAX_IDX_BYTES",
    "IdxFile",
    "LevelsError",
    "find_mnist_dir",
    "parse_idx",
    "load_file",
    "load_split",
    "load_labels",
    "load_splits",
    "download_file",
    "http_fetch",
    "check_levels",
    "quantize",
    "dequantize",
    "level_centres",
]


#: no IDX file is parsed into more than this many bytes (the largest canonical file has 47,040,000)
MAX_IDX_BYTES = 64 << 20


class IdxFile(NamedTuple):
    """One canonical file: its name (without ``.gz``), dimensions, and the MD5s of the published
    ``.gz`` and of its decompressed content (so a plain or re-compressed copy is accepted too)."""

    name: str
    dims: tuple[int, ...]
    gz_md5: str
    gz_size: int
    md5: str


#: the four files, by kind
FILES: dict[str, IdxFile] = {
    "train-images": IdxFile("train-images-idx3-ubyte", (60_000, 28, 28), "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422,
                            "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels": IdxFile("train-labels-idx1-ubyte", (60_000,), "d53e105ee54ea40749a09fcbcd1e9432", 28_881,
                            "a25bea736e30d166cdddb491f175f624"),
    "test-images": IdxFile("t10k-images-idx3-ubyte", (10_000, 28, 28), "9fb629c4189551a2d022fa330f9573f3", 1_648_877,
                           "2646ac647ad5339dbf082846283269ea"),
    "test-labels": IdxFile("t10k-labels-idx1-ubyte", (10_000,), "ec29112dd5afa0611ce80d1b7f02629c", 4_542,
                           "27ae3e4e09519cfbb04c329615203637"),
}
#: which file and which rows of it make each split
_SPLIT_SOURCE = {"train": ("train", 0, 50_000), "valid": ("train", 50_000, 60_000), "test": ("test", 0, 10_000)}

#: public mirrors of the published ``.gz`` files, tried in order (``PIXELCHAIN_MNIST_URL`` first when set);
#: the original yann.lecun.com site no longer serves them reliably
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None), as in engine.data
#: ``fetch(url)`` yields the body of ``url`` in chunks; it raises (any exception) when it cannot
Fetch = Callable[[str], Iterable[bytes]]

_IDX_UBYTE = 0x08


class LevelsError(PixelchainError, ValueError):
    """A number of pixel levels, or an intensity, that cannot be quantised."""


# ----------------------------------------------------------------------------------- finding files
def _present(directory: Path, name: str) -> Path | None:
    for candidate in (name, name + ".gz"):
        p = directory / candidate
        if p.is_file():
            return p
    return None


def _holding(directory: Path) -> Path:
    """``directory`` itself when it holds any of the four files, else its ``mnist/`` folder if that
    exists, else ``directory`` (whose missing files the error then names)."""
    if any(_present(directory, f.name) for f in FILES.values()):
        return directory
    inner = directory / "mnist"
    return inner if inner.is_dir() else directory


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The directory to read the MNIST files from, and whether it is the download cache."""
    return find_folder(data_dir, _holding, "the MNIST files or a mnist/ folder", "mnist")


# ----------------------------------------------------------------------------------- parsing
def _read_exact(f: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _read_idx(path: Path, expect: tuple[int, ...] | None, max_bytes: int) -> tuple[np.ndarray, str]:
    """Parse one IDX file of unsigned bytes; returns the array and the MD5 of the decompressed content."""
    digest = hashlib.md5()
    where = str(path)
    try:
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open(path, "rb"))
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream: BinaryIO = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")) if gz else raw  # type: ignore[assignment]
            head = _read_exact(stream, 4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] != _IDX_UBYTE or not 1 <= head[3] <= 4:
                raise DataError(f"{where} is not an IDX file of unsigned bytes (magic number {head.hex() or 'missing'}, "
                                f"expected 00000803 for images or 00000801 for labels)")
            ndim = head[3]
            if expect is not None and ndim != len(expect):
                raise DataError(f"{where} has the wrong magic number {head.hex()} (expected {_IDX_UBYTE << 8 | len(expect):08x}): "
                                f"it is not the canonical MNIST file")
            dim_bytes = _read_exact(stream, 4 * ndim)
            if len(dim_bytes) < 4 * ndim:
                raise DataError(f"{where} is truncated: it ends inside its header")
            dims = struct.unpack(f">{ndim}i", dim_bytes)
            if expect is not None and dims != expect:
                raise DataError(f"{where} declares dimensions {'x'.join(map(str, dims))}, expected "
                                f"{'x'.join(map(str, expect))}: it is not the canonical MNIST file")
            if any(d <= 0 for d in dims):
                raise DataError(f"{where} declares impossible dimensions {'x'.join(map(str, dims))}")
            n = math.prod(dims)
            if n > max_bytes:
                raise DataError(f"{where} declares {n:,} values, more than the {max_bytes:,} allowed; refused")
            digest.update(head + dim_bytes)
            body = np.empty(n, dtype=np.uint8)
            view, got = body.data, 0
            while got < n:  # readinto: never more than the n bytes declared are decompressed
                k = stream.readinto(view[got:])  # type: ignore[attr-defined]
                if not k:
                    break
                got += k
            if got < n:
                raise DataError(f"{where} is truncated: its header declares {n:,} values but it holds {got:,}")
            if stream.read(1):
                raise DataError(f"{where} holds more data than the {n:,} values its header declares (a damaged file "
                                f"or a decompression bomb); refused")
            digest.update(body.data)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, EOFError):
            reason = "the compressed stream ends early (truncated)"
        elif isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        else:
            reason = f"the compressed stream is corrupt ({exc})"
        raise DataError(f"cannot read {where}: {reason}") from None
    return body.reshape(dims), digest.hexdigest()


def parse_idx(path: str | os.PathLike, expect: tuple[int, ...] | None = None, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (plain or gzip) into a uint8 array of its declared shape.

    ``expect``: the dimensions the header must declare. A header that declares more than
    ``max_bytes`` values, a body shorter or longer than declared, or a broken gzip stream is refused
    with a :class:`DataError` before (or instead of) decompressing more than the declared size.
    """
    return _read_idx(Path(path), expect, max_bytes)[0]


# ----------------------------------------------------------------------------------- downloading
def http_fetch(url: str, timeout: float = 60.0) -> Iterator[bytes]:
    """The body of ``url`` over HTTP(S), in chunks of 1 MiB."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                return
            yield chunk


def _mirrors() -> list[str]:
    extra = os.environ.get("PIXELCHAIN_MNIST_URL")
    return ([extra] if extra else []) + list(MIRRORS)


def download_file(
    kind: str,
    dest_dir: str | os.PathLike,
    *,
    mirrors: Iterable[str] | None = None,
    fetch: Fetch | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download the published ``.gz`` of ``kind`` (a key of :data:`FILES`) into ``dest_dir``.

    Mirrors are tried in order; a download is kept only when it has the published size and MD5
    (it is written to a temporary file and renamed into place after the check, so nothing broken
    takes the place of anything). ``fetch`` (default :func:`http_fetch`) is the transport, replaced
    in tests. Raises :class:`DataError` naming every mirror's failure when none delivers the file.
    """
    spec = FILES[kind]
    fetch = fetch or http_fetch
    dest = Path(dest_dir) / (spec.name + ".gz")
    failures: list[str] = []
    for base in list(mirrors) if mirrors is not None else _mirrors():
        url = base.rstrip("/") + "/" + spec.name + ".gz"
        digest = hashlib.md5()

        def write(f: BinaryIO, url: str = url, digest=digest) -> None:
            done = 0
            try:
                for chunk in fetch(url):
                    done += len(chunk)
                    if done > spec.gz_size:  # a mirror that sends more than the file is not serving it
                        raise DataError(f"{url} sent more than the {spec.gz_size:,} bytes of the published file")
                    digest.update(chunk)
                    try:
                        f.write(chunk)
                    except OSError as exc:  # not the mirror's fault: no point trying the next one
                        raise _WriteError(exc) from None
                    if progress is not None:
                        progress(done, spec.gz_size)
            except (DataError, _WriteError):
                raise
            except Exception as exc:  # any failure of the transport: try the next mirror
                raise DataError(f"{url}: {exc}") from None

        def verify(tmp: Path, url: str = url, digest=digest) -> None:
            size = tmp.stat().st_size
            if size != spec.gz_size or digest.hexdigest() != spec.gz_md5:
                raise DataError(f"{url} gave {size:,} bytes with MD5 {digest.hexdigest()[:12]}..., not the published file "
                                f"({spec.gz_size:,} bytes, MD5 {spec.gz_md5[:12]}...)")

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(dest, check=verify) as f:
                write(f)
            return dest
        except DataError as exc:
            failures.append(str(exc))
        except _WriteError as exc:
            err = exc.args[0]
            raise DataError(f"cannot write the download into {dest.parent}: {err.strerror or err}; free some space or set "
                            f"PIXELCHAIN_CACHE to another folder") from None
        except OSError as exc:
            raise DataError(f"cannot write the download cache {dest.parent}: {exc.strerror or exc}; set PIXELCHAIN_CACHE "
                            f"to a writable folder") from None
    raise DataError(f"cannot download {spec.name}.gz ({'; '.join(failures) or 'no mirror given'}). Check the network, or put "
                    f"the four MNIST files in a folder and pass it with --data or PIXELCHAIN_DATA; nothing was kept.")


class _WriteError(Exception):
    """The download could not be written locally (carries the OSError)."""


# ----------------------------------------------------------------------------------- loading
def load_file(
    kind: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
    fetch: Fetch | None = None,
) -> np.ndarray:
    """The verified content of one canonical file (a key of :data:`FILES`): images ``(N, 28, 28)``
    uint8 or labels ``(N,)`` uint8."""
    if kind not in FILES:
        raise DataError(f"unknown MNIST file {kind!r}; choose one of {', '.join(FILES)}")
    spec = FILES[kind]
    directory, is_cache = find_mnist_dir(data_dir)
    source = _present(directory, spec.name)
    if source is None:
        if not (is_cache and download):
            raise DataError(f"{directory} has no {spec.name} (or .gz): expected the four MNIST files there or in a mnist/ "
                            f"folder inside it; download them or leave --data and PIXELCHAIN_DATA unset to use the cache.")
        source = download_file(kind, directory, fetch=fetch, progress=progress)
    hint = ("Delete it and load again to download it afresh." if is_cache
            else f"Replace it with the original file (from {MIRRORS[0]}) or use another folder with --data.")
    try:
        x, md5 = _read_idx(source, spec.dims, MAX_IDX_BYTES)
    except DataError as exc:
        raise DataError(f"{exc}. {hint}") from None
    if md5 != spec.md5:
        raise DataError(f"{source} is not the canonical MNIST {spec.name} (MD5 of its content {md5[:12]}..., expected "
                        f"{spec.md5[:12]}...): the file is altered. {hint}")
    return x


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def load_split(
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    flat: bool = True,
    download: bool = True,
    progress: Progress | None = None,
    fetch: Fetch | None = None,
) -> np.ndarray:
    """The uint8 grey images (0-255) of ``split``: ``(N, 784)`` in raster order like
    :func:`engine.data.load_split`, or ``(N, 28, 28)`` with ``flat=False``."""
    _check_split(split)
    source, start, stop = _SPLIT_SOURCE[split]
    x = load_file(f"{source}-images", data_dir, download=download, progress=progress, fetch=fetch)[start:stop]
    return x.reshape(len(x), D) if flat else x


def load_labels(
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
    fetch: Fetch | None = None,
) -> np.ndarray:
    """The int64 labels (0-9) of ``split``, in the order of :func:`load_split`'s images."""
    _check_split(split)
    source, start, stop = _SPLIT_SOURCE[split]
    y = load_file(f"{source}-labels", data_dir, download=download, progress=progress, fetch=fetch)[start:stop]
    return y.astype(np.int64)


def load_splits(
    data_dir: str | os.PathLike | None = None,
    splits: tuple[str, ...] = SPLITS,
    *,
    flat: bool = True,
    **kw,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}``; each file is read once however many splits it serves."""
    for s in splits:
        _check_split(s)
    files: dict[str, np.ndarray] = {}
    out = {}
    for s in splits:
        source, start, stop = _SPLIT_SOURCE[s]
        for part in ("images", "labels"):
            if f"{source}-{part}" not in files:
                files[f"{source}-{part}"] = load_file(f"{source}-{part}", data_dir, **kw)
        x = files[f"{source}-images"][start:stop]
        out[s] = (x.reshape(len(x), D) if flat else x, files[f"{source}-labels"][start:stop].astype(np.int64))
    return out


# ----------------------------------------------------------------------------------- pixel levels
def check_levels(levels: int) -> int:
    """``levels`` as an int if it is one of :data:`LEVELS`, else a :class:`LevelsError`."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or int(levels) not in LEVELS:
        raise LevelsError(f"pixel levels must be one of {', '.join(map(str, LEVELS))}, got {levels!r}")
    return int(levels)


def quantize(x: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels 0-255 (any integer or float array) to levels 0..K-1: ``floor(x * K / 256)``, uint8.

    Each level covers 256 / K consecutive grey levels; K = 256 is the identity on integers."""
    k = check_levels(levels)
    a = np.asarray(x)
    if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() >= 256):
        raise LevelsError(f"grey levels must lie in 0-255, got values from {a.min()} to {a.max()}")
    if np.issubdtype(a.dtype, np.integer):
        return ((a.astype(np.int32) * k) >> 8).astype(np.uint8)
    return np.floor(a.astype(np.float64) * k / 256).astype(np.uint8)


def level_centres(levels: int) -> np.ndarray:
    """The grey level at the centre of each level's interval, float64 ``(K,)``: ``(k + 1/2) * 256/K - 1/2``
    (level k covers ``k*256/K .. (k+1)*256/K - 1``); for K = 256 these are 0..255 themselves."""
    k = check_levels(levels)
    return (np.arange(k, dtype=np.float64) + 0.5) * (256 / k) - 0.5


def dequantize(q: np.ndarray, levels: int) -> np.ndarray:
    """Levels 0..K-1 to displayable uint8 grey levels: the centre of each level's interval, rounded
    half up (K = 2: 64 and 192; K = 256: the identity)."""
    k = check_levels(levels)
    a = np.asarray(q)
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= k):
        raise LevelsError(f"levels must be integers in 0-{k - 1}, got {a.dtype} values from {a.min()} to {a.max()}")
    return (((2 * a.astype(np.int32) + 1) * 128) // k).astype(np.uint8)
