"""What the explorer shows about a drawing under a class-conditional model, without Qt.

A model of p(x | y) read backwards is a classifier: p(y | x) is proportional to p(y) p(x | y), and
p(x | y) factorises along the ordering, so the posterior from the first ``t`` pixels of the
ordering is exact whatever the later pixels hold (:meth:`engine.models.base.ARModel.class_log_posterior`).
A partial drawing is therefore judged on the prefix of the ordering up to its last drawn pixel
(:func:`drawn_prefix`): the blank paper after it says nothing about the digit yet, and counting it
would make every half-drawn digit look like a thin one.

:func:`class_pass` runs the one batched pass over the C classes a stroke costs and returns what
every panel needs from it: the per-class log-probabilities (the bar chart and the evidence map)
and the head numbers of the conditionals shown in the heatmaps, either the marginal
``p(x_i | x_<i) = sum_y p(y | x_<i) p(x_i | x_<i, y)`` (what :meth:`ARModel.logits` gives without
``y``) or one picked class's, so the heatmaps never need a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .models.base import ARModel
from .ordering import Ordering

__all__ = ["ClassFigures", "class_pass", "drawn_prefix", "prefix_note", "log_odds"]


def drawn_prefix(image: np.ndarray, ordering: Ordering) -> int:
    """How many pixels of ``ordering`` the drawing has reached: the step of its last non-zero pixel
    plus one (0 for a blank canvas)."""
    ink = np.asarray(image).reshape(-1) != 0
    steps = np.flatnonzero(ink[np.asarray(ordering.perm)])
    return int(steps[-1]) + 1 if steps.size else 0


def prefix_note(upto: int, size: int, ordering: Ordering) -> str:
    """The words that say which pixels a posterior is from."""
    if upto >= size:
        return "from the whole canvas"
    if upto == 0:
        return "nothing drawn yet: the training frequencies p(y)"
    return f"from the first {upto} pixels in {ordering.label} order (up to the last one drawn)"


@dataclass
class ClassFigures:
    """The class read-out of one image: the posterior over classes and every class's per-pixel
    log-probabilities, from which the evidence between any two classes is a subtraction."""

    log_post: np.ndarray  #: (C,) log p(y | the first ``upto`` pixels of the ordering)
    log_prior: np.ndarray  #: (C,) log p(y), the training frequencies
    per_pixel: np.ndarray  #: (C, D) log p(x_i | x_<i, y = c), raster-indexed
    upto: int  #: pixels of the ordering the posterior is from
    ordering: Ordering
    shape: tuple[int, int]
    #: the posterior is an ensemble's vote (the mean of its members' posteriors), not Bayes' rule on
    #: the ensemble's own p(x | y), so the evidence map's sum is not its log-odds
    vote: bool = False

    @property
    def classes(self) -> int:
        return int(self.log_post.shape[0])

    @property
    def posterior(self) -> np.ndarray:
        """(C,) p(y | the prefix), summing to 1."""
        p = np.exp(self.log_post.astype(np.float64) - self.log_post.max())
        return p / p.sum()

    def ranked(self) -> list[int]:
        """The classes, most probable first (ties: the smaller class first)."""
        return [int(c) for c in np.argsort(-self.log_post, kind="stable")]

    def top_two(self) -> tuple[int, int]:
        r = self.ranked()
        return r[0], r[1]

    @property
    def note(self) -> str:
        note = prefix_note(self.upto, self.per_pixel.shape[1], self.ordering)
        return f"{note}; the mean of the members' posteriors" if self.vote else note

    def in_prefix(self) -> np.ndarray:
        """(D,) bool: the pixels the posterior is from."""
        mask = np.zeros(self.per_pixel.shape[1], bool)
        mask[np.asarray(self.ordering.perm)[: self.upto]] = True
        return mask

    def evidence(self, a: int, b: int) -> np.ndarray:
        """(H, W) log p(x_i | x_<i, y = a) - log p(x_i | x_<i, y = b) in nats: positive where the
        pixel argues for ``a``. NaN outside the prefix the posterior is from, so the finite values
        sum to the posterior log-odds of a over b less the prior's."""
        d = (self.per_pixel[a].astype(np.float64) - self.per_pixel[b]).astype(np.float32)
        d[~self.in_prefix()] = np.nan
        return d.reshape(self.shape)


@torch.no_grad()
def class_pass(model: ARModel, x: Tensor, ordering: Ordering, y: int | None = None,
               upto: int | None = None) -> tuple[Tensor, ClassFigures]:
    """One batched pass of the one image ``x`` (1, D) under every class of the conditional
    ``model``: (the head numbers of the conditionals to show, (1, D[, P]): class ``y``'s or, for
    ``None``, the marginal's; the :class:`ClassFigures`). ``upto``: pixels of the ordering the
    posterior is from (default: up to the last drawn pixel, :func:`drawn_prefix`)."""
    if not model.classes:
        raise ValueError("this model is not conditioned on a class")
    if len(x) != 1:
        raise ValueError(f"class_pass takes one image, got {len(x)}")
    params = model._per_class_params(x, ordering)  # (C, 1, D[, P])
    lp = model._observed(params, x)  # (C, 1, D): class_log_probs from the same numbers
    if upto is None:
        upto = drawn_prefix(x[0].cpu().numpy(), ordering)
    log_post = model.classifier_log_posterior(x, ordering, upto, per_pixel=lp)[0]
    if y is not None:
        if not 0 <= int(y) < model.classes:
            raise ValueError(f"a class must be in 0..{model.classes - 1}")
        shown = params[int(y)]
    else:  # the marginal, as ARModel._marginal_params forms it, from the pass above
        levels = model._level_log_probs(params).float()  # (C, 1, D, K), float32 as the engine's marginal
        post = model._prefix_log_posterior(lp, ordering).float()  # (C, 1, D)
        mix = torch.logsumexp(post[..., None] + levels, dim=0)  # (1, D, K)
        shown = model._params_of_levels(mix).to(params.dtype)
    c = model.config
    figs = ClassFigures(
        log_post=log_post.double().cpu().numpy(),
        log_prior=model.class_log_prior.double().cpu().numpy(),
        per_pixel=lp[:, 0].float().cpu().numpy(),
        upto=int(upto),
        ordering=ordering,
        shape=(c.height, c.width),
        vote=getattr(c, "classifier", "bayes") == "vote",
    )
    return shown, figs


def log_odds(figs: ClassFigures, a: int, b: int) -> float:
    """log p(a | prefix) - log p(b | prefix) in nats."""
    return float(figs.log_post[a] - figs.log_post[b])

