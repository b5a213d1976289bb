"""Every function the app runs on its worker threads (never on the GUI thread), in one place.

Each takes the :class:`app.worker.Job` first (to check for cancellation) and returns a value or is
a generator; they only call the engine, so they are as testable as the engine itself. Which
request a result answers is kept on the GUI side (:class:`app.latest.Latest`), not in the value.
Generators that report progress per pixel or per minibatch send at most a few dozen items a second
(:class:`Throttle`): more would only queue up on the GUI thread.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from engine.catalogue import ModelEntry
from engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from engine.figures import EnsembleFigures, PixelFigures, ensemble_figures_steps, pixel_figures, pixel_influence_steps
from engine.models import build_seeded
from engine.models.base import ARModel
from engine.ordering import Ordering
from engine.recipes import nll_metrics, record_metrics, run_metadata, train_argv
from engine.reference import checkpoint_sha256, split_log_probs_steps
from engine.sampling import ForkPoint, continue_fork
from engine.train import BatchEnd, Finished, TrainConfig, device_name, resolve_device

__all__ = ["figures_job", "ensemble_job", "mix_job", "influence_job", "load_job", "open_job",
           "entries_job", "reference_job", "measure_test_split", "checkpoint_key", "test_digit_job", "default_model_job",
           "save_job", "warm_up_job", "sample_job", "fork_job", "training_job", "scorer_job", "canvas_job", "compare_job",
           "Frame", "Throttle", "FRAME_INTERVAL", "REFERENCE_IMAGES", "CODEC_CACHE"]

#: the shortest time between two frames of an animation (sampling, a fork's continuations)
FRAME_INTERVAL = 1 / 60
#: ... and between two minibatch reports of a training run
BATCH_INTERVAL = 0.05
#: codecs kept per compress panel (one per model and ordering)
CODEC_CACHE = 4

#: how many test digits the percentile is measured against: the whole static test split, always
REFERENCE_IMAGES = 10_000

_split_cache: dict[str, np.ndarray] = {}
_split_lock = threading.Lock()
_sha_cache: dict[tuple, str] = {}  #: (path, size, mtime) -> the checkpoint file's sha256
_sha_lock = threading.Lock()
_measuring: dict[tuple, threading.Lock] = {}  #: (sha256, ordering) -> held while its test digits are measured
_measured: dict[tuple, float] = {}  #: ... and how far that measurement is
_measure_lock = threading.Lock()


def split(name: str) -> np.ndarray:
    """A data split, loaded once per process (worker threads share it)."""
    from engine.data import load_split

    with _split_lock:
        if name not in _split_cache:
            _split_cache[name] = load_split(name)
        return _split_cache[name]


_grey_cache: dict[tuple[str, str, int], np.ndarray] = {}  #: (data set, split, levels) -> images


def dataset_split(dataset: str, name: str, levels: int = 2) -> np.ndarray:
    """A split of ``dataset`` at ``levels`` (:func:`engine.datasets.load_dataset`), loaded once per
    process; the binarized data set is :func:`split`'s."""
    if dataset == "binarized-mnist":
        return split(name)
    from engine.datasets import load_dataset

    key = (dataset, name, int(levels))
    with _split_lock:
        if key not in _grey_cache:
            _grey_cache[key] = load_dataset(dataset, name, levels=levels)
        return _grey_cache[key]


def figures_job(job, model: ARModel, image: np.ndarray, ordering: Ordering, y: int | None = None) -> PixelFigures:
    """The heatmaps' figures of ``image``; for a class-conditional model, from one pass over every
    class, with the class read-out (``figs.classes``) and of class ``y``'s conditionals (None: the marginal)."""
    t0 = time.perf_counter()
    figs = pixel_figures(model, image, ordering, y)
    figs.extra["seconds"] = time.perf_counter() - t0
    figs.extra["image"] = np.array(image, copy=True)  # the canvas these figures belong to (exports)
    return figs


def influence_job(job, model: ARModel, image: np.ndarray, pixel: int, ordering: Ordering, y: int | None = None):
    """Yields the fraction of earlier pixels done; returns the :class:`PixelInfluence` (of the
    conditional given class ``y`` for a class-conditional model; None: the marginal)."""
    return (yield from pixel_influence_steps(model, image, pixel, ordering, y=y))


def ensemble_job(job, model: ARModel, image: np.ndarray, n: int):
    """Yields the fraction of members done; returns the :class:`EnsembleFigures`."""
    figs: EnsembleFigures = yield from ensemble_figures_steps(model, image, n)
    return figs


def load_job(job, path: Path) -> Checkpoint:
    return load_checkpoint(path, device="cpu")


def open_job(job, path: Path, source: str) -> tuple[Checkpoint, ModelEntry]:
    """The checkpoint and its picker entry: both read here, never on the GUI thread (a header can
    be tens of megabytes)."""
    ck = load_checkpoint(path, device="cpu")
    job.check()
    return ck, ModelEntry.from_file(path, source)


def mix_job(job, paths: list[Path], out: Path) -> Path:
    """Write the ensemble (mixture) of the checkpoints at ``paths`` to ``out``; returns ``out``."""
    from engine.ensemble import write_ensemble

    job.check()
    return write_ensemble(paths, out)[0]


def entries_job(job, paths: list[Path], source: str) -> list[ModelEntry]:
    """Picker entries of the readable checkpoints among ``paths`` (the recent files at start-up);
    an unreadable or vanished one is skipped."""
    entries = []
    for p in paths:
        job.check()
        try:
            if p.is_file():
                entries.append(ModelEntry.from_file(p, source))
        except Exception:  # noqa: BLE001 -- a damaged recent file is simply not listed
            continue
    return entries


def reference_job(job, model: ARModel, ordering: Ordering, checkpoint: Path | None = None, dataset: str = "binarized-mnist"):
    """Yields the fraction done; returns log p of every test digit (all 10,000), in the split's order.

    ``checkpoint`` is the file the model was loaded from: its figures are cached on disk, keyed by
    the file's sha256 and the ordering (:func:`engine.reference.split_log_probs_steps`), so they are
    measured once per checkpoint and ordering, here and in the Compress tab alike. ``None`` (an
    untrained or unsaved model) measures without caching. Stops between two batches when cancelled."""
    return (yield from measure_test_split(job, model, ordering, checkpoint, dataset))


def checkpoint_key(path: Path | None) -> str | None:
    """The sha256 of the checkpoint file ``path`` (None: none, or unreadable), hashed once per
    file version (path, size, modification time) and process."""
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    memo = (str(path), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        if memo in _sha_cache:
            return _sha_cache[memo]
    try:
        sha = checkpoint_sha256(path)
    except OSError:
        return None
    with _sha_lock:
        _sha_cache[memo] = sha
    return sha


def measure_test_split(job, model: ARModel, ordering: Ordering, checkpoint: Path | None, dataset: str = "binarized-mnist"):
    """Yields the fraction done; returns log p of the whole test split of ``dataset`` at the model's
    levels (see :func:`reference_job`).

    The read-out and the Compress tab both ask for these figures, on their own workers: the second
    to ask for a checkpoint and ordering being measured waits for the first (showing its progress)
    and then reads the cache, rather than measuring the same 10,000 digits a second time. Should
    the first be cancelled, the second measures them itself."""
    sha = checkpoint_key(checkpoint)
    images = dataset_split(dataset, "test", model.levels)
    job.check()
    if sha is None:
        return (yield from split_log_probs_steps(model, None, ordering, images=images))
    key = (sha, np.asarray(model.resolve_ordering(ordering).perm).tobytes())
    with _measure_lock:
        lock = _measuring.setdefault(key, threading.Lock())
    while not lock.acquire(timeout=0.1):
        job.check()
        yield _measured.get(key, 0.0)
    try:
        steps = split_log_probs_steps(model, sha, ordering, images=images)
        while True:
            try:
                frac = next(steps)
            except StopIteration as stop:
                return stop.value
            _measured[key] = frac
            yield frac
    finally:
        _measured.pop(key, None)
        lock.release()


def test_digit_job(job, index: int | None, seed: int | None = None, dataset: str = "binarized-mnist",
                   levels: int = 2) -> tuple[int, np.ndarray]:
    """Test digit ``index`` (None: a random one) of ``dataset`` at ``levels``: the grey data set's
    digits keep their grey levels for a grey model."""
    x = dataset_split(dataset, "test", levels)
    if index is None:
        index = int(np.random.default_rng(seed).integers(len(x)))
    return index, x[index].reshape(28, 28).astype(np.uint8)


def default_model_job(job) -> ARModel:
    """An untrained FVSBN whose biases are the training pixel marginals (when the data is there):
    something to explore before any checkpoint is opened or trained."""
    model = build_seeded("fvsbn", seed=0)
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


def _close(steps: Iterator[Any]) -> None:
    """Close a generator the engine hands out as an iterator (its ``finally`` blocks run now)."""
    close = getattr(steps, "close", None)
    if close is not None:
        close()


class Throttle:
    """Lets an item through at most once per ``interval`` seconds, or whenever it is forced (the
    last item, a paused or slowed-down run): the one rate limit of every progress report."""

    def __init__(self, interval: float):
        self.interval = interval
        self.last = 0.0

    def due(self, force: bool = False) -> bool:
        now = time.perf_counter()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


# -- sampling and its fork ------------------------------------------------------------------------
@dataclass
class Frame:
    index: int  #: pixels generated so far - 1
    total: int
    step: int
    pixel: int
    prob: float  #: p(x=1) used for the first image's draw; for K > 2 levels E[x] / (K - 1) on [0, 1]
    value: int  #: the level drawn
    x: np.ndarray  #: (n, D) images so far
    order: Ordering
    levels: int = 2  #: K, the model's pixel levels
    y: np.ndarray | None = None  #: (n,) the class each image is drawn from (a class-conditional model)


def sample_job(job, model: ARModel, n: int, known: np.ndarray | None, values: np.ndarray | None, ordering: Ordering,
               temperature: float, seed: int, y: int | np.ndarray | None = None):
    """Worker-side generator: yields :class:`Frame` objects, returns the final (n, D) images. ``y``:
    the class (or one per image) a class-conditional model draws from; None: it draws the classes."""
    gen = torch.Generator().manual_seed(int(seed))
    order = model.sampling_ordering(known, ordering)
    steps = model.sample_steps(n, known=known, values=values, ordering=ordering, temperature=temperature, generator=gen,
                               y=y)
    throttle = Throttle(FRAME_INTERVAL)
    x = None
    try:
        for st in steps:
            x = st.x
            if throttle.due(job.delay > 0 or job.paused or st.index == st.total - 1):
                yield Frame(st.index, st.total, st.step, st.pixel, float(st.prob[0]), int(st.value[0]), st.x.cpu().numpy().copy(), order,
                            model.levels, None if st.y is None else st.y.cpu().numpy().copy())
            else:
                job.check()
    finally:
        _close(steps)
    if x is None:
        return np.broadcast_to(np.asarray(values, np.float32).reshape(1, -1), (n, model.size)).copy()
    return x.cpu().numpy().copy()


def fork_job(job, model: ARModel, fp: ForkPoint, edited: np.ndarray):
    """Worker side: yields (done, total, (2, D) images so far) at most ~60 times a second (every
    pixel when slowed down); returns (images (2, D), log p of each in the run's ordering)."""
    steps = continue_fork(model, fp, edited)
    throttle = Throttle(FRAME_INTERVAL)
    while True:
        try:
            st = next(steps)
        except StopIteration as stop:
            out = stop.value
            break
        if throttle.due(job.delay > 0 or st.index == st.total - 1):
            yield st.index + 1, st.total, st.x.cpu().numpy().copy()
        else:
            job.check()
    with torch.no_grad():
        lp = model.log_prob(torch.as_tensor(out, dtype=torch.float32), fp.ordering).double().cpu().numpy()
    return out, lp


# -- training ------------------------------------------------------------------------------------
def training_job(job, family: str, config: dict, ordering_spec: dict, tc: TrainConfig, out: Path, measure_test: bool = True):
    """Worker-side generator: yields engine events (BatchEnd at most ~20 per second), returns the
    :class:`Finished` event with, for a completed run, ``test_nll`` in its history's last entry."""
    from engine.checkpoint import load_checkpoint
    from engine.datasets import load_dataset, load_labels
    from engine.ordering import Ordering
    from engine.train import evaluate_steps, train

    ordering = Ordering.from_dict(ordering_spec)
    model = build_seeded(family, config, ordering, seed=tc.seed)
    # the data of the model's levels (a grey recipe trains on the grey digits), and the labels of a
    # class-conditional one
    dataset, levels = ("mnist" if model.levels > 2 else "binarized-mnist"), model.levels
    train_x = load_dataset(dataset, "train", levels=levels)
    valid_x = load_dataset(dataset, "valid", levels=levels)
    train_y = load_labels(dataset, "train") if model.classes else None
    valid_y = load_labels(dataset, "valid") if model.classes else None
    job.check()
    argv = train_argv(family, config, ordering.spec, tc, out, dataset=dataset)
    meta = run_metadata(device_name(resolve_device(tc.device)), argv, name=out.stem, dataset=dataset, levels=levels)
    gen = train(model, train_x, valid_x, tc, out=out, meta=meta, train_y=train_y, valid_y=valid_y)
    throttle = Throttle(BATCH_INTERVAL)
    final = None
    try:
        for ev in gen:
            job.check()
            if isinstance(ev, BatchEnd) and not throttle.due(ev.batch == ev.batches):
                continue
            if isinstance(ev, Finished):
                final = ev
            yield ev
    finally:
        _close(gen)
    if final is not None and final.best_path is not None and measure_test and final.reason != "diverged":
        yield "measuring the test NLL"
        ck = load_checkpoint(final.best_path)
        steps = evaluate_steps(ck.model, load_dataset(dataset, "test", levels=levels), target_seconds=0.2)
        while True:  # in ~0.2 s chunks, so that a stop is honoured during the measurement too
            job.check()
            try:
                next(steps)
            except StopIteration as done:
                nll, se = done.value
                break
        job.check()
        record_metrics(final.best_path, nll_metrics("test", nll, se), ck)
    return final


# -- the compress panel and the compare dialog -----------------------------------------------------
def _model_for(model: ARModel, ordering: Ordering) -> ARModel:
    """``model`` itself in its own ordering; an order-agnostic model's copy set to ``ordering``."""
    if ordering == model.ordering:
        return model
    m = copy.deepcopy(model)
    m.set_ordering(ordering)
    return m


def scorer_job(job, model: ARModel, ordering: Ordering, checkpoint: Path | None = None, dataset: str = "binarized-mnist"):
    """Worker side: yields the fraction of the test digits measured; returns the
    :class:`engine.tasks.score.Scorer` of ``model`` in ``ordering``. Its log p of the test split are
    those of the read-out's percentile (:func:`measure_test_split`: cached on disk per checkpoint file and
    ordering, measured once for both); its quantiles are cached as well (``engine.tasks.score``).
    Stops between batches once the job is cancelled."""
    from engine.tasks.score import Scorer

    m = _model_for(model, ordering)
    cached = Scorer.cached(m, dataset=dataset)
    if cached is not None:
        return cached
    logp = yield from measure_test_split(job, model, ordering, checkpoint, dataset)
    job.check()
    return Scorer.for_model(m, log_probs=logp, dataset=dataset)


def canvas_job(job, cache: dict, model: ARModel, ordering: Ordering, image: np.ndarray, scorer, codec_key: tuple):
    """Worker side: (CodeLength, Score or None, seconds) for one (H, W) image. ``cache`` holds the
    float64 codecs per ``codec_key`` (model key, ordering); only this worker's thread touches it."""
    from engine.tasks.compress import Codec

    t0 = time.perf_counter()
    ck = codec_key
    codec = cache.get(ck)
    if codec is None:
        codec = Codec(model, ordering, chunk_size=1)
        while len(cache) >= CODEC_CACHE:
            cache.pop(next(iter(cache)))
        cache[ck] = codec
    job.check()
    cl = codec.code_length(image)
    score = scorer.score(image)[0] if scorer is not None else None
    return cl, score, time.perf_counter() - t0


def compare_job(job, cache: dict, specs: list, intensity: np.ndarray) -> list:
    """Worker side. ``specs``: per column (model object or checkpoint path, ordering or None);
    ``intensity``: the drawing's 0-255 intensities (:attr:`engine.document.Session.intensity`), which
    each column quantises at its own model's levels, as the canvas would be shown to that model (a
    binary model sees "intensity >= 128", a grey one its K levels). Returns per column a
    PixelFigures or an error message. ``cache`` (path -> model) is touched only on this worker's
    thread."""
    from engine.checkpoint import load_checkpoint
    from engine.document import level_of

    out: list = []
    for model, ordering in specs:
        job.check()
        try:
            if not hasattr(model, "logits"):
                path = str(model)
                if path not in cache:
                    cache[path] = load_checkpoint(Path(path), device="cpu").model.eval()
                model = cache[path]
            ok, why = (True, "") if ordering is None else model.supports(ordering)
            out.append(pixel_figures(model, level_of(intensity, model.levels), ordering) if ok else f"not available:<br>{why}")
        except Exception as exc:  # noqa: BLE001 -- one unreadable checkpoint only blanks its column
            out.append(f"error: {exc}")
    return out
