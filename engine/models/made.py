"""MADE: masked autoencoder for distribution estimation (Germain, Gregor, Murray, Larochelle 2015).

An MLP whose weight matrices are multiplied by binary masks so that output ``i`` depends only on
inputs before ``i`` in the ordering. Every unit gets a *degree*: input pixel ``p`` has the step at
which it is generated, a hidden unit a number drawn in ``[min degree of the layer below, D-2]``;
a hidden unit sees units below of degree ``<=`` its own, an output sees hidden units of degree
strictly below its step. Masks are registered buffers applied inside the forward pass
(``F.linear(h, W * M, b)``); the weights themselves are never overwritten.

Order- and connectivity-agnostic training: with ``num_masks = K > 1`` each minibatch uses one of
K connectivity patterns (hidden degrees), and with ``order_agnostic`` also one of K orderings
(``num_masks = 0``: a fresh pair every minibatch). The orderings are random permutations, or with
``order_set = "scans"`` the 16 line scans (raster, column, snake, column-snake from each corner),
member ``k`` taking the ``k``-th scan after the model's own ordering, or with ``order_set = "rows"``
row scans from the top with a random direction per row (``random-rows``), orderings that share the
coarse top-down structure of raster and differ in which neighbours of a row come first. Such a model accepts any ordering at inference,
and an ensemble over K members averages their *probabilities* (log-mean-exp of joint
log-likelihoods). Sampling keeps the first layer's pre-activation and adds one column per pixel.

With K > 2 levels the inputs are the levels scaled to [0, 1] and every pixel has ``P`` outputs (K for
a softmax, 3 M for a logistic mixture), raster pixel-major (pixel ``i``'s are ``i P .. i P + P - 1``):
the output and direct masks repeat each pixel's row P times, so all of a pixel's numbers see exactly
what its one logit would. An order-agnostic model tells a pixel not yet drawn from a black one as it
does at K = 2: by the connectivity, which follows the ordering (a black pixel before the output
feeds it a zero through a connection; a later pixel has no connection at all), not by the value.

Conditioned on a class ``y`` (``classes > 0``), the first hidden layer's pre-activation gains a
learned vector per class (``class_emb``, zero at the start): every hidden unit may see the class,
which is no pixel, so no mask changes and the autoregressive property holds in every ordering and
connectivity -- one embedding serves all members of an order-agnostic model.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering, make_ordering, scan_orderings
from .base import ARModel, ModelConfig, Stepper, _take, typed
from .heads import scale_levels
from .layers import class_embedding, class_vectors, init_bias_at_marginals


@dataclass
class MADEConfig(ModelConfig):
    hidden: tuple[int, ...] = (500,)
    #: connectivity patterns (and orderings, if order-agnostic) cycled in training; 0 = fresh every minibatch
    num_masks: int = 1
    #: train over many orderings so that any ordering can be used at inference
    order_agnostic: bool = False
    #: orderings of an order-agnostic model: "random" (any permutation) or "scans" (the 16 line
    #: scans of ``scan_orderings``: raster, column, snake, column-snake from each corner) or "rows"
    #: (``random-rows``: rows from the top, each row's direction drawn per member)
    order_set: str = "random"
    #: direct (masked) connections from inputs to outputs
    direct: bool = False
    #: a learned bias per training member (ordering/mask pair) on every hidden layer, so hidden units
    #: can be switched on and off per ordering; needs ``num_masks >= 1`` (a fixed set of members)
    member_bias: bool = False
    #: dropout on the hidden units in training (inverted: evaluation and sampling use every unit)
    dropout: float = 0.0
    seed: int = 0


#: The order sets of an order-agnostic MADE.
ORDER_SETS = ("random", "scans", "rows")


def _mask_cache_budget() -> int:
    """Bytes the masks of other members may hold in memory: a quarter of the machine's memory
    (of 16 GiB where it cannot be read), at least 256 MiB. A 32-member MADE of two 8000-unit layers
    has 10 GB of masks: past the budget the least recently used are rebuilt when needed."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return max(256 << 20, int(total) // 4)


#: see :func:`_mask_cache_budget`; at most 64 members' masks are kept whatever their size
MASK_CACHE_BYTES = _mask_cache_budget()


def _member_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


class MADE(ARModel):
    family = "made"
    config_class = MADEConfig
    config: MADEConfig
    description = "Masked autoencoder (MADE): a masked MLP, optionally order- and connectivity-agnostic."
    takes_classes = True

    def __init__(self, config: MADEConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        d = config.size
        if not config.hidden or any(int(h) < 1 for h in config.hidden):
            raise ValueError("MADE needs at least one hidden layer of at least one unit")
        if config.num_masks < 0:
            raise ValueError("num_masks must be >= 0")
        if config.order_set not in ORDER_SETS:
            raise ValueError(f"order_set must be one of {', '.join(map(repr, ORDER_SETS))}, got {config.order_set!r}")
        self._scans: list[Ordering] | None = None
        self.any_order = bool(config.order_agnostic)
        sizes = [d, *[int(h) for h in config.hidden]]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        p = self.out_params  # outputs per pixel: 1 for a binary model, whose shapes are unchanged
        self.out = nn.Linear(sizes[-1], d * p)
        self.direct = nn.Linear(d, d * p, bias=False) if config.direct else None
        self.class_emb = class_embedding(config.classes, sizes[1])  # conditional: on the first hidden layer
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)
        if not 0.0 <= float(config.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")
        if config.member_bias and config.num_masks < 1:
            raise ValueError("member_bias needs a fixed set of members (num_masks >= 1)")
        self.member_biases = (
            nn.ParameterList(nn.Parameter(torch.zeros(config.num_masks, int(h))) for h in config.hidden)
            if config.member_bias else None
        )
        # the caches are keyed on an ordering's exact content (its permutation's bytes), never on its
        # hash alone: two orderings with one hash must not share masks. The app calls one model from
        # several worker threads, so every read and write of them holds the lock.
        self._mask_cache: OrderedDict[tuple[bytes, int], list[Tensor]] = OrderedDict()
        self._conn_cache: dict[bytes, int] = {}
        self._cache_lock = threading.Lock()
        self._anchor = self.ordering  #: the ordering built in (trained in): member pairs hang on it
        for i, m in enumerate(self._build_masks(self.ordering, 0)):
            self.register_buffer(f"mask{i}", m, persistent=False)

    #: caches rebuilt on demand, which a copy starts without
    _CACHES = ("_mask_cache", "_conn_cache")

    def __deepcopy__(self, memo: dict) -> MADE:
        """A copy without the member caches: another thread (the app's ensemble worker) may be
        filling them while this one copies the model (the range coder takes a float64 copy), and
        copying a dict that changes size underneath fails. The copy has a lock of its own (a lock
        cannot be copied)."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in list(self.__dict__.items()):
            if key == "_cache_lock":
                new.__dict__[key] = threading.Lock()
            else:
                new.__dict__[key] = type(value)() if key in self._CACHES else copy.deepcopy(value, memo)
        return new

    def _ordering_changed(self) -> None:
        for i, m in enumerate(self._build_masks(self.ordering, 0)):
            setattr(self, f"mask{i}", m.to(self.out.weight.device))

    # -- masks -------------------------------------------------------------------------------
    def _degrees(self, k: int) -> list[np.ndarray]:
        d = self.config.size
        rng = np.random.default_rng(_member_seed(self.config.seed, k))
        degs, low = [], 0
        for h in self.config.hidden:
            m = rng.integers(low, max(low, d - 2) + 1, size=int(h))
            degs.append(m)
            low = int(m.min())
        return degs

    def _build_masks(self, ordering: Ordering, k: int) -> list[Tensor]:
        step = ordering.inverse  # degree of each input/output pixel
        degs = self._degrees(k)
        masks = [degs[0][:, None] >= step[None, :]]
        masks += [b[:, None] >= a[None, :] for a, b in zip(degs[:-1], degs[1:], strict=True)]
        p = self.out_params  # each pixel's P output rows share its row of the mask
        masks.append(np.repeat(step[:, None] > degs[-1][None, :], p, axis=0))
        if self.direct is not None:
            masks.append(np.repeat(step[:, None] > step[None, :], p, axis=0))
        return [torch.as_tensor(m, dtype=torch.float32) for m in masks]

    def _masks(self, ordering: Ordering, k: int = 0) -> list[Tensor]:
        if k == 0 and ordering == self.ordering:
            n = len(self.layers) + 1 + (self.direct is not None)
            return [getattr(self, f"mask{i}") for i in range(n)]
        key = (ordering.perm.tobytes(), k)
        device = self.out.weight.device
        cache = self._mask_cache
        with self._cache_lock:
            masks = cache.get(key)
            if masks is not None and masks[0].device == device:
                cache.move_to_end(key)
                return masks
        # built outside the lock, so that other threads' hits do not wait; two threads missing the
        # same key both build it, and the later one's masks (equal) replace the earlier's
        masks = [m.to(device) for m in self._build_masks(ordering, k)]
        with self._cache_lock:
            cache[key] = masks
            cache.move_to_end(key)
            size = sum(m.numel() * m.element_size() for ms in cache.values() for m in ms)
            while len(cache) > 64 or (len(cache) > 1 and size > MASK_CACHE_BYTES):
                _, old = cache.popitem(last=False)  # the least recently used
                size -= sum(m.numel() * m.element_size() for m in old)
        return masks

    def _pair_ordering(self, k: int) -> Ordering:
        """The ordering that training paired with connectivity ``k`` (anchored on the ordering the
        model was built in, so that :meth:`set_ordering` does not re-pair them)."""
        c = self.config
        if k == 0 or not c.order_agnostic:
            return self._anchor
        if c.order_set == "scans":
            if self._scans is None:
                self._scans = scan_orderings(c.height, c.width)
            scans = self._scans
            # the model's own ordering is member 0; the others follow it round the list
            start = next((i for i, o in enumerate(scans) if o == self._anchor), 0)
            return scans[(start + k) % len(scans)]
        name = "random-rows" if c.order_set == "rows" else "random"
        return make_ordering(name, c.height, c.width, seed=_member_seed(c.seed + 1, k))

    def trained_orderings(self) -> list[Ordering]:
        """The orderings an order-agnostic model trained with a fixed set of masks paired with its
        connectivities (the 16 scans of a "scans" model, or its K seeded random ones)."""
        c = self.config
        return [self._pair_ordering(k) for k in range(c.num_masks)] if c.order_agnostic else []

    def member(self, k: int) -> tuple[Ordering, int]:
        """Ordering and connectivity index of ensemble member ``k`` (member 0 is the model's own
        ordering, with the connectivity it was trained with in it)."""
        if k == 0:
            return self.ordering, self.connectivity_for(self.ordering)
        if not self.config.order_agnostic:
            return self.ordering, k
        if k == self.connectivity_for(self.ordering):
            # the model now shows trained member k's ordering, which member 0 already is: member k
            # stands in for the pair that member 0 was before (the anchor's), so none is counted twice
            return self._anchor, 0
        return self._pair_ordering(k), k

    def connectivity_for(self, ordering: Ordering) -> int:
        """The connectivity pattern to use in ``ordering``: that of the first trained member with this
        ordering (an order-agnostic model learned each of its orderings with one pattern; another
        pattern in the same ordering was never trained), else pattern 0."""
        c = self.config
        if not c.order_agnostic or c.num_masks <= 1 or ordering == self._anchor:
            return 0
        key = ordering.perm.tobytes()
        with self._cache_lock:
            hit = self._conn_cache.get(key)
        if hit is None:
            hit = next((k for k in range(1, c.num_masks) if self._pair_ordering(k) == ordering), 0)
            with self._cache_lock:
                if len(self._conn_cache) > 256:
                    self._conn_cache.clear()
                self._conn_cache[key] = hit
        return hit

    # -- density -------------------------------------------------------------------------------
    def _hidden_biases(self, k: int) -> list[Tensor]:
        """The hidden layers' biases for member ``k`` (with its own bias when ``member_bias``)."""
        if self.member_biases is None:
            return [layer.bias for layer in typed(self.layers, nn.Linear)]
        k = k if 0 <= k < self.config.num_masks else 0
        return [layer.bias + mb[k] for layer, mb in zip(typed(self.layers, nn.Linear), self.member_biases, strict=True)]

    def _forward(self, x: Tensor, masks: list[Tensor], k: int = 0, dropout: float = 0.0, y: Tensor | None = None) -> Tensor:
        """(B, D P) outputs from the network's input ``x``: the levels already scaled to [0, 1];
        ``y`` the classes of a conditional model."""
        h = x
        e = class_vectors(self.class_emb, y)  # (B, H1) added to the first layer's pre-activation
        # masks holds the output (and direct) masks after the hidden layers'
        layers = zip(typed(self.layers, nn.Linear), masks[: len(self.layers)], self._hidden_biases(k), strict=True)
        for i, (layer, m, b) in enumerate(layers):
            a = F.linear(h, layer.weight * m, b)
            h = torch.relu(a if i or e is None else a + e)
            if dropout > 0 and self.train_generator is not None:  # a training run's own generator
                keep = torch.rand(h.shape, generator=self.train_generator, device=self.train_generator.device) >= dropout
                h = h * keep.to(h.device) / (1.0 - dropout)
            elif dropout > 0:
                h = F.dropout(h, dropout, training=True)
        out = F.linear(h, self.out.weight * masks[len(self.layers)], self.out.bias)
        if self.direct is not None:
            out = out + F.linear(x, self.direct.weight * masks[-1])
        return out

    def _params(self, out: Tensor) -> Tensor:
        """The output layer's (B, D P) as the head's numbers: (B, D) binary, else (B, D, P)."""
        return out if self.binary else out.view(len(out), self.size, self.out_params)

    def _nll(self, out: Tensor, x: Tensor) -> Tensor:
        """(B,) negative log-likelihood of the levels ``x`` under the output layer's ``out``."""
        if self.binary:
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(1)
        return -self.dist_head.log_prob_of(self._params(out), x).sum(1)

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        k = self.connectivity_for(ordering)
        # dropout only where a training run asks for the logits themselves (hybrid training of a
        # conditional model), drawn from the run's own generator; never for a caller outside a run
        drop = float(self.config.dropout) if self.training and self.train_generator is not None else 0.0
        return self._params(self._forward(scale_levels(x, self.levels), self._masks(ordering, k), k, dropout=drop, y=y))

    def member_log_prob(self, x: Tensor | np.ndarray, k: int) -> Tensor:
        """(B,) log p(x) under member ``k``; for a conditional model the member's marginal over the
        classes, log sum_y p(y) p(x | y), from one pass over the C copies of the batch."""
        x = self._as_batch(x)
        ordering, conn = self.member(k)
        masks = self._masks(ordering, conn)
        if not self.classes:
            return -self._nll(self._forward(scale_levels(x, self.levels), masks, conn), x)
        c, b = self.classes, len(x)
        xs = x.repeat(c, 1)
        ys = torch.arange(c, device=x.device).repeat_interleave(b)
        per_class = -self._nll(self._forward(scale_levels(xs, self.levels), masks, conn, y=ys), xs).view(c, b)
        return torch.logsumexp(self.class_log_prior.to(per_class)[:, None] + per_class, 0)

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.config
        drop = float(c.dropout)
        if c.num_masks == 1 and not c.order_agnostic and drop == 0:
            return super().training_loss(x, y)
        if c.num_masks == 0:  # a fresh ordering and connectivity for every minibatch
            k = 1 + int(torch.randint(2**62, (), generator=self.train_generator))
            ordering, _ = self.member(k) if c.order_agnostic else (self.ordering, k)
            masks, conn = [m.to(x.device) for m in self._build_masks(ordering, k)], 0
        else:
            k = 0 if c.num_masks == 1 else int(torch.randint(c.num_masks, (), generator=self.train_generator))
            ordering, conn = self.member(k)
            masks = self._masks(ordering, conn)
        out = self._forward(scale_levels(self._as_batch(x), self.levels), masks, conn, dropout=drop, y=y)
        return self._nll(out, x).mean()

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.out.bias, marginals)

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        k = self.connectivity_for(ordering)
        return _MADEStepper(self, x, self._masks(ordering, k), self._hidden_biases(k), class_vectors(self.class_emb, y))


class _MADEStepper(Stepper):
    """Keeps the first layer's pre-activation; the layers above are recomputed per pixel."""

    def __init__(self, m: MADE, x: Tensor, masks: list[Tensor], biases: list[Tensor], e: Tensor | None = None):
        layers = typed(m.layers, nn.Linear)
        n = len(layers)
        self.w1 = layers[0].weight * masks[0]  # (H1, D)
        # (B, H1), with the class vectors ``e`` in it for a conditional model (select carries them)
        self.pre = (biases[0] + 0 * x[:, :1]).clone() if e is None else biases[0] + e
        self.rest = [(layer.weight * mk, b) for layer, mk, b in zip(layers[1:], masks[1:n], biases[1:], strict=True)]
        self.p, self.levels = m.out_params, m.levels
        self.wout = m.out.weight * masks[n]  # (D P, H_L)
        self.bout = m.out.bias
        self.wdir = m.direct.weight * masks[-1] if m.direct is not None else None
        self.dacc = x.new_zeros(len(x), m.size * self.p) if self.wdir is not None else None  # (B, D P)

    def logits(self, pixel: int) -> Tensor:
        h = torch.relu(self.pre)
        for w, b in self.rest:
            h = torch.relu(F.linear(h, w, b))
        if self.p == 1:
            out = h @ self.wout[pixel] + self.bout[pixel]
            if self.dacc is not None:
                out = out + self.dacc[:, pixel]
            return out
        rows = slice(pixel * self.p, (pixel + 1) * self.p)  # the pixel's P outputs
        out = h @ self.wout[rows].T + self.bout[rows]  # (B, P)
        if self.dacc is not None:
            out = out + self.dacc[:, rows]
        return out

    def observe(self, pixel: int, value: Tensor) -> None:
        value = scale_levels(value, self.levels)
        self.pre.addcmul_(value[:, None], self.w1[:, pixel][None, :])
        if self.dacc is not None and self.wdir is not None:  # both or neither
            self.dacc.addcmul_(value[:, None], self.wdir[:, pixel][None, :])

    def select(self, index: Tensor) -> None:
        self.pre, self.dacc = _take(self.pre, index), _take(self.dacc, index)

