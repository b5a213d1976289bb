"""The log-likelihood of every test digit under a checkpoint, computed once and kept on disk.

The percentile of a drawing's ``log p(x)`` is taken among the whole test split (10,000 digits),
never a subset: scoring them all takes minutes for the deep models on a CPU, so it is done once per
checkpoint and ordering, as a generator a worker can stop between batches, and the result is
cached in the per-user cache folder (:func:`engine.data.cache_dir`, ``reference/``). A bundled
model's figures ship with it, measured when it was bundled (``scripts/bundle.py`` writes them to
``resources/reference/``, read-only, :data:`BUNDLED_FOLDER`): its first percentile needs no pass.

A cache file is JSON (no pickle) named by, and recording, what the figures depend on:

* the sha256 of the checkpoint file's bytes (:func:`checkpoint_sha256`): a retrained or edited
  checkpoint under the same name gets figures of its own;
* the ordering, by its permutation (two orderings with the same steps share figures);
* the images scored, by :func:`engine.data.content_checksum`.

It also holds the sha256 of the log-likelihoods' float64 bytes: a cache that was altered, cut
short or written by another version is recomputed, never read as a wrong figure and never a
traceback. Writing the cache is best effort (an unwritable folder costs time only).

Other figures over the test split can share the same cache: :func:`split_log_probs_steps` returns the
per-digit values in the split's order, from which quantiles (``engine.tasks.score``) or a
likelihood ratio against a background model follow without another pass of the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Generator

import numpy as np
import torch

import resources

from .atomic import atomic_write
from .data import content_checksum
from .errors import PixelchainError
from .jsonsafe import loads
from .models.base import ARModel
from .ordering import Ordering

__all__ = ["BUNDLED_FOLDER", "CACHE_VERSION", "checkpoint_sha256", "cache_file", "read_cached", "split_log_probs_steps",
           "write_reference"]

CACHE_VERSION = 1
#: a cache of 10,000 float64 values written by ``repr`` is ~200 kB; refuse anything far larger
MAX_CACHE_BYTES = 8 << 20
#: the figures of the bundled checkpoints, written by ``scripts/bundle.py`` and read like a cache
BUNDLED_FOLDER = Path(resources.__file__).resolve().parent / "reference"


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """The sha256 (hex) of a checkpoint file's bytes: the key of its cached figures."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ordering_key(order: Ordering) -> str:
    return hashlib.sha256(np.asarray(order.perm, dtype="<i4").tobytes()).hexdigest()


def _values_checksum(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()


def cache_file(checkpoint: str, order: Ordering, images_checksum: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the log-likelihoods of the images (by checksum) under ``checkpoint`` (its sha256) in
    ``order`` are cached: ``folder`` or the per-user cache's ``reference/``."""
    if folder is None:
        from .data import cache_dir

        folder = cache_dir() / "reference"
    return Path(folder) / f"logp-{checkpoint[:32]}-{_ordering_key(order)[:16]}-{images_checksum[:16]}.json"


def read_cached(path: Path, checkpoint: str, order: Ordering, images_checksum: str, n: int) -> np.ndarray | None:
    """The cached (n,) log-likelihoods at ``path`` if the file is whole and is the one asked for;
    None for a missing, unreadable, altered, truncated or foreign file."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CACHE_BYTES:  # never block on a FIFO or read a huge file
            return None
        d = loads(path.read_bytes(), what=f"the cache {path.name}", max_bytes=MAX_CACHE_BYTES)
    except (OSError, PixelchainError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("version") != CACHE_VERSION:
        return None
    expected = {"checkpoint_sha256": checkpoint, "ordering_sha256": _ordering_key(order), "images_checksum": images_checksum, "count": n}
    if any(d.get(k) != v for k, v in expected.items()):
        return None
    raw = d.get("log_probs")
    if not isinstance(raw, list) or len(raw) != n or not all(isinstance(v, float) and math.isfinite(v) for v in raw):
        return None
    values = np.asarray(raw, dtype=np.float64)
    if d.get("sha256") != _values_checksum(values):
        return None
    return values


def write_reference(folder: str | os.PathLike, checkpoint: str, order: Ordering, images: np.ndarray, values: np.ndarray) -> Path:
    """Store ``values``, the (N,) log-likelihoods of ``images`` (N, D) under ``checkpoint`` (its
    sha256) in ``order``, in ``folder`` as :func:`split_log_probs_steps` reads them back; returns
    the file (not written for values that are not all finite)."""
    x = np.asarray(images)
    images_checksum = content_checksum(x.reshape(len(x), -1))
    path = cache_file(checkpoint, order, images_checksum, folder)
    _write(path, checkpoint, order, images_checksum, np.asarray(values, dtype=np.float64))
    return path


def _write(path: Path, checkpoint: str, order: Ordering, images_checksum: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        return  # JSON has no infinity; such a model is re-scored each time rather than cached wrongly
    d: dict[str, Any] = {
        "version": CACHE_VERSION,
        "checkpoint_sha256": checkpoint,
        "ordering": order.label,
        "ordering_sha256": _ordering_key(order),
        "images_checksum": images_checksum,
        "count": int(len(values)),
        "sha256": _values_checksum(values),
        "log_probs": [float(v) for v in values],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            path.unlink()  # the cache is ours: a FIFO or link in its place is replaced, never written through
        atomic_write(path, json.dumps(d))
    except OSError:
        pass


@torch.no_grad()
def split_log_probs_steps(model: ARModel, checkpoint: str | None, ordering: Ordering | None = None, *,
                         images: np.ndarray | None = None, data_dir: str | os.PathLike | None = None,
                         batch_size: int = 250, cache: bool = True,
                         folder: str | os.PathLike | None = None) -> Generator[float, None, np.ndarray]:
    """Generator yielding the fraction done (increasing, ending at 1.0); returns (N,) float64
    ``log p`` in nats of every test digit (or of ``images``), in their order.

    ``checkpoint`` is the sha256 of the checkpoint file the model was loaded from
    (:func:`checkpoint_sha256`); with it (and ``cache``) a cached result is read back at once, with
    no model work, and a computed one is stored. ``None`` (a model not saved to a file) computes
    without caching. The model is scored ``batch_size`` images at a time, so a worker can stop
    between batches; a stopped run stores nothing."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    from .data import load_split

    x = np.asarray(load_split("test", data_dir) if images is None else images).reshape(-1, model.size)
    order = model.resolve_ordering(ordering)
    images_checksum = content_checksum(x)
    path = None
    if checkpoint and cache:
        path = cache_file(checkpoint, order, images_checksum, folder)
        for where in (path, cache_file(checkpoint, order, images_checksum, BUNDLED_FOLDER)):  # the user's, then shipped
            cached = read_cached(where, checkpoint, order, images_checksum, len(x))
            if cached is not None:
                yield 1.0
                return cached
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.asarray(x[i : i + batch_size], dtype=np.float32))
        out.append(model.log_prob(xb, order).double().cpu().numpy())
        yield min(len(x), i + batch_size) / len(x)
    values = np.concatenate(out) if out else np.zeros(0)
    if not len(x):
        yield 1.0
    if path is not None:
        _write(path, checkpoint or "", order, images_checksum, values)
    return values
