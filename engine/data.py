"""Static binarized MNIST (Larochelle & Murray 2011): find, download, verify, parse, cache.

The three canonical files ``binarized_mnist_{train,valid,test}.amat`` (plain or ``.gz``) hold one
image per line, 784 values 0/1 separated by white space. Where the loader looks, in order:

1. an explicit directory (``--data DIR`` on the command line, ``data_dir=`` here);
2. the ``PIXELCHAIN_DATA`` environment variable;
3. the per-user cache (``$PIXELCHAIN_CACHE`` or ``$XDG_CACHE_HOME/pixelchain`` or
   ``~/.cache/pixelchain``), downloading the public files into it when they are missing.

Every parse is checked against the content checksum of the split (sha256 of the bit-packed
array) and cached bit-packed in the cache directory (keyed by the source file's path, size and
modification time), so later loads take milliseconds. A cached parse is checked against the same
checksum each time it is read, so an altered cache is parsed again, never used.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import atomic_file
from .errors import PixelchainError

__all__ = [
    "DataError",
    "SPLITS",
    "SPLIT_SIZES",
    "CHECKSUMS",
    "IMAGE_SHAPE",
    "cache_dir",
    "find_data_dir",
    "load_split",
    "load_splits",
    "subset",
    "parse_amat",
    "download_split",
    "content_checksum",
]

SPLITS = ("train", "valid", "test")
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
IMAGE_SHAPE = (28, 28)
D = 784
#: sha256 of ``np.packbits(X, axis=1).tobytes()`` for the (N, 784) uint8 array of each split.
CHECKSUMS = {
    "train": "727146c35424b019f3e350e1e69faa05644a0abaf787e3f4e1a9632220a13906",
    "valid": "a256ac44ae26be720fad8616a05ed6ecfd1619930d9a208379bb2a4405df5b6d",
    "test": "9fcd8da6f0fdf09b2ba30fe63a0bb784042a0de82563172530229b983e294ff2",
}
#: an .amat holds a digit and a separator per value; three bytes a value (e.g. " \x0b") are still read
MAX_BYTES_PER_IMAGE = 4 * D
DEFAULT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class DataError(PixelchainError, RuntimeError):
    """The data set cannot be found, read or verified; the message says what to do."""


def cache_dir() -> Path:
    if os.environ.get("PIXELCHAIN_CACHE"):
        return Path(os.environ["PIXELCHAIN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pixelchain"


def _file_name(split: str) -> str:
    return f"binarized_mnist_{split}.amat"


def _source_in(directory: Path, split: str) -> Path | None:
    for name in (_file_name(split), _file_name(split) + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def content_checksum(x: np.ndarray) -> str:
    """sha256 of a set of images (N, D): of their packed bits where every value is 0 or 1 (the
    binarized splits' :data:`CHECKSUMS`), otherwise of their levels as bytes, with the shape, so
    that two grey sets with the same non-zero pixels but other grey values get other checksums."""
    a = np.asarray(x, dtype=np.uint8)
    if a.size == 0 or int(a.max()) <= 1:
        return hashlib.sha256(np.packbits(a, axis=1).tobytes()).hexdigest()
    h = hashlib.sha256(f"levels {a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def find_folder(data_dir: str | os.PathLike | None, holding: Callable[[Path], Path], what: str, cache_name: str) -> tuple[Path, bool]:
    """The folder a data set is read from, and whether it is the download cache: ``data_dir``, else
    ``$PIXELCHAIN_DATA``, else the cache's ``cache_name`` folder. ``holding`` picks the folder of
    the files inside the one given (a folder holding a data set's own folder, as ../shared/data
    does); ``what`` names the files in the error of a folder that does not exist."""
    if data_dir is not None:
        p = Path(data_dir).expanduser()
        if not p.is_dir():
            raise DataError(f"data directory {p} does not exist; pass the folder that holds {what}")
        return holding(p), False
    env = os.environ.get("PIXELCHAIN_DATA")
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataError(f"PIXELCHAIN_DATA={env} is not a directory; point it at the folder that holds {what}")
        return holding(p), False
    return cache_dir() / cache_name, True


def _holding(directory: Path) -> Path:
    """``directory`` itself when it holds any of the three files, else its ``binarized_mnist/``
    folder when that does (a folder of both data sets, as ``../shared/data`` is), else ``directory``
    (whose missing files the error then names)."""
    inner = directory / "binarized_mnist"
    if not any(_source_in(directory, s) for s in SPLITS) and any(_source_in(inner, s) for s in SPLITS):
        return inner
    return directory


def find_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The directory to read the binarized files from and whether it is the download cache."""
    return find_folder(data_dir, _holding, "binarized_mnist_*.amat", "binarized_mnist")


def parse_amat(path: str | os.PathLike, expected_rows: int | None = None) -> np.ndarray:
    """Parse an ``.amat`` file (plain or gzip) into an (N, 784) uint8 array."""
    path = Path(path)
    most = expected_rows if expected_rows is not None else max(SPLIT_SIZES.values())
    limit = most * MAX_BYTES_PER_IMAGE + 4096
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read(limit + 1)  # never more: a small .gz may inflate to gigabytes
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}.") from None
    if len(raw) > limit:
        raise DataError(f"{path} {'decompresses to' if opener is not open else 'holds'} more than the {limit / 2**20:.0f} MiB "
                        f"that {most:,} images take as text: it is not a binarized MNIST split")
    lines = raw.split(b"\n")
    rows = [ln for ln in lines if ln.strip()]
    if not rows:
        raise DataError(f"{path} holds no images")
    flat = b"".join(rows).translate(None, b" \t\r\x0b\x0c")
    arr = np.frombuffer(flat, dtype=np.uint8) - ord("0")
    if arr.size != len(rows) * D:
        raise DataError(
            f"{path} is malformed or truncated: {len(rows)} lines but {arr.size} values (expected {D} per line)"
        )
    if arr.size and arr.max() > 1:
        raise DataError(f"{path} holds values other than 0 and 1")
    x = arr.reshape(len(rows), D)
    if expected_rows is not None and x.shape[0] != expected_rows:
        raise DataError(f"{path} holds {x.shape[0]} images, expected {expected_rows}: the file is truncated or not the right split")
    return x


def _verify(x: np.ndarray, split: str, source: Path) -> None:
    got = content_checksum(x)
    if got != CHECKSUMS[split]:
        raise DataError(
            f"{source} does not match the static binarized MNIST {split} split (checksum {got[:12]}..., "
            f"expected {CHECKSUMS[split][:12]}...): the file is altered or truncated."
        )


def _parsed_cache_path(split: str, source: Path) -> Path:
    """The bit-packed parse of ``source``: keyed by the file's identity (path, size, mtime), so a
    file that is replaced, altered or truncated later is parsed and verified again."""
    st = source.stat()
    ident = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "parsed" / f"binarized_mnist_{split}.{CHECKSUMS[split][:16]}.{ident}.npy"


def _read_parsed_cache(cached: Path, split: str) -> np.ndarray | None:
    """The images of a parse cache, or None (parse again) unless the file is exactly the bit-packed
    split: its size is checked before it is read, and its content against the split's checksum
    (the checksum is of the very bytes the cache holds, so checking costs one sha256 of ~5 MB). An
    altered, truncated or foreign cache file is ignored and rebuilt, never believed."""
    rows, cols = SPLIT_SIZES[split], (D + 7) // 8
    try:
        if not cached.is_file() or cached.stat().st_size > rows * cols + 4096:
            return None
        packed = np.load(io.BytesIO(cached.read_bytes()), allow_pickle=False)
    except Exception:  # noqa: BLE001 - whatever a damaged .npy makes numpy raise, the cache is rebuilt
        return None
    if packed.dtype != np.uint8 or packed.shape != (rows, cols):
        return None
    if hashlib.sha256(np.ascontiguousarray(packed).tobytes()).hexdigest() != CHECKSUMS[split]:
        return None
    return np.unpackbits(packed, axis=1, count=D)


def download_split(
    split: str, dest_dir: Path, base_url: str | None = None, progress: Progress | None = None, timeout: float = 60.0
) -> Path:
    """Download one split into ``dest_dir``; verified before it is moved into place."""
    base_url = base_url or os.environ.get("PIXELCHAIN_DATA_URL") or DEFAULT_URL
    url = base_url.rstrip("/") + "/" + _file_name(split)
    dest = Path(dest_dir) / _file_name(split)

    def write(f) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total_n = int(total) if total and total.isdigit() else None
                done = 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as exc:  # not the network's fault: say so
                        raise DataError(
                            f"cannot write the download into {dest.parent}: {exc.strerror or exc}; free some space "
                            f"or set PIXELCHAIN_CACHE to another folder"
                        ) from None
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total_n)
                if total_n is not None and done != total_n:
                    raise DataError(f"download of {url} broke off after {done} of {total_n} bytes; try again")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(
                f"cannot download {url}: {exc}. Check the network, or put the three binarized_mnist_*.amat "
                f"files in a folder and pass it with --data or PIXELCHAIN_DATA."
            ) from None

    def verify(tmp: Path) -> None:  # before the download takes the place of anything
        try:
            x = parse_amat(tmp, SPLIT_SIZES[split])
        except DataError as exc:
            reason = str(exc).split(": ", 1)[-1] if str(exc).startswith("cannot read") else str(exc).replace(str(tmp), "it")
            raise DataError(f"the file downloaded from {url} is not the {split} split ({reason}); nothing was kept, try again") from None
        if content_checksum(x) != CHECKSUMS[split]:
            raise DataError(f"the file downloaded from {url} does not match the static binarized MNIST {split} split "
                            f"(checksum mismatch); nothing was kept. Try again, or fetch the files by hand and use --data.")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(dest, check=verify) as f:
            write(f)
    except OSError as exc:
        raise DataError(
            f"cannot write the download cache {dest.parent}: {exc.strerror or exc}; set PIXELCHAIN_CACHE to a writable folder"
        ) from None
    return dest


def load_split(
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
) -> np.ndarray:
    """The (N, 784) uint8 images of ``split`` (``train``, ``valid`` or ``test``)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    directory, is_cache = find_data_dir(data_dir)
    source = _source_in(directory, split)
    if source is None:
        if not (is_cache and download):
            raise DataError(
                f"{directory} has no {_file_name(split)} (or .gz). Expected the static binarized MNIST files "
                f"binarized_mnist_{{train,valid,test}}.amat there; download them or leave --data unset to use the cache."
            )
        source = download_split(split, directory, progress=progress)
    try:
        cached = _parsed_cache_path(split, source)
    except OSError as exc:
        raise DataError(f"cannot read {source}: {exc.strerror or exc}") from None
    x = _read_parsed_cache(cached, split)
    if x is not None:
        return x
    try:
        x = parse_amat(source, SPLIT_SIZES[split])
        _verify(x, split, source)
    except DataError as exc:
        hint = (
            "Delete it and load again to download it afresh."
            if is_cache
            else f"Replace it with the original file (from {DEFAULT_URL}) or use another folder with --data."
        )
        raise DataError(f"{exc} {hint}") from None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cached) as f:
            np.save(f, np.packbits(x, axis=1), allow_pickle=False)
    except OSError:
        pass  # an unwritable cache only costs speed
    return x


def load_splits(data_dir: str | os.PathLike | None = None, splits: tuple[str, ...] = SPLITS, **kw) -> dict[str, np.ndarray]:
    return {s: load_split(s, data_dir, **kw) for s in splits}


def subset(x: np.ndarray, n: int | None, random: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``n`` images of ``x``, or with ``random`` ``n`` drawn without replacement (in split
    order) by ``seed``; ``n`` None or 0: all of them. Returns the images and the indices drawn at
    random (None otherwise). The splits are sorted by digit class, so the first ``n`` are not typical."""
    if not n:
        return x, None
    if n < 0:
        raise ValueError(f"the number of images must be positive, got {n}")
    if not random:
        return x[:n], None
    index = np.sort(np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False))
    return x[index], index
