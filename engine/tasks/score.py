"""How digit-like is an image? Log-likelihood percentiles and a likelihood-ratio score.

Two scores for an image ``x`` under a model ``p``:

* the total log-likelihood ``log p(x)``, reported as a percentile of the same quantity over the
  test digits (0: less likely than every test digit, 100: more likely than all of them);
* the likelihood ratio ``log p(x) - log p_bg(x)`` against a background model, here a per-pixel
  independent Bernoulli fitted on the training split (:class:`BackgroundModel`; for a grey model
  of K levels, independent per-pixel level frequencies, a categorical per pixel). Raw likelihoods
  of deep generative models are known to rank some out-of-distribution inputs (e.g. nearly blank
  images) above real data (Nalisnick et al. 2019, "Do Deep Generative Models Know What They Don't
  Know?"); dividing by a simple background model that captures the low-level statistics (how much
  ink, where) keeps what the autoregressive model knows *besides* them (Ren et al. 2019,
  "Likelihood Ratios for Out-of-Distribution Detection"; Schirrmeister et al. 2020).

The test-set distributions of both scores are summarised by 1001 sorted quantiles and cached in a
small JSON file per model (keyed by :func:`~engine.tasks.compress.model_fingerprint` and the data's
checksum) under the pixelchain cache folder, so the app can show percentiles live while drawing.
The reference digits and the training split come from the model's own data set at its levels
(``dataset``: binarized MNIST for a binary model unless told otherwise, MNIST for a grey one).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import PixelchainError
from ..models.base import ARModel

__all__ = ["ScoreError", "BackgroundModel", "Reference", "Score", "Scorer", "compute_reference", "percentile_of", "auroc"]

QUANTILES = 1001
#: 2: the content is wrapped with what it was computed from and a sha256 of both
CACHE_VERSION = 2
#: a cache file larger than this is not read (the reference is ~50 KB)
CACHE_MAX_BYTES = 4 << 20


class ScoreError(PixelchainError, ValueError):
    """A score that would not be a number (the model computes NaN or infinity for an image)."""


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ScoreError(f"{what} is not finite for {len(bad)} of {len(values)} images (first: image {bad[0]}, {values[bad[0]]}); "
                         f"the model computes NaN or infinity for them")
    return values


@dataclass
class BackgroundModel:
    """Independent pixels. Binary: ``log p(x) = sum_i x_i log m_i + (1 - x_i) log(1 - m_i)`` with
    ``probs`` (D,) the probability of ink; K > 2 levels: ``log p(x) = sum_i log m_i[x_i]`` with
    ``probs`` (D, K) each pixel's level frequencies."""

    probs: np.ndarray  #: (D,) probability of ink per pixel, or (D, K) probability of each level
    alpha: float = 1.0  #: add-alpha smoothing used in the fit

    @property
    def levels(self) -> int:
        return 2 if self.probs.ndim == 1 else int(self.probs.shape[1])

    @property
    def size(self) -> int:
        """D, the pixels of an image."""
        return int(self.probs.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, alpha: float = 1.0, levels: int = 2) -> "BackgroundModel":
        """Smoothed per-pixel frequencies of (N, D) images: ``(count + alpha) / (n + 2 alpha)`` of a
        1 for binary images, ``(count of v + alpha) / (n + K alpha)`` of each level v for ``levels``
        K > 2 (no level has probability 0, so any image has a finite score)."""
        x = np.asarray(x).reshape(len(x), -1)
        if len(x) == 0:
            raise ValueError("the background model needs at least one image")
        if levels == 2:
            counts = x.sum(axis=0, dtype=np.float64)
            return cls((counts + alpha) / (len(x) + 2 * alpha), alpha)
        if alpha <= 0:
            raise ValueError("the smoothing of a K-level background model must be positive")
        v = x.astype(np.int64)
        if v.min() < 0 or v.max() >= levels:
            raise ValueError(f"images of {levels} levels hold values 0 to {levels - 1}, not {v.min()} to {v.max()}")
        d = x.shape[1]
        counts = np.bincount((np.arange(d) * levels + v).ravel(), minlength=d * levels).reshape(d, levels)
        return cls((counts + alpha) / (len(x) + levels * alpha), alpha)

    def log_prob(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N,) log p_bg(x) in nats."""
        a = np.asarray(torch.as_tensor(x).detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        a = a.reshape(-1, self.probs.shape[0])
        if self.probs.ndim == 1:
            return a @ np.log(self.probs) + (1 - a) @ np.log1p(-self.probs)
        v = a.astype(np.int64)
        if v.size and (v.min() < 0 or v.max() >= self.levels or not np.array_equal(v, a)):
            raise ValueError(f"the background model scores images of levels 0 to {self.levels - 1}")
        return np.log(self.probs)[np.arange(self.size), v].sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"alpha": self.alpha, "probs": self.probs.tolist()}
        if self.probs.ndim == 2:
            d["levels"] = self.levels
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackgroundModel":
        p = np.asarray(d["probs"], dtype=np.float64)
        if p.ndim == 2:  # K levels: every row a distribution with no empty level
            if p.shape[0] == 0 or p.shape[1] < 3 or d.get("levels") != p.shape[1] or not np.all((p > 0) & (p < 1)) \
                    or not np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-9):
                raise ValueError("background level frequencies must be positive rows that sum to 1")
            return cls(p, float(d.get("alpha", 1.0)))
        if p.ndim != 1 or len(p) == 0 or not np.all((p > 0) & (p < 1)):
            raise ValueError("background probabilities must lie strictly between 0 and 1")
        return cls(p, float(d.get("alpha", 1.0)))


def percentile_of(values: np.ndarray | float, quantiles: np.ndarray) -> np.ndarray:
    """Percent of the reference distribution (given by sorted quantiles) below each value."""
    q = np.asarray(quantiles, dtype=np.float64)
    return np.interp(np.asarray(values, dtype=np.float64), q, np.linspace(0.0, 100.0, len(q)), left=0.0, right=100.0)


@dataclass
class Reference:
    """Test-set distributions of log p(x) and of the likelihood ratio, as sorted quantiles."""

    log_prob_quantiles: np.ndarray
    llr_quantiles: np.ndarray
    n_images: int
    split: str = "test"

    def to_dict(self) -> dict[str, Any]:
        return {"log_prob_quantiles": self.log_prob_quantiles.tolist(), "llr_quantiles": self.llr_quantiles.tolist(),
                "n_images": self.n_images, "split": self.split}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reference":
        lq, rq = (np.asarray(d[k], dtype=np.float64) for k in ("log_prob_quantiles", "llr_quantiles"))
        if lq.ndim != 1 or len(lq) < 2 or lq.shape != rq.shape or np.any(np.diff(lq) < 0) or np.any(np.diff(rq) < 0):
            raise ValueError("reference quantiles must be two sorted lists of the same length")
        if not (np.isfinite(lq).all() and np.isfinite(rq).all()):
            raise ValueError("reference quantiles must be finite")
        n = d["n_images"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError("the reference's number of images must be a positive whole number")
        return cls(lq, rq, n, str(d.get("split", "test")))


@torch.no_grad()
def model_log_prob(model: ARModel, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """(N,) log p(x) in nats, batched, in float64 on the CPU side."""
    x = np.asarray(x).reshape(len(x), -1)
    out = [model.log_prob(torch.as_tensor(x[i : i + batch_size], dtype=torch.float32)).double().cpu().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def compute_reference(model: ARModel, x: np.ndarray, background: BackgroundModel, split: str = "test",
                      batch_size: int = 500, progress: Callable[[int, int], None] | None = None,
                      log_probs: np.ndarray | None = None) -> Reference:
    """The quantiles of log p and of the likelihood ratio over the images ``x`` (the test split).
    ``log_probs``: log p of ``x`` under ``model`` already measured (e.g. cached by
    :func:`engine.reference.split_log_probs_steps`), so the model is not run again."""
    x = np.asarray(x).reshape(len(x), -1)
    if log_probs is not None:
        lp = np.asarray(log_probs, dtype=np.float64).reshape(-1)
        if len(lp) != len(x):
            raise ValueError(f"{len(lp)} log-likelihoods were given for {len(x)} reference images")
        lp = _finite(lp, "log p(x) of a reference image")
    else:
        lps = []
        for i in range(0, len(x), batch_size):
            lps.append(model_log_prob(model, x[i : i + batch_size], batch_size))
            if progress is not None:
                progress(min(i + batch_size, len(x)), len(x))
        lp = _finite(np.concatenate(lps) if lps else np.zeros(0), "log p(x) of a reference image")
    llr = lp - background.log_prob(x)
    p = np.linspace(0.0, 1.0, QUANTILES)
    return Reference(np.quantile(lp, p), np.quantile(llr, p), len(x), split)


@dataclass
class Score:
    log_prob_nats: float
    percentile: float  #: of log p among the reference (test) digits
    background_log_prob_nats: float
    llr_nats: float  #: log p_model(x) - log p_bg(x)
    llr_percentile: float

    @property
    def bits(self) -> float:
        return -self.log_prob_nats / np.log(2.0)

    def to_dict(self) -> dict[str, float]:
        return {"log_prob_nats": self.log_prob_nats, "bits": self.bits, "percentile": self.percentile,
                "background_log_prob_nats": self.background_log_prob_nats, "llr_nats": self.llr_nats,
                "llr_percentile": self.llr_percentile}


def _cache_path(name: str) -> Path:
    from ..data import cache_dir

    return cache_dir() / "scores" / name


def _digest(source: dict[str, Any], content: dict[str, Any]) -> str:
    text = json.dumps({"source": source, "content": content}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _read_json(path: Path, source: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The content of the cache file ``path``, or None (recompute) unless it is intact and was
    computed from ``source``: the file is bounded, depth-limited JSON (:func:`engine.jsonsafe.loads`),
    of this cache version, names the same ``source`` (the model's fingerprint, the data's checksums)
    and carries the sha256 of its source and content. A damaged, altered, foreign or unreadable
    cache costs a recomputation, never a traceback or a wrong figure."""
    from ..jsonsafe import loads

    try:
        if path.stat().st_size > CACHE_MAX_BYTES:
            return None
        d = loads(path.read_bytes(), what=f"cache {path}", max_bytes=CACHE_MAX_BYTES)
    except (OSError, ValueError):  # JSONError is a ValueError
        return None
    if not isinstance(d, dict) or d.get("version") != CACHE_VERSION:
        return None
    content, stored_source = d.get("content"), d.get("source")
    if not isinstance(content, dict) or not isinstance(stored_source, dict) or stored_source != (source or {}):
        return None
    return content if d.get("sha256") == _digest(stored_source, content) else None


def _write_json(path: Path, d: dict[str, Any], source: dict[str, Any] | None = None) -> None:
    """Atomic write of ``d`` with its ``source`` and checksum; an unwritable cache only costs time,
    so errors are ignored."""
    source = dict(source or {})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"version": CACHE_VERSION, "source": source, "sha256": _digest(source, d), "content": d}))
    except OSError:
        pass


def _split_checksums(dataset: str) -> dict[str, str]:
    """The checksums of the files the train and test splits of ``dataset`` come from."""
    if dataset == "binarized-mnist":
        from ..data import CHECKSUMS

        return {"train": CHECKSUMS["train"], "test": CHECKSUMS["test"]}
    from ..mnist import FILES

    return {"train": FILES["train-images"].md5, "test": FILES["test-images"].md5}


def load_background(data_dir: str | os.PathLike | None = None, cache: bool = True, dataset: str = "binarized-mnist",
                    levels: int = 2) -> BackgroundModel:
    """The background model fitted on the training split of ``dataset`` at ``levels`` (cached by
    the split's checksum, the data set and the levels)."""
    from ..datasets import check_dataset, load_dataset

    dataset, levels = check_dataset(dataset, levels)
    train = _split_checksums(dataset)["train"]
    if dataset == "binarized-mnist":  # the cache of every binary model so far, unchanged
        path = _cache_path(f"background-{train[:16]}.json")
        source: dict[str, Any] = {"kind": "background", "train": train}
    else:
        path = _cache_path(f"background-{dataset}-{levels}-{train[:16]}.json")
        source = {"kind": "background", "dataset": dataset, "levels": levels, "train": train}
    d = _read_json(path, source) if cache else None
    if d is not None:
        try:
            bg = BackgroundModel.from_dict(d)
            if bg.levels == levels:
                return bg
        except (KeyError, TypeError, ValueError):
            pass
    bg = BackgroundModel.fit(load_dataset(dataset, "train", data_dir, levels), levels=levels)
    if cache:
        _write_json(path, bg.to_dict(), source)
    return bg


class Scorer:
    """Scores images under one model; hand it a background and a reference, or use :meth:`for_model`."""

    def __init__(self, model: ARModel, background: BackgroundModel, reference: Reference):
        if background.probs.shape[0] != model.size:
            raise ValueError(f"the background model has {background.probs.shape[0]} pixels, the model {model.size}")
        if background.levels != model.levels:
            raise ValueError(f"the background model has {background.levels} pixel levels, the model {model.levels}")
        self.model, self.background, self.reference = model, background, reference

    @staticmethod
    def _reference_cache(model: ARModel, bg: BackgroundModel, dataset: str, levels: int) -> tuple[Path, dict[str, Any]]:
        from ..datasets import DEFAULT_DATASET
        from .compress import model_fingerprint

        sums = _split_checksums(dataset)
        fingerprint = model_fingerprint(model)
        key = f"reference-{fingerprint[:32]}-{sums['test'][:8]}-{sums['train'][:8]}.json"
        source: dict[str, Any] = {"kind": "reference", "model": fingerprint, "test": sums["test"], "train": sums["train"],
                                  "background": _digest({}, bg.to_dict())}
        if dataset != DEFAULT_DATASET:  # what a binary model's cache has always named, plus the data set and levels
            key = f"reference-{fingerprint[:32]}-{dataset}-{levels}-{sums['test'][:8]}-{sums['train'][:8]}.json"
            source.update(dataset=dataset, levels=levels)
        return _cache_path(key), source

    @staticmethod
    def _read_reference(path: Path, source: dict[str, Any]) -> Reference | None:
        d = _read_json(path, source)
        if d is None:
            return None
        try:
            return Reference.from_dict(d)
        except (KeyError, TypeError, ValueError):
            return None

    @staticmethod
    def _data(model: ARModel, dataset: str | None) -> tuple[str, int]:
        """The data set a model is scored against, and its levels: a checkpoint's (by default
        binarized MNIST for a binary model, MNIST for a grey one)."""
        from ..datasets import DEFAULT_DATASET, check_dataset

        return check_dataset(dataset or (DEFAULT_DATASET if model.levels == 2 else "mnist"), model.levels)

    @staticmethod
    def _background(data_dir: str | os.PathLike | None, cache: bool, dataset: str, levels: int) -> BackgroundModel:
        from ..datasets import DEFAULT_DATASET

        if dataset == DEFAULT_DATASET:
            return load_background(data_dir, cache)
        return load_background(data_dir, cache, dataset=dataset, levels=levels)

    @classmethod
    def cached(cls, model: ARModel, data_dir: str | os.PathLike | None = None, dataset: str | None = None) -> "Scorer | None":
        """The scorer of :meth:`for_model` when its reference is cached (no pass of the model), else None."""
        dataset, levels = cls._data(model, dataset)
        bg = cls._background(data_dir, True, dataset, levels)
        ref = cls._read_reference(*cls._reference_cache(model, bg, dataset, levels))
        return cls(model, bg, ref) if ref is not None else None

    @classmethod
    def for_model(cls, model: ARModel, data_dir: str | os.PathLike | None = None, cache: bool = True,
                  progress: Callable[[int, int], None] | None = None, dataset: str | None = None,
                  log_probs: np.ndarray | None = None) -> "Scorer":
        """Background fitted on the training split and reference from the whole test split of
        ``dataset`` (a checkpoint's, :func:`engine.datasets.dataset_of`; by default binarized MNIST
        for a binary model, MNIST for a grey one) at the model's levels, cached. ``log_probs``: the
        test split's log p under ``model``, when already measured."""
        from ..datasets import load_dataset

        dataset, levels = cls._data(model, dataset)
        bg = cls._background(data_dir, cache, dataset, levels)
        path, source = cls._reference_cache(model, bg, dataset, levels)
        ref = cls._read_reference(path, source) if cache else None
        if ref is None:
            ref = compute_reference(model, load_dataset(dataset, "test", data_dir, levels), bg, progress=progress,
                                    log_probs=log_probs)
            if cache:
                _write_json(path, ref.to_dict(), source)
        return cls(model, bg, ref)

    def score(self, x: np.ndarray | torch.Tensor) -> list[Score]:
        """One :class:`Score` per image of ``x`` ((N, D), (N, H, W) or one (H, W) image)."""
        a = np.asarray(torch.as_tensor(x).detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        a = a.reshape(-1, self.model.size)
        lp = _finite(model_log_prob(self.model, a), "log p(x)")
        bg = self.background.log_prob(a)
        llr = _finite(lp - bg, "the likelihood ratio")
        pc = percentile_of(lp, self.reference.log_prob_quantiles)
        lpc = percentile_of(llr, self.reference.llr_quantiles)
        return [Score(float(lp[i]), float(pc[i]), float(bg[i]), float(llr[i]), float(lpc[i])) for i in range(len(a))]

    def reference_info(self) -> dict[str, Any]:
        q = self.reference.log_prob_quantiles
        return {"split": self.reference.split, "n_images": self.reference.n_images, "median_log_prob_nats": float(np.median(q)),
                "median_llr_nats": float(np.median(self.reference.llr_quantiles))}


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting half."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    # average ranks over ties (1-based)
    starts = np.r_[0, np.flatnonzero(np.diff(sv)) + 1]
    ends = np.r_[starts[1:], len(sv)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))
