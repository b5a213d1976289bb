"""LSTM over the pixel sequence, in any ordering.

A recurrent network reads the pixels one at a time in the chosen ordering ``o`` (Hochreiter &
Schmidhuber 1997; pixel-sequence models as in Theis & Bethge 2015 and the Row/Diagonal LSTMs of
van den Oord, Kalchbrenner, Kavukcuoglu 2016, here flattened to one sequence). The input of step
``t`` describes both where the sequence has been and where it goes next, in the manner of
sigma-GPT (Pannatier, Courdier, Fleuret 2024):

    token_t = value(x_{o_{t-1}}) + where(o_{t-1}) + next(o_t)         (token_0 = start + next(o_0))

so the output of step ``t`` is the logit of ``p(x_{o_t} = 1 | x_{o_<t})``. Positions are learned
row and column embeddings; a learned per-pixel bias (started at the pixel marginals) is added to
the logit. Because the next position is an input, one network can serve several orderings: with
``order_agnostic`` every training image gets its own ordering, drawn from ``train_orderings``
(by default a fresh uniformly random one), and the model accepts any ordering at inference (so
inpainting puts known pixels first and is exact); otherwise it is trained, and used, in its own
ordering only. Mixing named orderings (raster, snake, Hilbert, ...) into ``train_orderings`` spends
the network's capacity on the orderings people pick, which random orderings alone dilute.

With K > 2 pixel levels the token carries the level (scaled to [0, 1], with a few fixed features
of it; see :class:`~engine.models.sequence.SequenceEmbedding`) and the output layer gives the
head's P numbers per step (K softmax logits, or a logistic mixture's 3 M), each pixel with its own
bias for each of them.

A class-conditional model (``classes``) adds a learned vector of the class to every token
(see :class:`~engine.models.sequence.SequenceARModel`).

The fast sampler carries the recurrent state: O(1) work per pixel instead of a pass over the
whole sequence. :class:`~engine.models.sequence.SequenceEmbedding` and the order-agnostic training
of :class:`~engine.models.sequence.SequenceARModel` are shared with the Transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ModelConfig, Stepper, _take
from .layers import class_embedding, class_vectors, init_bias_at_marginals
from .sequence import SequenceARModel, SequenceEmbedding, order_tensors
from .train_orderings import check_orderings


@dataclass
class LSTMConfig(ModelConfig):
    hidden: int = 256  #: LSTM state size
    layers: int = 2  #: stacked LSTM layers
    embed: int = 64  #: size of the value/position embeddings (the LSTM input)
    #: train over several orderings (one per image) so that any ordering can be used at inference
    order_agnostic: bool = False
    #: orderings drawn in order-agnostic training; "random" stands for a fresh uniform one
    train_orderings: tuple[str, ...] = ("random",)


class PixelLSTM(SequenceARModel):
    family = "lstm"
    config_class = LSTMConfig
    config: LSTMConfig
    description = "LSTM over the pixel sequence; the next pixel's position is an input, so it can be order-agnostic."
    takes_classes = True

    def __init__(self, config: LSTMConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        if config.hidden < 1 or config.layers < 1 or config.embed < 1:
            raise ValueError("hidden, layers and embed must be positive")
        check_orderings(config.train_orderings, config.height, config.width)
        self.any_order = bool(config.order_agnostic)
        self.embed = SequenceEmbedding(config.height, config.width, config.embed, std=0.1, levels=config.levels)
        self.rnn = nn.LSTM(config.embed, config.hidden, config.layers, batch_first=True)
        self.out = nn.Linear(config.hidden, self.out_params)
        self.pixel_bias = self._new_pixel_bias()
        self.class_emb = class_embedding(config.classes, config.embed)  # added to every token (conditional)

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.pixel_bias, marginals, zero=[self.out.bias])

    def _step_logits(self, xo: Tensor, perm: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, D) logits in step order for images ``xo`` (B, D) in step order of ``perm``; (B, D, P)
        with K > 2 levels; ``y`` the classes of a conditional model."""
        h, _ = self.rnn(self._tokens(xo, perm, y))  # (B, D, hidden)
        return self._read_out(self.out(h), perm)

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _LSTMStepper(self, x.shape[0], y)

    def _pixel_logit_flips(self, x: Tensor, pixel: int, flips: Tensor, ordering: Ordering) -> Tensor:
        """A flip at step s changes token s + 1 only, so every flipped sequence shares the state
        after token s with the unflipped one. One batch runs the unflipped sequence in row 0 from
        the earliest flip on; at each step the rows whose flip is the previous pixel join it, with a
        copy of row 0's state and the flipped token, and every row takes one LSTM step. Work: the sum
        over flips of (t - s) steps instead of t each, at no loss of exactness. The steps are the
        LSTM's equations on its own weights, with the first layer's input projection of the
        unflipped tokens computed once for all rows."""
        perm = order_tensors(ordering, x.device)[0]
        t = int(ordering.inverse[pixel])
        inv = torch.from_numpy(np.array(ordering.inverse)).to(x.device)
        s_of, rank = torch.sort(inv[flips])  # flips' steps, earliest first
        s_list = s_of.tolist()
        xo = x[:, perm[: t + 1]]  # (1, t+1) values in step order
        tokens = self.embed.sequence(xo, perm[: t + 1])[0]  # (t+1, E)
        flipped = self.embed.prev(1 - xo[0, s_of], perm[s_of]) + self.embed.next(perm[s_of + 1])  # (N, E): token s+1 flipped
        s0 = s_list[0]
        _, (h0, c0) = self.rnn(tokens[None, : s0 + 1])  # (layers, 1, hidden): the state after tokens 0..s0
        n_layers = self.config.layers
        w_ih = [getattr(self.rnn, f"weight_ih_l{i}") for i in range(n_layers)]
        w_hh = [getattr(self.rnn, f"weight_hh_l{i}").T for i in range(n_layers)]
        b = [getattr(self.rnn, f"bias_ih_l{i}") + getattr(self.rnn, f"bias_hh_l{i}") for i in range(n_layers)]
        base_in = F.linear(tokens, w_ih[0], b[0])  # (t+1, 4 hidden): layer 0's input term of every unflipped token
        flip_in = F.linear(flipped, w_ih[0], b[0])  # (N, 4 hidden)
        hs, cs = list(h0[:, 0, None]), list(c0[:, 0, None])  # per layer (rows, hidden)
        k, n = 0, len(s_list)
        for u in range(s0 + 1, t + 1):
            j = k
            while j < n and s_list[j] == u - 1:
                j += 1
            inp = base_in[u].expand(hs[0].shape[0], -1)
            if j > k:  # rows whose flipped token is this one join, from the unflipped state
                hs = [torch.cat([hl, hl[:1].expand(j - k, -1)]) for hl in hs]
                cs = [torch.cat([cl, cl[:1].expand(j - k, -1)]) for cl in cs]
                inp = torch.cat([inp, flip_in[k:j]])
                k = j
            for i in range(n_layers):
                gates = torch.addmm(inp if i == 0 else F.linear(hs[i - 1], w_ih[i], b[i]), hs[i], w_hh[i])
                gi, gf, gg, go = gates.chunk(4, 1)
                cs[i] = torch.sigmoid(gf) * cs[i] + torch.sigmoid(gi) * torch.tanh(gg)
                hs[i] = torch.sigmoid(go) * torch.tanh(cs[i])
        logits = self.out(hs[-1][1:])[:, 0] + self.pixel_bias[pixel]  # flips in step order
        return torch.empty_like(logits).scatter_(0, rank, logits)


class _LSTMStepper(Stepper):
    """Carries the LSTM state (h, c) from pixel to pixel. Pixels observed without being asked for
    (known pixels) are queued and run through the LSTM as one sequence when the next logits are
    asked for. A conditional model's class vectors (B, E) go into every token."""

    def __init__(self, m: PixelLSTM, b: int, y: Tensor | None = None):
        self.m, self.b = m, b
        self.cls = class_vectors(m.class_emb, y)
        self.state: tuple[Tensor, Tensor] | None = None  # ((layers, B, hidden), ...)
        self.prev: tuple[int, Tensor] | None = None
        self.queue: list[Tensor] = []  # (B, E) tokens of observed pixels not yet run
        self.pending: tuple[int, Tensor, tuple[Tensor, Tensor]] | None = None

    def _token(self, pixel: int) -> Tensor:
        """(B, E) the token that asks for ``pixel`` after the last observed one, with the class."""
        tok = self.m.embed.token(self.b, self.prev, pixel)
        return tok if self.cls is None else tok + self.cls.to(tok.dtype)

    def logits(self, pixel: int) -> Tensor:
        if self.pending is None or self.pending[0] != pixel:
            tokens = torch.stack([*self.queue, self._token(pixel)], 1)  # (B, n, E)
            h, state = self.m.rnn(tokens, self.state)  # (B, n, hidden)
            if self.queue:  # the queued tokens are consumed for good
                self.queue = []
            logit = self.m._read_out(self.m.out(h[:, -1]), pixel)  # (B,), or (B, P)
            self.pending = (pixel, logit, state)
        return self.pending[1]

    def observe(self, pixel: int, value: Tensor) -> None:
        if self.pending is not None and self.pending[0] == pixel:
            self.state = self.pending[2]
        else:
            self.queue.append(self._token(pixel))
        self.prev, self.pending = (pixel, value.to(self.m.pixel_bias.dtype)), None

    def select(self, index: Tensor) -> None:
        self.cls = _take(self.cls, index)
        self.b = int(index.numel())
        if self.state is not None:
            self.state = (_take(self.state[0], index, 1), _take(self.state[1], index, 1))
        if self.prev is not None:
            self.prev = (self.prev[0], _take(self.prev[1], index))
        self.queue = [_take(q, index) for q in self.queue]
        if self.pending is not None:
            p, logit, (h, c) = self.pending
            self.pending = (p, _take(logit, index), (_take(h, index, 1), _take(c, index, 1)))
