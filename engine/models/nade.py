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


_BLOCK = 28


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

    def _pre_activations(self, xo: Tensor) -> Tensor:
        """(B, D, H) hidden pre-activations of every step: ``c`` plus the exclusive prefix sums of
        ``x_s W[s]``. Computed in blocks of k steps: block totals are summed across blocks, and
        within a block a k x k strictly-lower-triangular selector (plus a column for the running
        total) is one batched matrix product -- a few passes over the (B, D, H) tensor instead of
        the many an elementwise cumulative sum needs."""
        b, d = xo.shape
        h = self.config.hidden
        k = min(_BLOCK, d)
        nb = -(-d // k)
        pad = nb * k - d
        xb = F.pad(xo, (0, pad)).view(b, nb, k)  # (B, nb, k)
        wb = F.pad(self.w, (0, 0, 0, pad)).view(nb, k, h)  # (nb, k, H)
        totals = torch.einsum("bnk,nkh->bnh", xb, wb)  # (B, nb, H)
        before = F.pad(totals.cumsum(1)[:, :-1], (0, 0, 1, 0)) + self.c  # (B, nb, H)
        tri = torch.tril(torch.ones(k, k, dtype=xo.dtype, device=xo.device), -1)
        sel = torch.cat([xb[:, :, None, :] * tri, torch.ones(b, nb, k, 1, dtype=xo.dtype, device=xo.device)], -1)  # (B, nb, k, k+1)
        wa = torch.cat([wb.unsqueeze(0).expand(b, nb, k, h), before[:, :, None, :]], 2)  # (B, nb, k+1, H)
        return (sel @ wa).reshape(b, nb * k, h)[:, :d]

    def _logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        xo = x[:, self.perm]  # (B, D)
        hid = torch.sigmoid(self._pre_activations(xo))  # (B, D, H)
        lo = torch.einsum("bdh,dh->bd", hid, self.v) + self.bias  # (B, D) in step order
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
