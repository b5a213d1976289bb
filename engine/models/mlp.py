"""Per-pixel MLP: an independent one-hidden-layer network for every conditional.

``p(x_{o_t} = 1 | x_{o_<t}) = sigmoid(b_t + v_t . relu(c_t + W_t x_{o_<t}))`` where each step ``t``
has its own ``(hidden x D)`` input weights, masked to the steps before ``t``. No weight is shared
between conditionals, so the model has O(D^2 H) parameters (Bengio & Bengio 2000 describe the
shared-weight cousin; this is the unshared baseline). Sampling keeps every conditional's
pre-activation and adds one column per generated pixel.

With K > 2 levels each small network reads the earlier pixels' levels scaled to [0, 1] and ends in
``P`` outputs (K for a softmax, 3 M for a logistic mixture): ``v`` becomes (D, P, H) and the bias
D P values (each step's P together). A binary model keeps its (D, H) and (D,) tensors, so its
checkpoints load unchanged.

Conditioned on a class ``y`` (``classes > 0``), each step's hidden bias becomes ``c_t + e_y[t]``: a
learned (D, H) table per class (``class_emb``, zero at the start). The class enters each pixel's
hidden pre-activation rather than its logits, as ``c`` does in NADE, so a class can change which
hidden units a pixel's network uses, not only a pixel's prior; and it is per step, because the
networks share nothing -- hidden unit j of one pixel has no relation to unit j of another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper, _take
from .heads import scale_levels
from .layers import class_embedding, class_vectors, init_bias_at_marginals


@dataclass
class MLPConfig(ModelConfig):
    hidden: int = 8


class PixelMLP(ARModel):
    family = "mlp"
    config_class = MLPConfig
    config: MLPConfig
    mask: Tensor  # buffer
    description = "An independent small MLP for every pixel's conditional (no weight sharing)."
    takes_classes = True

    def __init__(self, config: MLPConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d, h = config.size, config.hidden
        if h < 1:
            raise ValueError("hidden must be at least 1")
        self.w1 = nn.Parameter(torch.randn(d, h, d) * (1.0 / d) ** 0.5)  # (step, hidden, earlier step)
        self.c = nn.Parameter(torch.zeros(d, h))
        # conditional: per class a (D, H) term on every step's hidden pre-activation (flattened)
        self.class_emb = class_embedding(config.classes, d * h)
        # a binary model's shapes are those its checkpoints hold; P outputs per step otherwise
        out = () if self.binary else (self.out_params,)
        # the bias stays flat (D P values, each step's P together): a bias is a vector, as everywhere
        self.v = nn.Parameter(torch.randn(d, *out, h) * (1.0 / h) ** 0.5)  # (step, [output,] hidden)
        self.bias = nn.Parameter(torch.zeros(d * self.out_params))
        self.register_buffer("mask", torch.tril(torch.ones(d, d), -1)[:, None, :], persistent=False)
        self.register_ordering_buffers()

    def _out_bias(self) -> Tensor:
        """The output bias by step: (D,) binary, else (D, P)."""
        return self.bias if self.binary else self.bias.view(self.size, self.out_params)

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.bias, marginals, perm=self.perm)

    def _hidden_bias(self, y: Tensor | None) -> Tensor:
        """Every step's hidden bias: ``c`` (D, H), or with a class ``c + e_y`` (B, D, H)."""
        e = class_vectors(self.class_emb, y)
        return self.c if e is None else self.c + e.view(len(e), *self.c.shape)

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        d, h = self.config.size, self.config.hidden
        xo = scale_levels(x, self.levels)[:, self.perm]  # (B, D)
        w = (self.w1 * self.mask).reshape(d * h, d)
        pre = (xo @ w.T).reshape(-1, d, h) + self._hidden_bias(y)  # (B, D, H)
        if self.binary:
            lo = (torch.relu(pre) * self.v).sum(-1) + self.bias  # (B, D) in step order
        else:
            lo = torch.einsum("bdh,dph->bdp", torch.relu(pre), self.v) + self._out_bias()  # (B, D, P) in step order
        return lo[:, self.inv]

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _MLPStepper(self, x, y)


class _MLPStepper(Stepper):
    def __init__(self, m: PixelMLP, x: Tensor, y: Tensor | None = None):
        self.m = m
        self.w = m.w1 * m.mask  # (D, H, D)
        self.pre = (m._hidden_bias(y) + 0 * x[:, :1, None]).clone()  # (B, D, H); select carries the class in it
        self.inv = m.ordering.inverse
        self.levels = m.levels
        self.bias = m._out_bias()  # (D,) or (D, P)

    def logits(self, pixel: int) -> Tensor:
        t = self.inv[pixel]
        v = self.m.v[t]  # (H,), or (P, H)
        return torch.relu(self.pre[:, t]) @ (v if v.dim() == 1 else v.T) + self.bias[t]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.pre.addcmul_(scale_levels(value, self.levels)[:, None, None], self.w[None, :, :, self.inv[pixel]])

    def select(self, index: Tensor) -> None:
        self.pre = _take(self.pre, index)
