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

The fast sampler carries the recurrent state: O(1) work per pixel instead of a pass over the
whole sequence. :class:`~engine.models.sequence.SequenceEmbedding` and the order-agnostic training
of :class:`~engine.models.sequence.SequenceARModel` are shared with the Transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ModelConfig, Stepper, _take
from .layers import init_bias_at_marginals
from .sequence import SequenceARModel, SequenceEmbedding
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

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.pixel_bias, marginals, zero=[self.out.bias])

    def _step_logits(self, xo: Tensor, perm: Tensor) -> Tensor:
        """(B, D) logits in step order for images ``xo`` (B, D) in step order of ``perm``; (B, D, P)
        with K > 2 levels."""
        h, _ = self.rnn(self.embed.sequence(xo, perm))  # (B, D, hidden)
        return self._read_out(self.out(h), perm)

    def stepper(self, x: Tensor, ordering: Ordering) -> Stepper:
        return _LSTMStepper(self, x.shape[0])


class _LSTMStepper(Stepper):
    """Carries the LSTM state (h, c) from pixel to pixel. Pixels observed without being asked for
    (known pixels) are queued and run through the LSTM as one sequence when the next logits are
    asked for."""

    def __init__(self, m: PixelLSTM, b: int):
        self.m, self.b = m, b
        self.state: tuple[Tensor, Tensor] | None = None  # ((layers, B, hidden), ...)
        self.prev: tuple[int, Tensor] | None = None
        self.queue: list[Tensor] = []  # (B, E) tokens of observed pixels not yet run
        self.pending: tuple[int, Tensor, tuple[Tensor, Tensor]] | None = None

    def logits(self, pixel: int) -> Tensor:
        if self.pending is None or self.pending[0] != pixel:
            tokens = torch.stack([*self.queue, self.m.embed.token(self.b, self.prev, pixel)], 1)  # (B, n, E)
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
            self.queue.append(self.m.embed.token(self.b, self.prev, pixel))
        self.prev, self.pending = (pixel, value.to(self.m.pixel_bias.dtype)), None

    def select(self, index: Tensor) -> None:
        if self.state is not None:
            self.state = (_take(self.state[0], index, 1), _take(self.state[1], index, 1))
        if self.prev is not None:
            self.prev = (self.prev[0], _take(self.prev[1], index))
        self.queue = [_take(q, index) for q in self.queue]
        if self.pending is not None:
            p, logit, (h, c) = self.pending
            self.pending = (p, _take(logit, index), (_take(h, index, 1), _take(c, index, 1)))
