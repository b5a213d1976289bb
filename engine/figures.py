"""What the explorer shows about a drawing, without Qt: the per-pixel figures (conditionals, NLL,
log p, its percentile among test digits, a CSV of them), the influence map of one pixel and the
read-out of an ensemble of orderings or masks.

Figures follow the chain rule ``log p(x) = sum_t log p(x_{o_t} | x_{o_<t})`` of the model's
ordering ``o`` (see :mod:`engine.models.base`): :func:`pixel_figures` returns, per raster pixel,
``p(x_i = 1 | x_<i)`` and the negative log-likelihood ``-log p(x_i | x_<i)`` of the drawn value in
nats, their sum ``log p(x)`` and the bits per pixel ``-log2 p(x) / D``. For a model of K > 2 grey
levels the first is the expected value ``E[x_i | x_<i] / (K - 1)`` on [0, 1] and the figures also
hold every pixel's whole conditional, the (D, K) table of ``log p(x_i = v | x_<i)`` (784 x 256
numbers: one teacher-forced pass computes them anyway), for the inspector's bar chart. The long computations
(reference log p, influence, ensemble) are generators, so a worker thread can stop them between
batches. The log p of the whole test split under a saved checkpoint, cached on disk, is
:func:`engine.reference.split_log_probs_steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .class_figures import ClassFigures, class_pass
from .models.base import ARModel, ClassArg, flip_rows, log_mean_exp
from .models.mixture import Mixture
from .ordering import Ordering

__all__ = [
    "PixelFigures",
    "pixel_figures",
    "conditionals_csv",
    "reference_log_probs",
    "percentile",
    "PixelInfluence",
    "pixel_influence_steps",
    "EnsembleFigures",
    "ensemble_size",
    "ensemble_kind",
    "recorded_ensemble",
    "ensemble_figures_steps",
]

LOG2 = math.log(2.0)


@dataclass
class PixelFigures:
    """What the heatmaps and the status area show for one image."""

    prob: np.ndarray  #: (H, W) p(x_i = 1 | x_<i); with K > 2 levels E[x_i | x_<i] / (K - 1)
    nll: np.ndarray  #: (H, W) -log p(x_i | x_<i) of the drawn value, nats
    log_p: float  #: log p(x), nats
    ordering: Ordering
    extra: dict[str, Any] = field(default_factory=dict)
    #: (D, K) log p(x_i = v | x_<i), raster-indexed, for a model of K > 2 levels (None for a binary one)
    table: np.ndarray | None = None
    #: a class-conditional model's posterior over classes and per-class figures of the same pass
    classes: ClassFigures | None = None
    #: the class whose conditionals these are (a conditional model; None: the marginal over classes)
    given: int | None = None
    #: an ensemble (a mixture): (M, D) each member's weight in every pixel's conditional, p(member |
    #: the pixels before it), and the members' labels ("1 · MADE")
    members: np.ndarray | None = None
    member_labels: list[str] = field(default_factory=list)

    def member_weights(self, pixel: int) -> list[tuple[str, float]]:
        """An ensemble's members with their weights in raster pixel ``pixel``'s conditional; empty
        for a single model."""
        if self.members is None:
            return []
        return [(label, float(w)) for label, w in zip(self.member_labels, self.members[:, pixel], strict=True)]

    @property
    def bits_per_pixel(self) -> float:
        return -self.log_p / (self.prob.size * LOG2)

    @property
    def levels(self) -> int:
        """K, the levels of the model these figures come from (2: binary)."""
        return 2 if self.table is None else int(self.table.shape[1])

    def distribution(self, pixel: int) -> np.ndarray:
        """(K,) float64 p(x_i = v | x_<i) of raster pixel ``pixel`` over the levels v (a binary
        model's two: 1 - p, p)."""
        if self.table is None:
            p = float(self.prob.reshape(-1)[pixel])
            return np.array([1.0 - p, p])
        lp = self.table[pixel].astype(np.float64)
        q = np.exp(lp - lp.max())
        return q / q.sum()

    def mean_level(self, pixel: int) -> float:
        """E[x_i | x_<i] in levels (0 .. K-1)."""
        q = self.distribution(pixel)
        return float(q @ np.arange(len(q)))

    def entropy(self, pixel: int) -> float:
        """H[x_i | x_<i] in nats: how uncertain the model is about the pixel, whatever was drawn."""
        q = self.distribution(pixel)
        nz = q[q > 0]
        return float(-(nz * np.log(nz)).sum())


@torch.no_grad()
def pixel_figures(model: ARModel, image: np.ndarray, ordering: Ordering | None = None, y: int | None = None) -> PixelFigures:
    """Conditionals and per-pixel NLL of ``image`` ((H, W) or (D,) 0/1, or levels 0 .. K-1) in one
    teacher-forced pass. For a class-conditional model the pass runs every class at once
    (:func:`engine.class_figures.class_pass`): the figures are of class ``y``'s conditionals, or of
    the marginal's for None, and ``classes`` holds the posterior over classes and the per-class
    log-probabilities of the same pass."""
    model.eval()
    x = torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(1, -1))
    order = model.resolve_ordering(ordering)
    if model.classes:
        xb = x.to(model.device)
        params, cls = class_pass(model, xb, order, y)
        figs = _figures_of(model, x, params, order)
        figs.classes = cls
        figs.given = y
    elif y is not None:
        raise ValueError("this model is not conditioned on a class")
    else:
        figs = _figures_of(model, x, model.logits(x, order), order)
    if isinstance(model, Mixture):
        figs.members = model.member_posterior(x.to(model.device), order, y)[:, 0].float().cpu().numpy()
        figs.member_labels = [f"{k + 1} · {m.family.upper()}" for k, m in enumerate(model.models)]
    return figs


def _figures_of(model: ARModel, x: torch.Tensor, params: torch.Tensor, order: Ordering) -> PixelFigures:
    """The figures of ``x`` (1, D) from the head numbers ``params`` of its conditionals."""
    c = model.config
    if not model.binary:
        return _level_figures(model, x, params, order)
    logits = params.float().cpu()
    xt = x.to(logits.dtype)
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, xt, reduction="none")
    prob = torch.sigmoid(logits)
    return PixelFigures(
        prob=prob.reshape(c.height, c.width).numpy(),
        nll=nll.reshape(c.height, c.width).numpy(),
        log_p=-float(nll.double().sum()),
        ordering=order,
    )


def _level_figures(model: ARModel, x: torch.Tensor, params: torch.Tensor, order: Ordering) -> PixelFigures:
    """:func:`pixel_figures` of a model of K > 2 levels: the whole (D, K) table from one pass."""
    c = model.config
    k = model.levels
    table = model.dist_head.log_probs(params).double().cpu()[0]  # (D, K)
    values = x[0].long().clamp(0, k - 1)
    nll = -table.gather(1, values[:, None])[:, 0]
    mean = table.exp() @ torch.arange(k, dtype=table.dtype) / (k - 1)
    return PixelFigures(
        prob=mean.float().reshape(c.height, c.width).numpy(),
        nll=nll.float().reshape(c.height, c.width).numpy(),
        log_p=-float(nll.sum()),
        ordering=order,
        table=table.float().numpy(),
    )


def conditionals_csv(figures: PixelFigures, image: np.ndarray, model_label: str = "") -> str:
    """The figures of ``image`` as a CSV table, one row per pixel in the order the chain rule
    visits them: step (1-based), row, col, raster index, the drawn value, p(x_i = 1 | x_<i) (for K > 2
    levels E[x_i | x_<i] in levels, column ``mean_level``), the NLL of the drawn value in nats and
    bits, and the running total of log p. Comment lines (``#``) first say which model and ordering,
    and the total log p(x)."""
    h, w = figures.prob.shape
    values = np.asarray(image).reshape(-1).astype(np.int64)
    prob = figures.prob.reshape(-1).astype(np.float64)
    grey = figures.levels > 2
    if grey:
        prob = prob * (figures.levels - 1)
    nll = figures.nll.reshape(-1).astype(np.float64)
    order = figures.ordering
    lines = []
    if model_label:
        lines.append(f"# model: {model_label}")
    lines.append(f"# ordering: {order.label}")
    lines.append(f"# log p(x) = {figures.log_p:.6f} nats = {figures.log_p / LOG2:.6f} bits; {figures.bits_per_pixel:.6f} bits/pixel")
    if grey:
        lines.append(f"# {figures.levels} levels: mean_level is E[x_i | x_<i] on 0..{figures.levels - 1}")
    lines.append(f"step,row,col,raster_index,value,{'mean_level' if grey else 'p_one'},nll_nats,nll_bits,log_p_so_far_nats")
    total = 0.0
    for t in range(h * w):
        i = int(order.perm[t])
        total -= nll[i]
        r, c = divmod(i, w)
        lines.append(f"{t + 1},{r},{c},{i},{values[i]},{prob[i]:.6g},{nll[i]:.6g},{nll[i] / LOG2:.6g},{total:.6f}")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def reference_log_probs(model: ARModel, images: np.ndarray, ordering: Ordering | None = None, batch_size: int = 1000):
    """Generator over batches of ``images`` yielding the fraction done; returns (N,) log p in nats
    (as the generator's return value) -- so a worker can stop it between batches."""
    model.eval()
    order = model.resolve_ordering(ordering)
    out = []
    n = len(images)
    for i in range(0, n, batch_size):
        xb = torch.as_tensor(np.asarray(images[i : i + batch_size], dtype=np.float32))
        out.append(model.log_prob(xb, order).double().cpu().numpy())
        yield min(1.0, (i + batch_size) / n)
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class PixelInfluence:
    """How each pixel's drawn value moves one pixel's conditional: ``delta[j]`` is
    ``p(x_i = 1 | x_<i)`` as drawn minus the same with pixel ``j`` flipped -- positive where the
    value of ``j`` as drawn makes the model expect more ink at ``i``. NaN at ``i`` and at every
    pixel after it in the ordering: those cannot move it (the autoregressive property)."""

    pixel: int  #: raster index of pixel i
    step: int  #: its 0-based step in the ordering (how many pixels it is conditioned on)
    p: float  #: p(x_i = 1 | x_<i) as drawn
    delta: np.ndarray  #: (H, W)
    ordering: Ordering
    levels: int = 2  #: K: with more than 2, ``p`` and ``delta`` are of E[x_i | x_<i] / (K - 1), a flip inverts

    def strongest(self, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` pixels (raster index, delta) that move it most, largest |delta| first."""
        d = self.delta.reshape(-1)
        idx = np.flatnonzero(np.isfinite(d))
        top = idx[np.argsort(-np.abs(d[idx]), kind="stable")][:n]
        return [(int(j), float(d[j])) for j in top]


@torch.no_grad()
def pixel_influence_steps(model: ARModel, image: np.ndarray, pixel: int, ordering: Ordering | None = None,
                          batch_size: int = 64, fast: bool = True, y: ClassArg = None):
    """Generator yielding the fraction done; returns the :class:`PixelInfluence` of every pixel
    before ``pixel`` in the ordering on its conditional. Exact counterfactuals, not gradients: the
    conditional with each earlier pixel flipped, ``batch_size`` flips at a time in the order of the
    ordering (so a worker can stop it between batches). ``fast`` lets the family share the work the
    flipped images have in common (:meth:`~engine.models.base.ARModel.pixel_logit_flips`: a
    sequence model runs the unflipped prefix once, a convolutional one only the pixel's receptive
    field); ``fast=False`` runs the reference, one teacher-forced pass per flipped image. With K > 2
    levels the figure is the expected intensity ``E[x_i | x_<i] / (K - 1)`` instead of ``p(x_i = 1)``,
    and a flip inverts the earlier pixel's intensity (level v becomes K - 1 - v). A class-conditional
    model's conditional is that of p(x | y) given the class ``y``, else of its marginal over classes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    model.eval()
    c = model.config
    d = c.height * c.width
    if not 0 <= int(pixel) < d:
        raise ValueError(f"pixel must be a raster index in 0..{d - 1}, got {pixel}")
    order = model.resolve_ordering(ordering)
    x = model._as_batch(torch.as_tensor(np.asarray(image, dtype=np.float64).reshape(1, -1)))
    step = int(order.inverse[pixel])
    p = float(_expected(model, model.pixel_logit(x, pixel, order, y=y))[0])
    delta = np.full(d, np.nan)
    before = np.array(order.perm[:step], dtype=np.int64)  # a writable copy (the ordering is frozen)
    for start in range(0, len(before), batch_size):
        js = torch.as_tensor(before[start : start + batch_size])
        if fast:
            logits = model.pixel_logit_flips(x, pixel, js, order, y=y)
        elif model.classes:  # the reference for a class or the marginal: the flipped images, through the public call
            logits = model.pixel_logit(flip_rows(x, js.to(x.device), model.levels), pixel, order, y=y)
        else:
            logits = ARModel._pixel_logit_flips(model, x, int(pixel), js.to(x.device), order)
        delta[js.numpy()] = p - _expected(model, logits).double().cpu().numpy()
        yield min(1.0, (start + len(js)) / len(before))
    return PixelInfluence(int(pixel), step, p, delta.reshape(c.height, c.width), order, model.levels)


def _expected(model: ARModel, params: torch.Tensor) -> torch.Tensor:
    """(N,) what the influence map compares: p(x_i = 1) of (N,) logits, or E[x_i] / (K - 1) of the
    head's (N, P) numbers."""
    if model.binary:
        return torch.sigmoid(params)
    return model.dist_head.mean(params) / (model.levels - 1)


def percentile(value: float, reference: np.ndarray) -> float:
    """Percent of ``reference`` values strictly below ``value`` (ties count half)."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return float("nan")
    below = np.count_nonzero(ref < value)
    ties = np.count_nonzero(ref == value)
    return 100.0 * (below + 0.5 * ties) / ref.size


@dataclass
class EnsembleFigures:
    """log p(x) of one image under an ensemble of orderings (and masks) of an order-agnostic model,
    or of the masks of a connectivity-agnostic one."""

    log_p: float  #: log of the mean probability over the members (log-mean-exp), nats
    members: list[tuple[str, float]]  #: (label, log p) of each member, member 0 first

    @property
    def best(self) -> tuple[str, float]:
        return max(self.members, key=lambda m: m[1])

    @property
    def worst(self) -> tuple[str, float]:
        return min(self.members, key=lambda m: m[1])


def ensemble_size(model: ARModel, meta: dict | None = None) -> int:
    """How many members the app's ensemble read-out uses: the size of the largest ensemble whose
    test NLL the checkpoint records, else a MADE's cycled mask count, else 8; 0 for a model tied to
    one ordering (it has no ensemble) unless it was trained over several connectivity patterns
    (a connectivity-agnostic MADE: an ensemble of its masks in its one ordering)."""
    if not model.any_order and ensemble_kind(model) != "masks":
        return 0
    recorded = recorded_ensemble((meta or {}).get("metrics"))
    if recorded:
        return recorded[0]
    masks = getattr(model.config, "num_masks", 0)
    return int(masks) if isinstance(masks, int) and masks > 1 else 8


def recorded_ensemble(metrics: Any) -> tuple[int, float] | None:
    """(K, test NLL) of the largest ensemble whose test NLL a checkpoint's metrics record
    (``test_nll_ensembleK``, 1 < K <= 1024), or None."""
    best = None
    if isinstance(metrics, dict):
        for key, v in metrics.items():
            k = str(key).removeprefix("test_nll_ensemble")
            if (str(key).startswith("test_nll_ensemble") and k.isdigit() and 1 < int(k) <= 1024
                    and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (best is None or int(k) > best[0])):
                best = (int(k), float(v))
    return best


def ensemble_kind(model: ARModel) -> str:
    """What the members of ``model``'s ensemble differ in: "orderings" (an order-agnostic model,
    whose members may also differ in masks), "masks" (a MADE tied to one ordering but trained over
    several connectivity patterns), or "" (no ensemble)."""
    if model.any_order:
        return "orderings"
    masks = getattr(model.config, "num_masks", 1)
    return "masks" if isinstance(masks, int) and masks != 1 else ""  # 0: a fresh pattern per minibatch


@torch.no_grad()
def ensemble_figures_steps(model: ARModel, image: np.ndarray, n: int):
    """Generator yielding the fraction of members done; returns :class:`EnsembleFigures` of
    ``image`` under members ``0..n-1`` (so a worker can stop it between members)."""
    if n < 1:
        raise ValueError("an ensemble needs at least one member")
    model.eval()
    x = torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(1, -1))
    members, logps = [], []
    multi_mask = getattr(model.config, "num_masks", 1) != 1  # MADE: members differ in connectivity too
    for k in range(n):
        order, conn = model.member(k)
        lp = model.member_log_prob(x, k).double()
        logps.append(lp)
        label = order.label + (f" · mask {conn}" if multi_mask else "")
        members.append((label, float(lp[0])))
        yield (k + 1) / n
    return EnsembleFigures(float(log_mean_exp(torch.stack(logps), 0)[0]), members)
