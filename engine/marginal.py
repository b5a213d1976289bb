"""The incremental sampler of a class-conditional model's marginal p(x) = sum_y p(y) p(x | y).

The marginal is itself autoregressive: ``p(x_i | x_<i) = sum_y p(y | x_<i) p(x_i | x_<i, y)``,
with ``p(y | x_<i)`` proportional to ``p(y) p(x_<i | y)`` (:meth:`ARModel._marginal_params`
computes it teacher-forced). :class:`MarginalStepper` gives the same conditionals pixel by pixel:
it runs the family's own stepper on C copies of the batch, one per class, and carries the running
``log p(y) + log p(x_<i | y)`` of every image, so code that drives a :class:`Stepper` (entropy
coding, importance sampling, a continued sampling run) works under the marginal unchanged, with the
one-uniform-per-pixel contract of :func:`engine.models.base.draw_steps` kept (no class is drawn).
It costs C times one class's work.

:func:`stepper_for` is what engine code outside the models calls instead of ``model.stepper``:
the family's stepper given classes (or for an unconditional model), this one for a conditional
model given none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .models.base import ARModel, Stepper
from .ordering import Ordering

__all__ = ["MarginalStepper", "stepper_for"]


def stepper_for(model: ARModel, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
    """The fast stepper of ``model`` on ``x`` (updated in place, as :meth:`ARModel.stepper` takes
    it): of p(x | y) given ``y`` ((B,) long), of p(x) for an unconditional model, and of the
    marginal over classes (:class:`MarginalStepper`) for a conditional model given no ``y``."""
    if model.classes and y is None:
        return MarginalStepper(model, x, ordering)
    if y is not None and not model.classes:
        raise ValueError("this model is not conditioned on a class")
    return model.stepper(x, ordering, y)


class MarginalStepper(Stepper):
    """Conditionals of the marginal over classes of a conditional ``model``, pixel by pixel.

    ``logits(pixel)`` returns the marginal's head numbers in the form :meth:`ARModel.logits` gives
    them for the marginal: a Bernoulli logit (B,) for a binary model, else (B, K) log-probabilities
    of the levels (categorical logits). Every pixel must be asked for before it is observed, as
    :func:`~engine.models.base.draw_steps` does for drawn pixels; a known pixel observed without
    being asked for is asked for here (its probability under each class moves the posterior)."""

    def __init__(self, model: ARModel, x: Tensor, ordering: Ordering):
        if not model.classes:
            raise ValueError("the marginal over classes needs a class-conditional model")
        self.model, self.c, self.b = model, model.classes, x.shape[0]
        ys = torch.arange(self.c, device=x.device).repeat_interleave(self.b)
        self.inner = model.stepper(x.repeat(self.c, 1), ordering, ys)  # row c * B + b: image b under class c
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        #: (C, B) log p(y) + log p(x_<i | y): the unnormalised log posterior before the next pixel
        self.joint = model.class_log_prior.to(x.device, wide)[:, None].repeat(1, self.b)
        self._asked: tuple[int, Tensor] | None = None  # the last pixel asked for and its (C, B, K) level log-probs

    def _levels(self, pixel: int) -> Tensor:
        params = self.inner.logits(pixel)  # (C B,) or (C B, P)
        levels = self.model._level_log_probs(params).to(self.joint.dtype)  # (C B, K)
        self._asked = (pixel, levels.view(self.c, self.b, -1))
        return self._asked[1]

    def logits(self, pixel: int) -> Tensor:
        levels = self._levels(pixel)
        post = torch.log_softmax(self.joint, 0)  # (C, B) log p(y | x_<i)
        mix = torch.logsumexp(post[..., None] + levels, 0)  # (B, K) log p(x_i = v | x_<i)
        if self.model.binary:
            return mix[:, 1] - mix[:, 0]
        return mix

    def observe(self, pixel: int, value: Tensor) -> None:
        levels = self._asked[1] if self._asked is not None and self._asked[0] == pixel else self._levels(pixel)
        v = value.to(levels.device).long().clamp(0, levels.shape[-1] - 1)
        self.joint += levels.gather(-1, v[None, :, None].expand(self.c, -1, 1))[..., 0]
        self._asked = None
        self.inner.observe(pixel, value.repeat(self.c))

    def select(self, index: Tensor) -> None:
        index = index.to(self.joint.device).long()
        rows = (torch.arange(self.c, device=index.device)[:, None] * self.b + index[None, :]).reshape(-1)
        self.inner.select(rows)  # raises NotImplementedError where the family's stepper cannot
        self.joint = self.joint[:, index]
        self.b = int(index.numel())
        self._asked = None
