"""Functions the app runs on its worker threads (never on the GUI thread).

Each takes the :class:`app.worker.Job` first (to check for cancellation) and returns a value or is
a generator; they only call the engine, so they are as testable as the engine itself. Which
request a result answers is kept on the GUI side (:class:`app.latest.Latest`), not in the value.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from engine.figures import (
    EnsembleFigures,
    PixelFigures,
    ensemble_figures_steps,
    pixel_figures,
    pixel_influence_steps,
    reference_log_probs,
)
from engine.models import build_model
from engine.models.base import ARModel
from engine.ordering import Ordering

__all__ = ["figures_job", "ensemble_job", "load_job", "reference_job", "test_digit_job", "default_model_job", "save_job", "warm_up_job",
           "REFERENCE_IMAGES"]

#: how many test digits the percentile is measured against (the whole static test split) ...
REFERENCE_IMAGES = 10_000
#: ... unless scoring them would take longer than this; then a random subset of at least MIN_REFERENCE
REFERENCE_BUDGET_SECONDS = 60.0
MIN_REFERENCE = 200
PROBE = 50

_split_cache: dict[str, np.ndarray] = {}
_split_lock = threading.Lock()


def split(name: str) -> np.ndarray:
    """A data split, loaded once per process (worker threads share it)."""
    from engine.data import load_split

    with _split_lock:
        if name not in _split_cache:
            _split_cache[name] = load_split(name)
        return _split_cache[name]


def figures_job(job, model: ARModel, image: np.ndarray, ordering: Ordering) -> PixelFigures:
    t0 = time.perf_counter()
    figs = pixel_figures(model, image, ordering)
    figs.extra["seconds"] = time.perf_counter() - t0
    figs.extra["image"] = np.array(image, copy=True)  # the canvas these figures belong to (exports)
    return figs


def influence_job(job, model: ARModel, image: np.ndarray, pixel: int, ordering: Ordering):
    """Yields the fraction of earlier pixels done; returns the :class:`PixelInfluence`."""
    return (yield from pixel_influence_steps(model, image, pixel, ordering))


def ensemble_job(job, model: ARModel, image: np.ndarray, n: int):
    """Yields the fraction of members done; returns the :class:`EnsembleFigures`."""
    figs: EnsembleFigures = yield from ensemble_figures_steps(model, image, n)
    return figs


def load_job(job, path: Path) -> Checkpoint:
    return load_checkpoint(path, device="cpu")


def reference_job(job, model: ARModel, ordering: Ordering, budget_seconds: float = REFERENCE_BUDGET_SECONDS):
    """Yields the fraction done; returns log p of the reference test digits.

    All 10,000 test digits when the model is fast enough to score them within ``budget_seconds``
    (FVSBN, NADE, MADE on a CPU); otherwise a fixed random subset (at least ``MIN_REFERENCE``) so
    the percentile arrives in reasonable time for deep models. The test split is sorted by class,
    so the subset is drawn by a seeded permutation, never the first N."""
    x_all = split("test")
    n_all = min(REFERENCE_IMAGES, len(x_all))
    order = np.random.default_rng(0).permutation(len(x_all))[:n_all]
    job.check()
    probe = x_all[order[:PROBE]]
    t0 = time.perf_counter()
    first = yield from _scaled(reference_log_probs(model, probe, ordering, batch_size=PROBE), 0.0, 0.02)
    per_image = (time.perf_counter() - t0) / len(probe)
    n = n_all if per_image * n_all <= budget_seconds else int(max(MIN_REFERENCE, min(n_all, budget_seconds / per_image)))
    rest = yield from _scaled(reference_log_probs(model, x_all[order[PROBE:n]], ordering, batch_size=250), 0.02, 1.0)
    return np.concatenate([first, rest])


def _scaled(gen, lo: float, hi: float):
    """Re-yield a generator's fractions mapped to [lo, hi]; returns its return value."""
    while True:
        try:
            f = next(gen)
        except StopIteration as stop:
            return stop.value
        yield lo + (hi - lo) * f


def test_digit_job(job, index: int | None, seed: int | None = None) -> tuple[int, np.ndarray]:
    x = split("test")
    if index is None:
        index = int(np.random.default_rng(seed).integers(len(x)))
    return index, x[index].reshape(28, 28).astype(np.uint8)


def default_model_job(job) -> ARModel:
    """An untrained FVSBN whose biases are the training pixel marginals (when the data is there):
    something to explore before any checkpoint is opened or trained."""
    torch.manual_seed(0)
    model = build_model("fvsbn")
    try:
        marg = torch.as_tensor(split("train").mean(0), dtype=torch.float32)
        model.init_output_bias(marg)
    except Exception:  # noqa: BLE001 -- no data: the model stays at p = 0.5
        pass
    model.eval()
    return model


def warm_up_job(job) -> None:
    """One Adam step on a dummy tensor: torch imports a lot of modules (torch._dynamo) on the first
    optimizer step, holding the GIL for up to seconds. Done on the training worker at start-up so
    that pressing Start later does not freeze the window."""
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1e-3)
    p.sum().backward()
    opt.step()


def save_job(job, path: Path, model: ARModel, meta: dict) -> Path:
    return save_checkpoint(path, model, meta)
