"""Machinery of the families that read the image as one sequence in an ordering (the LSTM and the
Transformer): the token embedding that tells the network which pixel comes next, and the model base
that runs a network over the image in step order and trains it over many orderings.

A sequence model is order-agnostic when its ``config.order_agnostic`` is set: training then draws one
ordering per image from ``config.train_orderings`` (:mod:`engine.models.train_orderings`).

With K > 2 pixel levels a step outputs the head's P numbers instead of one logit, and a token
carries the level scaled to [0, 1] (see :class:`SequenceEmbedding`). A sequence model sees only
the pixels it has read, so an order-agnostic one tells a pixel not yet drawn (no token) from a
black one (a token of level 0) at any K.

Conditioned on a class (``classes``), a learned vector of the class (``class_emb``, started at zero)
is added to every token, not only to the start token: the LSTM would otherwise have to carry the
class in its state across up to D steps, and the Transformer spend attention on finding it, where
with it in every token each step's input holds it as the gated PixelCNN's layers hold theirs. A
class is no pixel: every output stays a function of the earlier pixels (and the class) only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel
from .heads import Head, scale_levels
from .layers import class_vectors
from .train_orderings import draw_orderings, named_orderings

__all__ = ["SequenceARModel", "SequenceEmbedding", "order_tensors", "step_nll"]


#: the most sine features of a grey level a token carries (see :class:`SequenceEmbedding`)
MAX_LEVEL_FEATURES = 8


class SequenceEmbedding(nn.Module):
    """Token ``t`` = value and position of pixel ``o_{t-1}`` (a learned start vector at t = 0)
    plus the position of pixel ``o_t``, the one to predict. Values enter linearly, so gradients
    with respect to the image flow (the autoregressive checks use them).

    With ``levels`` K > 2 the value is the level scaled to v = x / (K - 1) on [0, 1]; besides the
    line ``v value[1] + (1 - v) value[0]`` between the black and the white vector, a token adds
    ``sum_j sin(pi j v) level[j]`` for j = 1 .. F with F = min(K - 2, 8) learned vectors: fixed
    smooth features of v (zero at black and white), so the embedding of a level is no longer
    confined to one line through the embedding space -- at K <= 10 it is any table of K vectors,
    at K = 256 a smooth curve through them -- while staying linear in the parameters and
    differentiable in x. A binary model (K = 2) has exactly its old parameters and maths."""

    rows: Tensor  # buffers: row and column of every raster index
    cols: Tensor
    freqs: Tensor  # pi j, j = 1 .. F, for K > 2

    def __init__(self, height: int, width: int, dim: int, std: float = 0.02, levels: int = 2):
        super().__init__()
        self.levels = levels
        self.value = nn.Parameter(torch.randn(2, dim) * std)  # rows: value 0, value 1
        self.level: nn.Parameter | None = None
        if levels > 2:
            n = min(levels - 2, MAX_LEVEL_FEATURES)
            self.level = nn.Parameter(torch.randn(n, dim) * std)  # one vector per sine feature
            self.register_buffer("freqs", math.pi * torch.arange(1, n + 1, dtype=torch.float32), persistent=False)
        self.start = nn.Parameter(torch.randn(dim) * std)
        self.prev_row = nn.Parameter(torch.randn(height, dim) * std)
        self.prev_col = nn.Parameter(torch.randn(width, dim) * std)
        self.next_row = nn.Parameter(torch.randn(height, dim) * std)
        self.next_col = nn.Parameter(torch.randn(width, dim) * std)
        rows, cols = np.divmod(np.arange(height * width), width)
        self.register_buffer("rows", torch.as_tensor(rows), persistent=False)
        self.register_buffer("cols", torch.as_tensor(cols), persistent=False)

    def prev(self, v: Tensor, pix: Tensor) -> Tensor:
        """(..., dim): pixel ``pix`` with level ``v`` (shapes broadcast, e.g. (B, T) and (T,))."""
        if self.level is None:  # binary: the sums in their old order, so old checkpoints give the same bits
            v = v[..., None]
            return v * self.value[1] + (1 - v) * self.value[0] + self.prev_row[self.rows[pix]] + self.prev_col[self.cols[pix]]
        v = scale_levels(v, self.levels)[..., None]
        features = torch.sin(v * self.freqs.to(v.dtype))  # (..., F)
        line = v * self.value[1] + (1 - v) * self.value[0] + features @ self.level
        return line + self.prev_row[self.rows[pix]] + self.prev_col[self.cols[pix]]

    def next(self, pix: Tensor) -> Tensor:
        return self.next_row[self.rows[pix]] + self.next_col[self.cols[pix]]

    def sequence(self, xo: Tensor, perm: Tensor) -> Tensor:
        """(B, D, dim) tokens of images ``xo`` (B, D) given in step order of ``perm`` ((D,) or (B, D))."""
        b = xo.shape[0]
        perm = perm.expand(b, -1)
        first = self.start.expand(b, 1, -1)  # (B, 1, dim)
        return torch.cat([first, self.prev(xo[:, :-1], perm[:, :-1])], 1) + self.next(perm)

    def token(self, b: int, prev: tuple[int, Tensor] | None, pixel: int) -> Tensor:
        """(B, dim) token of one step: ``prev`` = (pixel, (B,) values) or None at the start."""
        nxt = self.next(torch.tensor(pixel, device=self.rows.device))
        if prev is None:
            return (self.start + nxt).expand(b, -1)
        p, v = prev
        return self.prev(v, torch.tensor(p, device=self.rows.device)) + nxt


def order_tensors(ordering: Ordering, device: torch.device) -> tuple[Tensor, Tensor]:
    """(perm, inverse) of ``ordering`` as long tensors on ``device``."""
    return (torch.from_numpy(np.array(ordering.perm)).to(device), torch.from_numpy(np.array(ordering.inverse)).to(device))


def step_nll(step_logits: Tensor, xo: Tensor, head: Head | None = None) -> Tensor:
    """Mean NLL (nats per image) of images ``xo`` in step order under ``step_logits``: (B, D)
    logits of a binary model, or (B, D, P) numbers of ``head`` with K > 2 levels."""
    if head is None or step_logits.dim() == 2:
        return F.binary_cross_entropy_with_logits(step_logits, xo, reduction="none").sum(1).mean()
    return -head.log_prob_of(step_logits, xo).sum(1).mean()


class SequenceARModel(ARModel):
    """A model that reads the image as a sequence in step order: subclasses give ``_step_logits``
    (logits in step order for images in step order, (B, T) or (B, T, P) with K > 2 levels);
    order-agnostic training draws one ordering per image from ``config.train_orderings`` with the
    run's generator (the global torch RNG outside a run)."""

    eval_chunk = 16  # 1.4x faster per image than at 400 (one thread, the LSTM and the Transformer)
    #: a learned output bias per pixel: (D,) logits for a binary model, D P numbers (pixel-major) else
    pixel_bias: nn.Parameter
    #: the token embedding, and a conditional model's class vectors added to every token (None if
    #: unconditional): both set by the subclass, the latter with :func:`~engine.models.layers.class_embedding`
    #: (no class-level default: it would hide the registered module from ``nn.Module.__getattr__``)
    embed: SequenceEmbedding
    class_emb: nn.Embedding | None

    def _step_logits(self, xo: Tensor, perm: Tensor, y: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def _tokens(self, xo: Tensor, perm: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, T, dim) tokens of images ``xo`` (B, T) in step order of ``perm`` ((T,) or (B, T)), each
        with its image's class vector added in a conditional model."""
        tokens = self.embed.sequence(xo, perm)
        cls = class_vectors(self.class_emb, y)
        return tokens if cls is None else tokens + cls[:, None].to(tokens.dtype)

    def _new_pixel_bias(self) -> nn.Parameter:
        """The zero :attr:`pixel_bias`: one logit per pixel when binary, the head's P numbers per
        pixel otherwise (a flat vector, a bias as the marginals' start expects it)."""
        return nn.Parameter(torch.zeros(self.size * self.out_params))

    def _read_out(self, out: Tensor, pix: Tensor | int) -> Tensor:
        """The conditional's numbers from the output layer's ``out`` (..., P) at pixels ``pix``:
        (...) logits for a binary model, (..., P) otherwise; the pixel's bias added."""
        if self.binary:
            return out[..., 0] + self.pixel_bias[pix]
        return out + self.pixel_bias.view(self.size, self.out_params)[pix]

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        perm, inv = order_tensors(ordering, x.device)
        return self._step_logits(x[:, perm], perm, y)[:, inv]

    def _pixel_logit(self, x: Tensor, pixel: int, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        # the conditional at step t reads steps 0..t only: run that prefix of the sequence
        perm = order_tensors(ordering, x.device)[0]
        t = int(ordering.inverse[pixel]) + 1
        return self._step_logits(x[:, perm[:t]], perm[:t], y)[:, -1]

    def trained_orderings(self) -> list[Ordering]:
        c = self.config
        return named_orderings(c.train_orderings, c.height, c.width) if self.any_order else []  # type: ignore[attr-defined]

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if not self.any_order:
            return super().training_loss(x, y)
        c = self.config
        perm = draw_orderings(c.train_orderings, x.shape[0], c.height, c.width, x.device, self.train_generator)  # type: ignore[attr-defined]
        xo = x.gather(1, perm)
        return step_nll(self._step_logits(xo, perm, y), xo, None if self.binary else self.dist_head)
