"""Output heads: how a family's per-pixel output becomes a distribution over a pixel's K levels.

A pixel holds one of ``levels`` K values ``0 .. K-1`` (K = 2: the binary models; K = 256: grey
MNIST as stored, level = floor(intensity * K / 256)). A family computes, for every pixel, ``params``
numbers from the pixels before it; the head turns them into the conditional:

* ``bernoulli`` (K = 2, 1 number): the logit of ``p(x_i = 1 | x_<i)``, as every binary model has;
* ``categorical`` (K numbers): a K-way softmax, which can take any shape, several modes included
  (PixelRNN's 256-way conditionals);
* ``logistic-mixture`` (3 M numbers): a discretized mixture of M logistics, as in PixelCNN++. Level
  v covers the interval of width ``2 / (K - 1)`` around ``2 v / (K - 1) - 1`` on [-1, 1]; the end
  levels take the tails, so the K probabilities sum to one exactly. Far fewer outputs than a
  softmax at K = 256, and neighbouring levels share probability, as intensities do.

Every head answers the same questions on tensors of shape ``(..., params)``: the log-probabilities
of all K levels, the log-probability of given levels (cheaper than all K for the mixture), the
expected level, and a draw from one uniform per pixel (the sampler's random-number contract, see
:func:`engine.models.base.draw_steps`). Temperature T reshapes any head the same way,
``p_T(v) proportional to p(v) ** (1 / T)``, which for the Bernoulli head is ``sigmoid(logit / T)``.

The network's input is the level scaled to [0, 1] (:func:`scale_levels`), so a binary model sees
0 and 1 exactly as before.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "HEADS",
    "BernoulliHead",
    "CategoricalHead",
    "Head",
    "LogisticMixtureHead",
    "make_head",
    "scale_levels",
]

#: the levels a model may have (2 = binary; the others from grey MNIST)
LEVELS = (2, 4, 8, 16, 256)
#: the smallest log-scale of a mixture component: below it a component is narrower than a level
#: even at K = 256 and only makes training unstable (PixelCNN++ uses the same floor)
MIN_LOG_SCALE = -7.0


def scale_levels(x: Tensor, levels: int) -> Tensor:
    """Levels ``0 .. K-1`` as the network's input in [0, 1] (identity for K = 2)."""
    return x if levels == 2 else x / (levels - 1)


class Head:
    """The distribution over ``levels`` values that ``params`` numbers per pixel describe."""

    kind: ClassVar[str] = ""

    def __init__(self, levels: int):
        if levels < 2:
            raise ValueError(f"a pixel needs at least 2 levels, got {levels}")
        self.levels = levels

    @property
    def params(self) -> int:
        """Numbers per pixel the family outputs."""
        raise NotImplementedError

    def log_probs(self, params: Tensor) -> Tensor:
        """(..., K) normalised log-probabilities of every level from (..., params)."""
        raise NotImplementedError

    def log_prob_of(self, params: Tensor, x: Tensor) -> Tensor:
        """(...) log p(x) of the levels ``x`` (...) under (..., params)."""
        return self.log_probs(params).gather(-1, x.long().unsqueeze(-1)).squeeze(-1)

    def tempered(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        """(..., K) probabilities proportional to ``p ** (1 / temperature)``."""
        lp = self.log_probs(params).float()
        return torch.softmax(lp / temperature, dim=-1)

    def sample(self, params: Tensor, u: Tensor, temperature: float = 1.0) -> Tensor:
        """(...) levels drawn by inverting the CDF at the uniforms ``u`` (...): the level v with
        ``F(v - 1) <= u < F(v)``."""
        cdf = self.tempered(params, temperature).cumsum(-1)[..., :-1]
        return (cdf <= u.unsqueeze(-1).to(cdf)).sum(-1).clamp_max(self.levels - 1)

    def mean(self, params: Tensor) -> Tensor:
        """(...) the expected level."""
        p = self.log_probs(params).exp()
        return (p * torch.arange(self.levels, device=p.device, dtype=p.dtype)).sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        """(...) the entropy of the conditional in nats."""
        lp = self.log_probs(params)
        return -(lp.exp() * lp).sum(-1)


class BernoulliHead(Head):
    """One logit per pixel: ``p(x = 1) = sigmoid(logit)`` (K = 2)."""

    kind = "bernoulli"

    def __init__(self, levels: int = 2):
        if levels != 2:
            raise ValueError(f"the bernoulli head is for 2 levels, not {levels}")
        super().__init__(2)

    @property
    def params(self) -> int:
        return 1

    def log_probs(self, params: Tensor) -> Tensor:
        logit = params[..., 0]
        return torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], dim=-1)

    def log_prob_of(self, params: Tensor, x: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params[..., 0], x.to(params.dtype), reduction="none")

    def sample(self, params: Tensor, u: Tensor, temperature: float = 1.0) -> Tensor:
        # the binary models' contract: a 1 where u < p, exactly as the sampler has always drawn
        p = torch.sigmoid(params[..., 0].float() / temperature)
        return (u.to(p) < p).long()

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[..., 0])


class CategoricalHead(Head):
    """A K-way softmax per pixel."""

    kind = "categorical"

    @property
    def params(self) -> int:
        return self.levels

    def log_probs(self, params: Tensor) -> Tensor:
        return torch.log_softmax(params, dim=-1)

    def log_prob_of(self, params: Tensor, x: Tensor) -> Tensor:
        return -F.cross_entropy(params.reshape(-1, self.levels), x.long().reshape(-1), reduction="none").reshape(x.shape)


class LogisticMixtureHead(Head):
    """A discretized mixture of ``components`` logistics: per pixel the mixture logits, the means
    and the log-scales, ``3 * components`` numbers."""

    kind = "logistic-mixture"

    def __init__(self, levels: int, components: int = 5):
        super().__init__(levels)
        if components < 1:
            raise ValueError(f"a mixture needs at least one component, got {components}")
        self.components = components

    @property
    def params(self) -> int:
        return 3 * self.components

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.components
        logit_w, mu, log_s = params[..., :m], params[..., m:2 * m], params[..., 2 * m:]
        return torch.log_softmax(logit_w, dim=-1), mu, log_s.clamp_min(MIN_LOG_SCALE)

    def _log_mass(self, v: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
        """log P(level v) under the logistic components (mu, log_s), all broadcast together.

        Level v covers [c - h, c + h] with c = 2 v / (K - 1) - 1 and h = 1 / (K - 1); level 0 reaches
        down to -infinity and level K - 1 up to +infinity. With a, b the standardised edges, the
        mass sigmoid(b) - sigmoid(a) is computed as ``logsigmoid(b) + logsigmoid(-a) + log(1 -
        exp(a - b))`` (the identity sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^(a-b))),
        which loses no precision in either tail."""
        half = 1.0 / (self.levels - 1)
        centre = 2.0 * v.to(mu.dtype) * half - 1.0
        inv_s = torch.exp(-log_s)
        a, b = (centre - half - mu) * inv_s, (centre + half - mu) * inv_s
        upper, lower = F.logsigmoid(b), F.logsigmoid(-a)  # log P(X < c + h), log P(X > c - h)
        inner = upper + lower + torch.log(-torch.expm1((a - b).clamp_max(-1e-12)))
        return torch.where(v <= 0, upper, torch.where(v >= self.levels - 1, lower, inner))

    def log_probs(self, params: Tensor) -> Tensor:
        """Every level's log-probability at once: the figures after each stroke and every sampled
        pixel compute these (784 x M x K numbers at K = 256), so they share the work of
        :meth:`_log_mass` between neighbouring levels. Level v's upper edge is level v+1's lower
        one, so each of the K - 1 inner edges e takes its two log-sigmoids once (log P(X < e) and
        log P(X > e)), and the width term log(1 - exp(a - b)) depends on the component alone
        (a - b = -2 h / s); log P(X > e) is log P(X < e) - e. A quarter of the transcendental work
        of evaluating each level on its own, with the same tail-safe formula (the subtraction's
        rounding is an absolute error of about |e| ulp in a log-probability)."""
        log_w, mu, log_s = self._split(params)
        k = self.levels
        half = 1.0 / (k - 1)
        inv_s = torch.exp(-log_s)[..., None]  # (..., M, 1)
        edges = (2.0 * torch.arange(k - 1, device=params.device, dtype=mu.dtype) + 1.0) * half - 1.0  # (K-1,)
        e = (edges - mu[..., None]) * inv_s  # (..., M, K-1) standardised inner edges
        below = F.logsigmoid(e)  # log P(X < e_j)
        above = below - e  # log P(X > e_j) = log sigmoid(-e) = log sigmoid(e) - e, exact in exact arithmetic
        width = torch.log(-torch.expm1((-2.0 * half * inv_s).clamp_max(-1e-12)))  # (..., M, 1)
        inner = below[..., 1:] + above[..., :-1] + width  # levels 1 .. K-2
        per = torch.cat([below[..., :1], inner, above[..., -1:]], dim=-1)  # (..., M, K)
        return torch.logsumexp(log_w[..., None] + per, dim=-2)

    def log_prob_of(self, params: Tensor, x: Tensor) -> Tensor:
        log_w, mu, log_s = self._split(params)
        return torch.logsumexp(log_w + self._log_mass(x[..., None], mu, log_s), dim=-1)  # (..., M) -> (...)


#: head name -> class, as ``--head`` and a checkpoint's config name them
HEADS: dict[str, type[Head]] = {h.kind: h for h in (BernoulliHead, CategoricalHead, LogisticMixtureHead)}


def make_head(kind: str, levels: int, components: int = 5) -> Head:
    """The head ``kind`` for ``levels`` levels (``bernoulli`` only for 2)."""
    if levels not in LEVELS:
        raise ValueError(f"levels must be one of {', '.join(map(str, LEVELS))}, got {levels}")
    if kind == "bernoulli" or (levels == 2 and kind in ("", "auto")):
        return BernoulliHead(levels)
    if kind == "categorical":
        return CategoricalHead(levels)
    if kind == "logistic-mixture":
        return LogisticMixtureHead(levels, components)
    raise ValueError(f"unknown head {kind!r}: one of {', '.join(HEADS)}")
