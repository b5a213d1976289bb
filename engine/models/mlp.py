"""Per-pixel MLP: an independent one-hidden-layer network for every conditional.

``p(x_{o_t} = 1 | x_{o_<t}) = sigmoid(b_t + v_t . relu(c_t + W_t x_{o_<t}))`` where each step ``t``
has its own ``(hidden x D)`` input weights, masked to the steps before ``t``. No weight is shared
between conditionals, so the model has O(D^2 H) parameters (Bengio & Bengio 2000 describe the
shared-weight cousin; this is the unshared baseline). Sampling keeps every conditional's
pre-activation and adds one column per generated pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper, _take
from .layers import init_bias_at_marginals


@dataclass
class MLPConfig(ModelConfig):
    hidden: int = 8


class PixelMLP(ARModel):
    family = "mlp"
    config_class = MLPConfig
    config: MLPConfig
    mask: Tensor  # buffer
    description = "An independent small MLP for every pixel's conditional (no weight sharing)."

    def __init__(self, config: MLPConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d, h = config.size, config.hidden
        if h < 1:
            raise ValueError("hidden must be at least 1")
        self.w1 = nn.Parameter(torch.randn(d, h, d) * (1.0 / d) ** 0.5)  # (step, hidden, earlier step)
        self.c = nn.Parameter(torch.zeros(d, h))
        self.v = nn.Parameter(torch.randn(d, h) * (1.0 / h) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("mask", torch.tril(torch.ones(d, d), -1)[:, None, :], persistent=False)
        self.register_ordering_buffers()

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.bias, marginals, perm=self.perm)

    def _logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        d, h = self.config.size, self.config.hidden
        xo = x[:, self.perm]  # (B, D)
        w = (self.w1 * self.mask).reshape(d * h, d)
        pre = (xo @ w.T).reshape(-1, d, h) + self.c  # (B, D, H)
        lo = (torch.relu(pre) * self.v).sum(-1) + self.bias  # (B, D) in step order
        return lo[:, self.inv]

    def stepper(self, x: Tensor, ordering: Ordering) -> Stepper:
        return _MLPStepper(self, x)


class _MLPStepper(Stepper):
    def __init__(self, m: PixelMLP, x: Tensor):
        self.m = m
        self.w = m.w1 * m.mask  # (D, H, D)
        self.pre = (m.c + 0 * x[:, :1, None]).clone()  # (B, D, H)
        self.inv = m.ordering.inverse

    def logits(self, pixel: int) -> Tensor:
        t = self.inv[pixel]
        return torch.relu(self.pre[:, t]) @ self.m.v[t] + self.m.bias[t]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.pre.addcmul_(value[:, None, None], self.w[None, :, :, self.inv[pixel]])

    def select(self, index: Tensor) -> None:
        self.pre = _take(self.pre, index)
