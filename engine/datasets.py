"""The data sets a model trains on, behind one name: ``binarized-mnist`` and ``mnist``.

* ``binarized-mnist``: the static binarized MNIST of Larochelle & Murray (:mod:`engine.data`),
  pixels 0/1, two levels only. Every binary model before grey digits was trained on it.
* ``mnist``: the greyscale MNIST (:mod:`engine.mnist`), quantised to K levels (2, 4, 8, 16 or
  256) by ``floor(intensity * K / 256)``. At K = 2 that is "intensity >= 128": a legitimate data set,
  but not the binarized one (those pixels were drawn as Bernoulli samples of the intensities), so
  likelihoods on the two are not comparable.

A model's checkpoint records which data set it was trained on (``dataset`` in its metadata,
:func:`dataset_of`); its levels are in its config. Commands that measure or use a model read both
from the checkpoint, so they need no flag.

Folders (``--data DIR`` or ``PIXELCHAIN_DATA``): a folder holding ``binarized_mnist/`` and
``mnist/`` (as ``../shared/data`` does) serves both data sets; a folder of the binarized files alone
or of the four MNIST files alone serves its own. Without either, each loader uses (and fills) the
download cache.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from . import data as binarized
from . import mnist
from .data import DataError

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "check_dataset",
    "load_dataset",
    "load_labels",
    "dataset_of",
    "data_record",
    "describe",
]

DATASETS = ("binarized-mnist", "mnist")
DEFAULT_DATASET = "binarized-mnist"

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None), as the loaders take it


def check_dataset(dataset: str, levels: int = 2) -> tuple[str, int]:
    """``(dataset, levels)`` checked together: a known data set, levels it can give (the
    binarized data set has two only). Raises :class:`~engine.data.DataError` (one line) otherwise."""
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    try:
        k = mnist.check_levels(levels)
    except mnist.LevelsError as exc:
        raise DataError(str(exc)) from None
    if dataset == "binarized-mnist" and k != 2:
        raise DataError(f"binarized-mnist has 2 pixel levels, not {k}: grey levels come from the mnist data set "
                        f"(--dataset mnist)")
    return dataset, k


def load_dataset(
    dataset: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    levels: int = 2,
    progress: Progress | None = None,
) -> np.ndarray:
    """The (N, 784) uint8 images of ``split`` (``train``, ``valid``, ``test``) of ``dataset``, as
    levels 0 .. ``levels``-1 in raster order.

    ``binarized-mnist`` takes ``levels`` 2 only (its own 0/1 pixels); ``mnist`` quantises the grey
    intensities at ``levels`` (2, 4, 8, 16, 256). Note that ``mnist`` at 2 levels ("intensity >=
    128") is another data set than ``binarized-mnist`` (Bernoulli samples of the intensities).
    ``progress`` sees the bytes of a download into the cache."""
    dataset, k = check_dataset(dataset, levels)
    if dataset == "binarized-mnist":
        return binarized.load_split(split, data_dir, progress=progress)
    return mnist.quantize(mnist.load_split(split, data_dir, progress=progress), k)


def load_labels(dataset: str, split: str, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The int64 digit labels (0-9) of ``split`` of ``dataset``, aligned with :func:`load_dataset`'s
    images. The binarized split is published without labels: its recovered labels ship with
    pixelchain (:mod:`engine.labels`), so ``data_dir`` is not read for it."""
    check_dataset(dataset)
    if dataset == "binarized-mnist":
        from .labels import binarized_labels

        return binarized_labels(split)
    return mnist.load_labels(split, data_dir)


def dataset_of(meta: Mapping[str, Any]) -> str:
    """The data set a checkpoint's metadata says its model was trained on. Checkpoints written
    before data sets were recorded hold binary models of ``binarized-mnist``; one without the entry
    whose config has more than two levels can only come from ``mnist``."""
    name = meta.get("dataset")
    if name is None:
        config = meta.get("config")
        levels = config.get("levels", 2) if isinstance(config, Mapping) else 2
        return DEFAULT_DATASET if levels == 2 else "mnist"
    if name not in DATASETS:
        raise DataError(f"the checkpoint names an unknown data set {name!r}; this pixelchain knows {', '.join(DATASETS)}")
    return str(name)


def data_record(dataset: str, levels: int = 2) -> dict[str, Any]:
    """The ``data`` entry of a training run's metadata: which files (by checksum) and levels it used."""
    dataset, k = check_dataset(dataset, levels)
    if dataset == "binarized-mnist":
        return {"name": "binarized_mnist", "checksums": {s: binarized.CHECKSUMS[s] for s in ("train", "valid")}}
    return {"name": "mnist", "levels": k, "md5": {f.name: f.md5 for kind, f in mnist.FILES.items() if kind.startswith("train")}}


def describe(dataset: str, levels: int) -> str:
    """A few words for output: ``binarized MNIST`` or ``MNIST at 16 levels``."""
    return "binarized MNIST" if dataset == "binarized-mnist" else f"MNIST at {levels} levels"
