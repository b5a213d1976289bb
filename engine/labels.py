"""Digit labels (0-9) of the static binarized MNIST split, which is published without them.

Each binarized image is a Bernoulli sample of one MNIST image, so ``scripts/recover_labels.py``
recovered every label by matching each binarized image to the MNIST image under which it is most
likely (docs/data.md has its report: margins, ambiguous cases). The result ships as
``resources/labels/binarized_mnist_labels.bin``: one byte per image, the train split's 50,000 then
valid's 10,000 then test's 10,000, in the order of :func:`engine.data.load_split`. It is a plain
byte file (nothing to unpickle) and is checked against :data:`SHA256` every time it is read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

import resources

from .data import DataError

__all__ = ["LABELS_FILE", "SHA256", "SPLIT_SIZES", "binarized_labels", "binarized_label_splits"]

LABELS_FILE = Path(resources.__file__).resolve().parent / "labels" / "binarized_mnist_labels.bin"
#: sha256 of the label file, as ``scripts/recover_labels.py`` reported it
SHA256 = "50d56e7107b9b77b21ebbd43d061d51d5e7e19fe1d5a4f74120c11ee1387579b"
#: the splits in the file's order, with their sizes (those of the binarized split)
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}


def _read(path: Path) -> bytes:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the label file {path}: {exc.strerror or exc}; reinstall pixelchain or run "
                        f"scripts/recover_labels.py") from None
    total = sum(SPLIT_SIZES.values())
    if len(blob) != total or hashlib.sha256(blob).hexdigest() != SHA256:
        raise DataError(f"the label file {path} is altered or truncated ({len(blob):,} bytes, expected {total:,} with sha256 "
                        f"{SHA256[:12]}...); reinstall pixelchain or run scripts/recover_labels.py")
    return blob


def binarized_label_splits(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """``{split: int64 labels}`` for train, valid and test, verified; ``path`` defaults to the bundled file."""
    blob = np.frombuffer(_read(Path(path) if path is not None else LABELS_FILE), dtype=np.uint8)
    out, start = {}, 0
    for split, n in SPLIT_SIZES.items():
        out[split] = blob[start:start + n].astype(np.int64)
        start += n
    return out


def binarized_labels(split: str, path: str | os.PathLike | None = None) -> np.ndarray:
    """The int64 labels of one binarized split, aligned with :func:`engine.data.load_split`'s images."""
    if split not in SPLIT_SIZES:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_SIZES)}")
    return binarized_label_splits(path)[split]
