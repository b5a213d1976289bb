"""FVSBN: the fully visible sigmoid belief network (Neal 1992; Frey 1998).

Every conditional is a logistic regression on the pixels before it:
``p(x_{o_t} = 1 | x_{o_<t}) = sigmoid(b_t + sum_{s<t} W[t, s] x_{o_s})``. The weights live in step
space, so ``W`` is strictly lower triangular (a registered mask, applied in the forward pass).
Density is one matrix product; sampling keeps the running logits, O(D) per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper, _take
from .layers import init_bias_at_marginals


@dataclass
class FVSBNConfig(ModelConfig):
    pass


class FVSBN(ARModel):
    family = "fvsbn"
    config_class = FVSBNConfig
    config: FVSBNConfig
    mask: Tensor  # buffer: strictly lower-triangular (step, earlier step) ones
    description = "Fully visible sigmoid belief network: one logistic regression per pixel."

    def __init__(self, config: FVSBNConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d = config.size
        self.weight = nn.Parameter(torch.zeros(d, d))  # (step, earlier step)
        self.bias = nn.Parameter(torch.zeros(d))  # per step
        self.register_buffer("mask", torch.tril(torch.ones(d, d), -1), persistent=False)
        self.register_ordering_buffers()

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.bias, marginals, perm=self.perm)

    def _logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        xo = x[:, self.perm]  # (B, D) in step order
        return F.linear(xo, self.weight * self.mask, self.bias)[:, self.inv]

    def stepper(self, x: Tensor, ordering: Ordering) -> Stepper:
        return _FVSBNStepper(self, x)


class _FVSBNStepper(Stepper):
    def __init__(self, m: FVSBN, x: Tensor):
        self.w = m.weight * m.mask
        self.acc = (m.bias + 0 * x[:, :1]).clone()  # (B, D) logits per step so far
        self.inv = m.ordering.inverse

    def logits(self, pixel: int) -> Tensor:
        return self.acc[:, self.inv[pixel]]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.acc.addcmul_(value[:, None], self.w[:, self.inv[pixel]][None, :])

    def select(self, index: Tensor) -> None:
        self.acc = _take(self.acc, index)
