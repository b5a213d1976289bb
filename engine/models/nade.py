"""NADE: the neural autoregressive distribution estimator (Larochelle & Murray 2011).

All conditionals share one input matrix ``W``: the hidden state of step ``t`` is
``h_t = sigmoid(c + sum_{s<t} W[s] x_{o_s})`` and ``p(x_{o_t} = 1 | x_{o_<t}) = sigmoid(b_t + V[t] . h_t)``.
The pre-activation of step ``t+1`` is that of step ``t`` plus one row of ``W``, so density and
sampling cost O(DH) instead of O(D^2 H): the density pass is an exclusive cumulative sum, and the
sampler carries the running activation from pixel to pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper


@dataclass
class NADEConfig(ModelConfig):
    hidden: int = 500


class NADE(ARModel):
    family = "nade"
    config_class = NADEConfig
    description = "Neural autoregressive distribution estimator: tied weights, O(DH) running activation."

    def __init__(self, config: NADEConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d, h = config.size, config.hidden
        if h < 1:
            raise ValueError("hidden must be at least 1")
        self.w = nn.Parameter(torch.randn(d, h) * 0.01)  # row s: what step s adds to the hidden state
        self.c = nn.Parameter(torch.zeros(h))
        self.v = nn.Parameter(torch.randn(d, h) * 0.01)
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_ordering_buffers()

    def init_output_bias(self, marginals: Tensor) -> None:
        with torch.no_grad():
            self.bias.copy_(torch.logit(marginals.to(self.bias), eps=1e-3)[self.perm])

    def _logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        xo = x[:, self.perm]  # (B, D)
        contrib = xo[:, :, None] * self.w  # (B, D, H)
        pre = F.pad(contrib[:, :-1].cumsum(1), (0, 0, 1, 0)) + self.c  # exclusive prefix sums (B, D, H)
        lo = (torch.sigmoid(pre) * self.v).sum(-1) + self.bias  # (B, D) in step order
        return lo[:, self.inv]

    def stepper(self, x: Tensor, ordering: Ordering) -> Stepper:
        return _NADEStepper(self, x)


class _NADEStepper(Stepper):
    def __init__(self, m: NADE, x: Tensor):
        self.m = m
        self.a = (m.c + 0 * x[:, :1]).clone()  # (B, H)
        self.inv = m.ordering.inverse

    def logits(self, pixel: int) -> Tensor:
        t = self.inv[pixel]
        return torch.sigmoid(self.a) @ self.m.v[t] + self.m.bias[t]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.a.addcmul_(value[:, None], self.m.w[self.inv[pixel]][None, :])
