"""NADE: the neural autoregressive distribution estimator (Larochelle & Murray 2011).

All conditionals share one input matrix ``W``: the hidden state of step ``t`` is
``h_t = sigmoid(c + sum_{s<t} W[s] x_{o_s})`` and ``p(x_{o_t} = 1 | x_{o_<t}) = sigmoid(b_t + V[t] . h_t)``.
The pre-activation of step ``t+1`` is that of step ``t`` plus one row of ``W``, so density and
sampling cost O(DH) instead of O(D^2 H): the density pass is an exclusive cumulative sum, and the
sampler carries the running activation from pixel to pixel.

With K > 2 levels a pixel adds its level scaled to [0, 1] times its row of ``W`` to the hidden state
(``x_s / (K - 1)``: the same linear update, so the running activation and the blocked sums are
unchanged), and each step reads ``P`` numbers off the hidden state (K for a softmax, 3 M for a
logistic mixture): ``V`` of shape (D, P, H) and a bias of D P values (each step's P together). A
binary model keeps its (D, H) and (D,) tensors, so its checkpoints load unchanged.

Conditioned on a class ``y`` (``classes > 0``), the running activation starts at ``c + e_y`` instead
of ``c``: a learned H-vector per class (``class_emb``, zero at the start) that every step's hidden
state carries, as if the class were one more input read before the first pixel. The recursion, the
fused path and the sampler are unchanged but for that start, now one per image.
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

_BLOCK = 28
_FUSED_BLOCK = 8


@dataclass
class NADEConfig(ModelConfig):
    hidden: int = 500


class NADE(ARModel):
    family = "nade"
    config_class = NADEConfig
    config: NADEConfig
    description = "Neural autoregressive distribution estimator: tied weights, O(DH) running activation."
    takes_classes = True

    def __init__(self, config: NADEConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d, h = config.size, config.hidden
        if h < 1:
            raise ValueError("hidden must be at least 1")
        self.w = nn.Parameter(torch.randn(d, h) * 0.01)  # row s: what step s adds to the hidden state
        self.c = nn.Parameter(torch.zeros(h))
        self.class_emb = class_embedding(config.classes, h)  # conditional: added to c
        # a binary model's shapes are those its checkpoints hold; P outputs per step otherwise
        out = () if self.binary else (self.out_params,)
        # the bias stays flat (D P values, each step's P together): a bias is a vector, as everywhere
        self.v = nn.Parameter(torch.randn(d, *out, h) * 0.01)  # (step, [output,] hidden)
        self.bias = nn.Parameter(torch.zeros(d * self.out_params))
        self.register_ordering_buffers()

    def _out_bias(self) -> Tensor:
        """The output bias by step: (D,) binary, else (D, P)."""
        return self.bias if self.binary else self.bias.view(self.size, self.out_params)

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.bias, marginals, perm=self.perm)

    def _start(self, y: Tensor | None) -> Tensor:
        """The hidden pre-activation before any pixel: ``c`` (H,), or with a class ``c + e_y`` (B, H)."""
        e = class_vectors(self.class_emb, y)
        return self.c if e is None else self.c + e

    def _pre_activations(self, xo: Tensor, c: Tensor | None = None) -> Tensor:
        """(B, D, H) hidden pre-activations of every step: ``c`` ((H,) or (B, H) per image; the
        model's ``c`` by default) plus the exclusive prefix sums of
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
        c = self.c if c is None else c
        before = F.pad(totals.cumsum(1)[:, :-1], (0, 0, 1, 0)) + (c if c.dim() == 1 else c[:, None])  # (B, nb, H)
        tri = torch.tril(torch.ones(k, k, dtype=xo.dtype, device=xo.device), -1)
        sel = torch.cat([xb[:, :, None, :] * tri, torch.ones(b, nb, k, 1, dtype=xo.dtype, device=xo.device)], -1)  # (B, nb, k, k+1)
        wa = torch.cat([wb.unsqueeze(0).expand(b, nb, k, h), before[:, :, None, :]], 2)  # (B, nb, k+1, H)
        return (sel @ wa).reshape(b, nb * k, h)[:, :d]

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        xo = scale_levels(x, self.levels)[:, self.perm]  # (B, D)
        # the fused path is for the CPU, where the plain one is memory-bound; on a GPU the plain one
        # is a few large kernels instead of ~100 small ones per block loop. Gradients with respect to
        # the pixels (the autoregressive-property checks) need the plain path too.
        c = self._start(y)
        if xo.requires_grad or xo.device.type != "cpu":
            lo = self._logits_plain(xo, c)
        else:
            lo = _FusedLogits.apply(xo, self.w, c, self.v, self._out_bias(), _FUSED_BLOCK)
        return lo[:, self.inv]

    def _logits_plain(self, xo: Tensor, c: Tensor | None = None) -> Tensor:
        """Step-order logits through ordinary autograd; keeps the whole (B, D, H) hidden tensor.
        ``c``: the start of the hidden pre-activation, as in :meth:`_pre_activations`."""
        hid = torch.sigmoid(self._pre_activations(xo, c))  # (B, D, H)
        if self.binary:
            return torch.einsum("bdh,dh->bd", hid, self.v) + self.bias
        return torch.einsum("bdh,dph->bdp", hid, self.v) + self._out_bias()  # (B, D, P)

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _NADEStepper(self, x, y)

    def _pixel_logit_flips(self, x: Tensor, pixel: int, flips: Tensor, ordering: Ordering) -> Tensor:
        """The hidden pre-activation of step t is a sum over the earlier steps, so a flip at step s
        moves it by ``+-W[s]``: one (N, H) product instead of N passes."""
        t = int(self.inv[pixel])
        s = self.inv[flips]  # the flips' steps
        a = self.c + x[0, self.perm[:t]] @ self.w[:t]  # (H,) the unflipped pre-activation of step t
        sign = 1 - 2 * x[0, flips]  # +1 where a 0 becomes 1
        return torch.sigmoid(a + sign[:, None] * self.w[s]) @ self.v[t] + self.bias[t]


class _NADEStepper(Stepper):
    def __init__(self, m: NADE, x: Tensor, y: Tensor | None = None):
        self.m = m
        self.a = (m._start(y) + 0 * x[:, :1]).clone()  # (B, H), the class's start in it (select carries it)
        self.inv = m.ordering.inverse
        self.levels = m.levels
        self.bias = m._out_bias()  # (D,) or (D, P)

    def logits(self, pixel: int) -> Tensor:
        t = self.inv[pixel]
        v = self.m.v[t]  # (H,), or (P, H)
        return torch.sigmoid(self.a) @ (v if v.dim() == 1 else v.T) + self.bias[t]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.a.addcmul_(scale_levels(value, self.levels)[:, None], self.m.w[self.inv[pixel]][None, :])

    def select(self, index: Tensor) -> None:
        self.a = _take(self.a, index)


class _FusedLogits(torch.autograd.Function):
    """Step-order logits of NADE, computed block by block of ``k`` steps in the layout (k, B, H).

    The plain path materialises the (B, D, H) hidden tensor several times over (pre-activation,
    sigmoid, their gradients), which is memory-bound: ~0.8 s per batch of 100 at H = 500 on one CPU
    core. Here each block's tensors stay small enough to live in cache; the forward keeps only the
    running pre-activation at each block start, and the backward recomputes the block's hidden
    units, then sends the gradient of the running sum back to earlier blocks through a carried
    (B, H) total. ~5x faster. Gradients flow to the parameters only (the input is data).

    ``v`` is (D, H) for one logit per step, or (D, P, H) for P head numbers per step (K > 2 levels),
    the logits then (B, D, P); the binary arithmetic is kept as it was, operation for operation.
    ``c`` is (H,), or (B, H) for a start per image (a class-conditional model: ``c + e_y``)."""

    @staticmethod
    def forward(ctx, xo, w, c, v, bias, k):
        b, d = xo.shape
        h = w.shape[1]
        xt = xo.t().contiguous()  # (D, B)
        tri = torch.tril(torch.ones(k, k, dtype=xo.dtype, device=xo.device), -1)
        multi = v.dim() == 3
        out = torch.empty(d, b, *v.shape[1:-1], dtype=xo.dtype, device=xo.device)  # (D, B[, P])
        run = c.expand(b, h).clone()  # pre-activation before the block
        starts = range(0, d, k)
        befores = torch.empty(len(starts), b, h, dtype=xo.dtype, device=xo.device)
        for i, s in enumerate(starts):
            e = min(s + k, d)
            hid = _block_hidden(xt[s:e], tri, w[s:e], run)
            befores[i] = run
            if multi:
                out[s:e] = torch.bmm(hid, v[s:e].transpose(1, 2))  # (n, B, H) @ (n, H, P)
            else:
                out[s:e] = torch.bmm(hid, v[s:e, :, None]).squeeze(2)
            run.addmm_(xt[s:e].t(), w[s:e])
        ctx.k, ctx.per_image = k, c.dim() == 2
        ctx.save_for_backward(xt, w, v, befores)
        return out.transpose(0, 1) + bias

    @staticmethod
    def backward(ctx, g):
        xt, w, v, befores = ctx.saved_tensors
        k = ctx.k
        d, b = xt.shape
        h = w.shape[1]
        multi = v.dim() == 3
        gt = g.transpose(0, 1).contiguous()  # (D, B[, P])
        tri = torch.tril(torch.ones(k, k, dtype=xt.dtype, device=xt.device), -1)
        dw, dv = torch.empty_like(w), torch.empty_like(v)
        later = torch.zeros(b, h, dtype=xt.dtype, device=xt.device)  # d loss / d running sum, from later blocks
        starts = list(range(0, d, k))
        for i in reversed(range(len(starts))):
            s = starts[i]
            e = min(s + k, d)
            n = e - s
            xb, gb = xt[s:e], gt[s:e]  # (n, B), gb (n, B[, P])
            dw[s:e] = xb @ later  # this block's pixels feed every later block's running sum
            hid = _block_hidden(xb, tri, w[s:e], befores[i])
            if multi:
                dv[s:e] = torch.bmm(gb.transpose(1, 2), hid)  # (n, P, B) @ (n, B, H)
                da = hid.mul_(1 - hid).mul_(torch.bmm(gb, v[s:e]))  # (n, B, H), in place
            else:
                dv[s:e] = torch.bmm(gb[:, None, :], hid).squeeze(1)
                da = hid.mul_(1 - hid).mul_(gb[:, :, None] * v[s:e, None, :])  # (n, B, H), in place
            sel = tri[:n, :n, None] * xb[None, :, :]  # (j, i, B): x_i where i < j
            dw[s:e] += sel.permute(1, 0, 2).reshape(n, n * b) @ da.reshape(n * b, h)
            later += da.sum(0)
        return None, dw, later if ctx.per_image else later.sum(0), dv, g.sum(0), None


def _block_hidden(xb: Tensor, tri: Tensor, wb: Tensor, run: Tensor) -> Tensor:
    """Hidden units (n, B, H) of one block of n steps: ``run`` plus the exclusive prefix sums of
    ``x_i W[i]`` inside the block, as one batched product, then the sigmoid (in place)."""
    n, b = xb.shape
    sel = (tri[:n, :n, None] * xb[None, :, :]).transpose(1, 2)  # (j, B, i)
    a = torch.baddbmm(run.expand(n, b, run.shape[1]), sel, wb.expand(n, n, wb.shape[1]))
    return torch.sigmoid_(a)
