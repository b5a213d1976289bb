"""FVSBN: the fully visible sigmoid belief network (Neal 1992; Frey 1998).

Every conditional is a logistic regression on the pixels before it:
``p(x_{o_t} = 1 | x_{o_<t}) = sigmoid(b_t + sum_{s<t} W[t, s] x_{o_s})``. The weights live in step
space, so ``W`` is strictly lower triangular (a registered mask, applied in the forward pass).
Density is one matrix product; sampling keeps the running logits, O(D) per pixel.

With K > 2 levels each conditional is a multinomial logistic regression on the earlier pixels'
levels (scaled to [0, 1]): ``P`` outputs per pixel (K for a softmax, 3 M for a logistic mixture),
``W`` of shape (D P, D) under the same triangular mask repeated for each output.

Conditioned on a class ``y`` (``classes > 0``), every conditional's bias depends on it:
``b_t + e_y[t]``, a learned table of D P numbers per class (``class_bias``, zero at the start). The
logistic regressions on the earlier pixels stay shared by all classes: what a class changes is how
likely each pixel is before any evidence, which is the one place a model with no hidden state can
take it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper, _take
from .heads import scale_levels
from .layers import class_embedding, class_vectors, init_bias_at_marginals


@dataclass
class FVSBNConfig(ModelConfig):
    pass


class FVSBN(ARModel):
    family = "fvsbn"
    config_class = FVSBNConfig
    config: FVSBNConfig
    mask: Tensor  # buffer: strictly lower-triangular (step, earlier step) ones
    description = "Fully visible sigmoid belief network: one logistic regression per pixel."
    takes_classes = True

    def __init__(self, config: FVSBNConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d, k = config.size, self.out_params
        self.weight = nn.Parameter(torch.zeros(d * k, d))  # (step x output, earlier step)
        self.bias = nn.Parameter(torch.zeros(d * k))  # per step and output
        # conditional: a per-class bias on every step's outputs, in the layout of ``bias``
        self.class_bias = class_embedding(config.classes, d * k)
        mask = torch.tril(torch.ones(d, d), -1).repeat_interleave(k, dim=0)  # each step's k rows alike
        self.register_buffer("mask", mask, persistent=False)
        self.register_ordering_buffers()

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.bias, marginals, perm=self.perm)

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        xo = scale_levels(x, self.levels)[:, self.perm]  # (B, D) in step order
        out = F.linear(xo, self.weight * self.mask, self.bias)  # (B, D P)
        e = class_vectors(self.class_bias, y)
        if e is not None:
            out = out + e
        if self.binary:
            return out[:, self.inv]
        return out.view(len(x), self.size, self.out_params)[:, self.inv]  # (B, D, P) raster-indexed

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _FVSBNStepper(self, x, y)


class _FVSBNStepper(Stepper):
    def __init__(self, m: FVSBN, x: Tensor, y: Tensor | None = None):
        self.w = m.weight * m.mask
        e = class_vectors(m.class_bias, y)
        # (B, D P) outputs per step so far; a class's bias is in from the start, and select carries it
        self.acc = (m.bias + 0 * x[:, :1]).clone() if e is None else m.bias + e
        self.inv = m.ordering.inverse
        self.k, self.levels, self.binary = m.out_params, m.levels, m.binary

    def logits(self, pixel: int) -> Tensor:
        t = self.inv[pixel]
        return self.acc[:, t] if self.binary else self.acc[:, t * self.k:(t + 1) * self.k]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.acc.addcmul_(scale_levels(value, self.levels)[:, None], self.w[:, self.inv[pixel]][None, :])

    def select(self, index: Tensor) -> None:
        self.acc = _take(self.acc, index)
