"""Functions the app runs on its worker threads (never on the GUI thread).

Each takes the :class:`app.worker.Job` first (to check for cancellation) and returns a value or is
a generator; they only call the engine, so they are as testable as the engine itself.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from engine.models import build_model
from engine.models.base import ARModel
from engine.ordering import Ordering
from engine.session import PixelFigures, pixel_figures, reference_log_probs

__all__ = ["figures_job", "load_job", "reference_job", "test_digit_job", "default_model_job", "save_job", "warm_up_job", "REFERENCE_IMAGES"]

#: how many test digits the percentile is measured against (the whole static test split)
REFERENCE_IMAGES = 10_000

_split_cache: dict[str, np.ndarray] = {}
_split_lock = threading.Lock()


def split(name: str) -> np.ndarray:
    """A data split, loaded once per process (worker threads share it)."""
    from engine.data import load_split

    with _split_lock:
        if name not in _split_cache:
            _split_cache[name] = load_split(name)
        return _split_cache[name]


def figures_job(job, model: ARModel, image: np.ndarray, ordering: Ordering, key: tuple) -> tuple[tuple, PixelFigures]:
    t0 = time.perf_counter()
    figs = pixel_figures(model, image, ordering)
    figs.extra["seconds"] = time.perf_counter() - t0
    return key, figs


def load_job(job, path: Path) -> Checkpoint:
    return load_checkpoint(path, device="cpu")


def reference_job(job, model: ARModel, ordering: Ordering, key: tuple):
    """Yields the fraction done; returns (key, log p of the test digits)."""
    x = split("test")[:REFERENCE_IMAGES]
    job.check()
    logp = yield from reference_log_probs(model, x, ordering, batch_size=500)
    return key, logp


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
