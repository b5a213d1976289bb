"""Continuing a sampling run from any of its steps, and forking it there.

:meth:`engine.models.base.ARModel.sample_steps` generates pixel after pixel in the run's sampling
ordering (for an order-agnostic model inpainting, the known pixels first). Its loop,
:func:`engine.models.base.draw_steps`, is the one the continuations here run too, and its
random-number contract is what makes a run resumable: for every generated pixel it takes exactly one uniform per
image of the batch, ``u = torch.rand(n, generator=generator)``, and sets ``x = [u < p]`` with ``p``
the conditional after temperature. So everything a run depends on after ``k`` generated pixels is

* its images so far and the set of pixels decided by then (given from the start, or drawn), and
* the generator's state after ``k`` draws of ``n`` uniforms (:func:`generator_at` rebuilds it from
  the seed).

:func:`continue_steps` continues from there and, fed the same images and generator state, gives
the very images the uninterrupted run would have given. Continuing *changed* images with the same
uniforms (common random numbers) answers "what would the rest have been, had this pixel come out
differently?": the two continuations differ only where a change moved a probability across its
uniform. That is a fork (:class:`ForkPoint`, :func:`continue_fork`), which the app shows side by
side.

A continuation is an exact inpainting run of the pending pixels: every decided pixel precedes every
pending one in the sampling ordering, so it is conditioned on all of them. A pending pixel whose
value is fixed by hand (``fixed``) keeps it when the ordering reaches it; it cannot influence the
pixels drawn before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Iterator

import numpy as np
import torch
from torch import Tensor

from .models.base import ARModel, SampleStep, draw_steps
from .ordering import Ordering

__all__ = ["generator_at", "continue_steps", "continue_run", "ForkPoint", "continue_fork"]


def generator_at(seed: int, draws: int, batch: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of a run seeded with ``seed`` as it stands after ``draws`` generated pixels of a
    batch of ``batch`` images: the draws are replayed exactly as :meth:`ARModel.sample_steps` made
    them (one ``torch.rand(batch)`` per pixel), so the stream continues where the run left it."""
    if draws < 0 or batch < 1:
        raise ValueError(f"need draws >= 0 and batch >= 1, got draws={draws}, batch={batch}")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    for _ in range(int(draws)):
        torch.rand(int(batch), generator=gen, device=gen.device)
    return gen


@torch.no_grad()
def continue_steps(
    model: ARModel,
    x: np.ndarray | Tensor,
    known: np.ndarray,
    ordering: Ordering,
    *,
    generator: torch.Generator,
    temperature: float = 1.0,
    batch: int | None = None,
    rows: np.ndarray | list[int] | None = None,
    fixed: np.ndarray | None = None,
) -> Iterator[SampleStep]:
    """Generate the pixels of ``x`` not in ``known``, in ``ordering``, yielding after each one.

    ``x`` (B, D): the images at the resume point (values of ``known`` pixels are kept, the others
    are drawn). ``known`` (D,) bool: the pixels decided by then; they must come before every other
    pixel in ``ordering`` for the continuation to equal the run's. ``ordering``: the run's
    *sampling* ordering (:meth:`ARModel.sampling_ordering`), used as it is. ``generator``: in the
    state the run left it (:func:`generator_at`); it is advanced. ``batch``: how many uniforms the
    run drew per pixel (its batch size, default B); ``rows`` (B,): which of them each row of ``x``
    uses (default row b uses uniform b), so several edits of one image of a batch share its random
    numbers. ``fixed`` (B, D) bool: pending pixels whose value in ``x`` is kept when reached.

    Yields :class:`engine.models.base.SampleStep` objects whose ``index`` and ``total`` count the
    pixels of this continuation; ``x`` of a step is shared, copy it to keep it.
    """
    if temperature <= 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    d = model.size
    xt = model._as_batch(x).clone()
    b = xt.shape[0]
    known_np = np.asarray(known, dtype=bool).reshape(-1)
    if known_np.shape[0] != d:
        raise ValueError(f"known mask has {known_np.shape[0]} pixels, expected {d}")
    if ordering.size != d:
        raise ValueError(f"the ordering has {ordering.size} pixels, the model {d}")
    batch = b if batch is None else int(batch)
    rows_t = torch.arange(b) if rows is None else torch.as_tensor(np.asarray(rows, dtype=np.int64)).reshape(-1)
    if rows_t.shape[0] != b or int(rows_t.min()) < 0 or int(rows_t.max()) >= batch:
        raise ValueError(f"rows must give, for each of the {b} images, a row of the run's batch of {batch}")
    fixed_np = np.zeros((b, d), bool) if fixed is None else np.broadcast_to(np.asarray(fixed, dtype=bool), (b, d))
    # pending pixels that will be drawn hold no value yet (later pixels never reach a conditional)
    clear = torch.as_tensor(~known_np[None, :] & ~fixed_np, device=xt.device)
    xt[clear] = 0
    fixed_t = torch.as_tensor(fixed_np.copy(), device=xt.device)
    model.eval()
    stepper = model.stepper(xt, ordering)
    yield from draw_steps(stepper, xt, known_np, ordering, generator, temperature, batch=batch, rows=rows_t, fixed=fixed_t,
                          head=model.dist_head)


def continue_run(model: ARModel, x: np.ndarray | Tensor, known: np.ndarray, ordering: Ordering, **kwargs) -> Tensor:
    """Run :func:`continue_steps` to the end; returns the (B, D) images."""
    out = model._as_batch(x).clone()
    for step in continue_steps(model, x, known, ordering, **kwargs):
        out = step.x
    return out.clone()


@dataclass(frozen=True, eq=False)
class ForkPoint:
    """Where a paused run stood: all that is needed to continue it exactly."""

    prefix: np.ndarray  #: (D,) 0/1: the image of row ``row`` at the pause (pending pixels 0)
    decided: np.ndarray  #: (D,) bool: pixels given from the start or generated so far
    ordering: Ordering  #: the run's sampling ordering
    draws: int  #: pixels the run generated (random draws made)
    batch: int  #: images in the run's batch (uniforms per draw)
    seed: int
    temperature: float
    row: int = 0  #: which image of the batch the fork continues

    @property
    def pending(self) -> int:
        return int((~np.asarray(self.decided, bool)).sum())

    def generator(self) -> torch.Generator:
        """The run's generator as it stood at the pause."""
        return generator_at(self.seed, self.draws, self.batch)


def continue_fork(model: ARModel, point: ForkPoint, edited: np.ndarray,
                  temperature: float | None = None) -> Generator[SampleStep, None, np.ndarray]:
    """Continue ``point.prefix`` (row 0) and ``edited`` (row 1) with the run's own random numbers.

    Row 0 becomes exactly the run's completion of its image ``point.row`` (at the run's temperature).
    Every pixel where ``edited`` differs from the prefix keeps its edited value: a decided one
    conditions the rest, a pending one is fixed when reached. ``temperature`` (default the run's)
    applies to both rows. Yields the steps; returns the final (2, D) images as a numpy array."""
    d = model.size
    prefix = np.asarray(point.prefix, np.float32).reshape(d)
    ed = np.asarray(edited, np.float32).reshape(d)
    fixed = np.stack([np.zeros(d, bool), ed != prefix])
    x = np.stack([prefix, ed])
    steps = continue_steps(model, x, point.decided, point.ordering, generator=point.generator(),
                           temperature=point.temperature if temperature is None else temperature,
                           batch=point.batch, rows=[point.row, point.row], fixed=fixed)
    last = None
    for step in steps:
        last = step.x
        yield step
    if last is None:  # nothing was left to draw
        return x
    return last.detach().cpu().float().numpy().copy()
