"""Order-agnostic Transformer decoder (sigma-GPT: Pannatier, Courdier, Fleuret 2024, "sigma-GPTs:
A New Approach to Autoregressive Models"; decoder blocks as in Radford et al. 2019).

The image is a sequence in an ordering ``o``. Token ``t`` carries the value and position of the
pixel generated before (``o_{t-1}``; a learned start vector at ``t = 0``) *and the position of the
pixel to predict* (``o_t``); see :class:`~engine.models.sequence.SequenceEmbedding`. Causal
self-attention makes output ``t`` a function of tokens ``<= t`` only, i.e. of the pixels
``o_{<t}``, so it is the logit of ``p(x_{o_t} = 1 | x_{o_<t})``. Because the next position is
given, the network is not tied to one ordering: with ``order_agnostic`` (the default) every
training image gets its own uniformly random ordering and the model accepts any ordering at
inference, including the "known pixels first" orderings that make inpainting exact.

Pre-norm blocks: ``x + attn(ln(x))``, ``x + mlp(ln(x))``, with
:func:`torch.nn.functional.scaled_dot_product_attention`. The fast sampler keeps a key/value
cache per layer, so each new pixel costs one token's work instead of a pass over the sequence.

With K > 2 pixel levels the token carries the level (scaled to [0, 1], with a few fixed features
of it; see :class:`~engine.models.sequence.SequenceEmbedding`) and the output layer gives the
head's P numbers per step, each pixel with its own bias for each of them.

A class-conditional model (``classes``) adds a learned vector of the class to every token
(see :class:`~engine.models.sequence.SequenceARModel`).

Dropout (on the embeddings, the attention weights and both residual branches) draws its masks from
the training run's own generator (``ARModel.train_generator``) when one is lent, so a run with
dropout repeats from its seed, also across a resume within an epoch, whatever other threads do
with the global generator. Attention with dropout is then computed explicitly (the fused kernel
draws from the global generator); without dropout, and in evaluation, it is the fused
:func:`~torch.nn.functional.scaled_dot_product_attention` as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ModelConfig, Stepper, _take, typed
from .layers import class_embedding, class_vectors, init_bias_at_marginals
from .sequence import SequenceARModel, SequenceEmbedding
from .train_orderings import check_orderings


@dataclass
class TransformerConfig(ModelConfig):
    d_model: int = 256  #: C, width of the residual stream
    layers: int = 6
    heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    #: train over several orderings (one per image); any ordering at inference
    order_agnostic: bool = True
    #: orderings drawn in order-agnostic training; "random" stands for a fresh uniform one
    train_orderings: tuple[str, ...] = ("random",)


def dropout(t: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout of ``t`` at rate ``p`` in training: the mask drawn from ``generator`` (a
    training run's own, on its device) when given, else from the global generator as
    :func:`torch.nn.functional.dropout` draws it."""
    if p <= 0.0:
        return t
    if generator is None:
        return F.dropout(t, p, training=True)
    keep = torch.rand(t.shape, generator=generator, device=generator.device) >= p
    return t * keep.to(t.device) / (1.0 - p)


class Block(nn.Module):
    def __init__(self, c: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.mlp = nn.Sequential(nn.Linear(c, mlp_ratio * c), nn.GELU(), nn.Linear(mlp_ratio * c, c), nn.Dropout(dropout))

    @property
    def mlp_out(self) -> nn.Linear:
        """The MLP's output projection, which writes into the residual stream."""
        return cast(nn.Linear, self.mlp[2])

    def _split(self, t: Tensor) -> Tensor:  # (B, T, C) -> (B, nh, T, hd)
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def _mlp(self, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        """The MLP branch with its dropout (rate ``p``) drawn from ``generator``; the ``nn.Dropout``
        in :attr:`mlp` stays for the parameter names but is not called."""
        fc, act, out = self.mlp[0], self.mlp[1], self.mlp[2]
        return dropout(out(act(fc(x))), p, generator)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:  # (B, T, C) -> (B, T, C), causal
        b, n, c = x.shape
        q, k, v = map(self._split, self.qkv(self.ln1(x)).split(c, dim=2))  # (B, nh, T, hd) each
        p = self.dropout if self.training else 0.0
        if p > 0.0:  # explicit, so that the attention's dropout mask comes from the run's generator
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, nh, T, T)
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
            y = dropout(att, p, generator) @ v  # (B, nh, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        x = x + dropout(self.proj(y.transpose(1, 2).reshape(b, n, c)), p, generator)
        return x + self._mlp(self.ln2(x), p, generator)

    def step(self, x: Tensor, cache_k: Tensor, cache_v: Tensor, t: int) -> Tensor:
        """Tokens at positions ``t .. t+n-1``: x (B, n, C); keys/values of positions < t are in the
        caches (B, nh, D, hd), these tokens' are written at ``t .. t+n-1``."""
        b, n, c = x.shape
        q, k, v = map(self._split, self.qkv(self.ln1(x)).split(c, dim=2))  # (B, nh, n, hd) each
        cache_k[:, :, t : t + n] = k
        cache_v[:, :, t : t + n] = v
        keys, vals = cache_k[:, :, : t + n], cache_v[:, :, : t + n]  # (B, nh, t+n, hd)
        if n == 1:
            y = F.scaled_dot_product_attention(q, keys, vals)  # (B, nh, 1, hd)
        else:  # token i sees positions <= t + i
            mask = torch.ones(n, t + n, dtype=torch.bool, device=x.device).tril(diagonal=t)
            y = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)  # (B, nh, n, hd)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, c))
        return x + self._mlp(self.ln2(x), 0.0, None)


class OrderAgnosticTransformer(SequenceARModel):
    family = "transformer"
    config_class = TransformerConfig
    config: TransformerConfig
    description = "Order-agnostic Transformer decoder (sigma-GPT): any ordering, exact inpainting, key/value cache."
    takes_classes = True

    def __init__(self, config: TransformerConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        c = config.d_model
        if c < 1 or config.layers < 1 or config.heads < 1 or c % config.heads or config.mlp_ratio < 1:
            raise ValueError("d_model, layers, heads and mlp_ratio must be positive, and d_model a multiple of heads")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError("dropout must lie in [0, 1)")
        check_orderings(config.train_orderings, config.height, config.width)
        self.any_order = bool(config.order_agnostic)
        self.embed = SequenceEmbedding(config.height, config.width, c, levels=config.levels)
        self.blocks = nn.ModuleList(Block(c, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(c)
        self.head = nn.Linear(c, self.out_params)
        self.pixel_bias = self._new_pixel_bias()
        for name, p in self.named_parameters():
            if p.dim() == 2 and not name.startswith("embed"):
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias") and "ln" not in name:
                nn.init.zeros_(p)
        for blk in typed(self.blocks, Block):  # residual projections scaled by depth (GPT-2)
            nn.init.normal_(blk.proj.weight, 0.0, 0.02 / (2 * config.layers) ** 0.5)
            nn.init.normal_(blk.mlp_out.weight, 0.0, 0.02 / (2 * config.layers) ** 0.5)
        # added to every token (conditional); made after the initialisation above, so it starts at zero
        self.class_emb = class_embedding(config.classes, c)

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.pixel_bias, marginals, zero=[self.head.bias])

    def _step_logits(self, xo: Tensor, perm: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, D) logits in step order for images ``xo`` (B, D) in step order of ``perm``; (B, D, P)
        with K > 2 levels; ``y`` the classes of a conditional model."""
        p = float(self.config.dropout) if self.training else 0.0
        gen = self.train_generator
        h = dropout(self._tokens(xo, perm, y), p, gen)  # (B, D, C)
        for blk in self.blocks:
            h = blk(h, gen)
        return self._read_out(self.head(self.ln_f(h)), perm)  # (B, D) or (B, D, P)

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _KVCacheStepper(self, x, y)

    def _pixel_logit_flips(self, x: Tensor, pixel: int, flips: Tensor, ordering: Ordering) -> Tensor:
        """A flip at step s changes token s + 1 and so, through causal attention, positions
        s + 1 .. t only: keys and values of positions <= s are the unflipped sequence's. The
        unflipped sequence runs once, filling every layer's key/value cache; then each piece of
        flips (sorted by step) runs only the positions after its earliest flip, attending to the
        cached prefix, and the last layer computes only the pinned pixel's position."""
        cfg = self.config
        perm, inv = torch.tensor(ordering.perm, device=x.device), torch.tensor(ordering.inverse, device=x.device)
        t = int(inv[pixel])
        s_of, rank = torch.sort(inv[flips])
        xo = x[:, perm[: t + 1]]  # (1, t+1) values in step order
        tokens = self.embed.sequence(xo, perm[: t + 1])  # (1, t+1, C)
        flipped = self.embed.prev(1 - xo[0, s_of], perm[s_of]) + self.embed.next(perm[s_of + 1])  # (N, C): token s+1 flipped
        blocks = typed(self.blocks, Block)
        shape = (1, cfg.heads, t + 1, cfg.d_model // cfg.heads)
        ks, vs = [x.new_zeros(shape) for _ in blocks], [x.new_zeros(shape) for _ in blocks]
        h = tokens
        for blk, k, v in zip(blocks, ks, vs, strict=True):  # the unflipped sequence: every layer's keys and values
            h = blk.step(h, k, v, 0)
        pieces = []
        for idx in torch.arange(len(s_of), device=x.device).split(64):
            s_piece = s_of[idx]
            lo = int(s_piece[0]) + 1  # the first position that differs from the unflipped sequence
            n = len(idx)
            h = tokens[:, lo:].repeat(n, 1, 1)  # (n, t+1-lo, C)
            h[torch.arange(n, device=x.device), s_piece + 1 - lo] = flipped[idx]
            for i, blk in enumerate(blocks):
                k, v = ks[i].expand(n, -1, -1, -1).clone(), vs[i].expand(n, -1, -1, -1).clone()
                if i < len(blocks) - 1:
                    h = blk.step(h, k, v, lo)
                else:
                    h = _last_position(blk, h, k, v, lo)  # (n, C)
            pieces.append(self.head(self.ln_f(h))[:, 0] + self.pixel_bias[pixel])
        logits = torch.cat(pieces)  # flips in step order
        return torch.empty_like(logits).scatter_(0, rank, logits)


class _KVCacheStepper(Stepper):
    """Keys and values of every layer for the tokens so far; one token of work per generated
    pixel. Pixels observed without being asked for (known pixels) are queued and go through the
    network together, as one causal chunk, when the next logits are asked for. A conditional
    model's class vectors (B, C) go into every token."""

    def __init__(self, m: OrderAgnosticTransformer, x: Tensor, y: Tensor | None = None):
        c = m.config
        self.m, self.b = m, x.shape[0]
        self.cls = class_vectors(m.class_emb, y)
        self.done = 0  # tokens whose keys/values are in the caches
        shape = (self.b, c.heads, c.size, c.d_model // c.heads)  # (B, nh, D, hd)
        self.k = [x.new_zeros(shape) for _ in m.blocks]
        self.v = [x.new_zeros(shape) for _ in m.blocks]
        self.prev: tuple[int, Tensor] | None = None
        self.queue: list[Tensor] = []  # (B, C) tokens of observed pixels not yet run
        self.pending: tuple[int, Tensor] | None = None  # pixel asked for and its logits

    def _token(self, pixel: int) -> Tensor:
        """(B, C) the token that asks for ``pixel`` after the last observed one, with the class."""
        tok = self.m.embed.token(self.b, self.prev, pixel)
        return tok if self.cls is None else tok + self.cls.to(tok.dtype)

    def logits(self, pixel: int) -> Tensor:
        if self.pending is None or self.pending[0] != pixel:
            tokens = torch.stack([*self.queue, self._token(pixel)], 1)  # (B, n, C)
            h = tokens
            for blk, k, v in zip(typed(self.m.blocks, Block), self.k, self.v, strict=True):
                h = blk.step(h, k, v, self.done)
            self.done += len(self.queue)
            self.queue = []
            logit = self.m._read_out(self.m.head(self.m.ln_f(h[:, -1])), pixel)  # (B,), or (B, P)
            self.pending = (pixel, logit)
        return self.pending[1]

    def observe(self, pixel: int, value: Tensor) -> None:
        if self.pending is not None and self.pending[0] == pixel:
            self.done += 1  # its token is already in the caches
        else:
            self.queue.append(self._token(pixel))
        self.prev, self.pending = (pixel, value.to(self.m.pixel_bias.dtype)), None

    def select(self, index: Tensor) -> None:
        self.cls = _take(self.cls, index)
        self.b = int(index.numel())
        self.k = [_take(k, index) for k in self.k]
        self.v = [_take(v, index) for v in self.v]
        if self.prev is not None:
            self.prev = (self.prev[0], _take(self.prev[1], index))
        self.queue = [_take(q, index) for q in self.queue]
        if self.pending is not None:
            self.pending = (self.pending[0], _take(self.pending[1], index))


def _last_position(blk: Block, x: Tensor, cache_k: Tensor, cache_v: Tensor, t: int) -> Tensor:
    """:meth:`Block.step` of tokens at positions ``t .. t+n-1`` (x (B, n, C)) computing the output of
    the last position only, (B, C): the other tokens' keys and values still go into the caches."""
    b, n, c = x.shape
    q, k, v = map(blk._split, blk.qkv(blk.ln1(x)).split(c, dim=2))  # (B, nh, n, hd) each
    cache_k[:, :, t : t + n] = k
    cache_v[:, :, t : t + n] = v
    y = F.scaled_dot_product_attention(q[:, :, -1:], cache_k[:, :, : t + n], cache_v[:, :, : t + n])  # (B, nh, 1, hd)
    out = x[:, -1] + blk.proj(y.transpose(1, 2).reshape(b, c))
    return out + blk.mlp(blk.ln2(out))
