"""Locally masked PixelCNN (Jain, Abbeel, Pathak 2020, "Locally Masked Convolution for
Autoregressive Models"): every position of every layer gets its own mask, built from the step
numbers of the ordering, that lets it see only neighbours earlier in that ordering (the first
layer: strictly earlier; later layers: not later, which keeps the chain strictly causal). The
input carries the image and a constant channel, so a visible black pixel differs from an
invisible one. Gated residual layers and a 1x1 head, as in the gated PixelCNN. The masks are a
function of the ordering, so one network serves any ordering; ``order_agnostic`` trains it on
several (one per image). Like the original masked PixelCNN, stacked local masks leave blind
spots: the conditionals are exact but may ignore some earlier pixels (in raster, most of the rows
above to the right). ``context`` closes them in any ordering: K units of a NADE-like summary of
every earlier pixel, ``sigmoid(b + sum over earlier q of (W[:, q] x_q + V[:, q]))`` (V tells a
black pixel from one not yet drawn), computed for all positions at once by a cumulative sum along
the ordering and added to the residual stream after the first layer by a 1x1 convolution.

With K > 2 levels the image channel and the summary's ``x_q`` hold the level scaled to [0, 1], and
a black pixel (level 0) is still told from one not yet drawn as at K = 2: the constant channel, 1
wherever a pixel is visible, is masked with the image, and ``V`` is added for known pixels only. The
1x1 head gives the output head's P numbers per pixel (K for a softmax, 3 M for a logistic mixture),
each with its own per-pixel bias; a binary model keeps one logit and its parameters as they were.

Fast sampling: every layer's output at a position depends only on pixels before it in the
ordering, so it is final once the ordering reaches that position; the stepper computes each
position's outputs then, one kernel window per layer from the cached outputs of its neighbours,
and caches them.

Conditioned on a class (``classes``), every gated layer adds a learned vector of its class to its
pre-activations at every position, as the gated PixelCNN does (van den Oord et al. 2016's
``V^T h``, ``h`` one vector per class): one embedding per layer, ``class_layers``, started at zero
so that a conditional model begins as the unconditional one. A class is no pixel: the masks are
untouched and every conditional stays causal given the class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper, _take, typed
from .heads import scale_levels
from .layers import check_same_levels, class_embedding, class_vectors, gate, init_bias_at_marginals, output_head
from .train_orderings import check_orderings, draw_orderings, named_orderings


@dataclass
class LMConvConfig(ModelConfig):
    channels: int = 64  #: C, feature maps
    layers: int = 6  #: gated residual layers after the first (type A) layer
    kernel: int = 3
    first_kernel: int = 5
    head: int = 128
    #: train over ``train_orderings`` (one drawn per image) so that any ordering can be used
    order_agnostic: bool = False
    #: orderings drawn in order-agnostic training; "random" stands for a fresh uniform one
    train_orderings: tuple[str, ...] = (
        "raster", "snake", "column", "column-snake", "hilbert", "diagonal", "spiral-in", "spiral-out", "random",
    )
    #: units of the causal summary of all earlier pixels added to every position (0: none, the
    #: local masks alone, with their blind spots)
    context: int = 0


_FAR = 1e9  # the step of positions outside the image: never visible


def _plus(a: Tensor, b: Tensor | None) -> Tensor:
    """A (B, C, H, W) map plus a (B, C) class term at every position (nothing without one)."""
    return a if b is None else a + b[:, :, None, None].to(a.dtype)


def _local_masks(steps: Tensor, k: int, strict: bool) -> Tensor:
    """(B, k*k, L) masks: neighbour at kernel offset j of position l is visible when its step is
    before (``strict``, type A) or not after (type B) the step of l. ``steps`` (B, 1, H, W)."""
    p = k // 2
    neigh = F.unfold(F.pad(steps, (p, p, p, p), value=_FAR), k)  # (B, k*k, L)
    centre = steps.flatten(1)[:, None, :]  # (B, 1, L)
    return (neigh < centre) if strict else (neigh <= centre)


class _LMConv(nn.Conv2d):
    """A k x k convolution whose mask differs at every position (Jain, Abbeel, Pathak 2020): gather
    each position's k*k neighbours, multiply them by that position's mask, then one 1x1 convolution
    over the gathered channels.

    The neighbours are stacked from k*k shifted slices rather than ``F.unfold``, and the product is a
    1-D convolution rather than a broadcast matrix product: on a CPU the unfold backward (col2im)
    and the batch-folding copy of the matrix product cost more than the arithmetic
    (``bench/deep_training_step.py``). Under autocast the input is cast before the gather, so the
    gathered tensor, the largest of the layer, is built in the low precision the product uses anyway.
    """

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, k)
        self.k = k

    # a masked convolution needs its mask: never called where a plain Conv2d is expected
    def forward(self, h: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        """h (B, Cin, H, W), mask (B|1, k*k, H*W) -> (B, Cout, H, W)."""
        if torch.is_autocast_enabled(h.device.type):
            h = h.to(torch.get_autocast_dtype(h.device.type))
        b, cin, hh, ww = h.shape
        k, p = self.k, self.k // 2
        hp = F.pad(h, (p, p, p, p))
        cols = torch.stack([hp[:, :, i : i + hh, j : j + ww] for i in range(k) for j in range(k)], 2)  # (B, Cin, k*k, H, W)
        cols = (cols.view(b, cin, k * k, hh * ww) * mask[:, None].to(h.dtype)).view(b, cin * k * k, hh * ww)
        out = F.conv1d(cols, self.weight.reshape(self.out_channels, -1, 1), self.bias)  # (B, Cout, H*W)
        return out.view(b, self.out_channels, hh, ww)

    def reference_forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """The same layer written the plain way (``F.unfold``, mask, broadcast matrix product): the
        specification :meth:`forward` is tested against and ``bench/deep_training_step.py`` times."""
        b, cin, hh, ww = h.shape
        kk = self.k * self.k
        cols = F.unfold(h, self.k, padding=self.k // 2).view(b, cin, kk, -1)  # (B, Cin, k*k, H*W)
        cols = (cols * mask[:, None].to(h.dtype)).view(b, cin * kk, -1)
        assert self.bias is not None  # built with a bias
        out = self.weight.reshape(self.out_channels, -1) @ cols + self.bias[:, None]  # (B, Cout, H*W)
        return out.view(b, self.out_channels, hh, ww)


class LocallyMaskedPixelCNN(ARModel):
    """Locally masked PixelCNN: see the module docstring."""

    family = "lmconv"
    config_class = LMConvConfig
    residual_out = ("res",)  # the 1x1 after each masked layer closes its residual branch
    eval_chunk = 16
    config: LMConvConfig
    description = "Locally masked PixelCNN: a convolutional network usable in any ordering."
    takes_classes = True

    def __init__(self, config: LMConvConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        c, k, k0 = config.channels, config.kernel, config.first_kernel
        if c < 1 or config.layers < 0 or config.head < 1:
            raise ValueError("channels and head must be positive, layers non-negative")
        if k < 1 or k0 < 1 or k % 2 == 0 or k0 % 2 == 0:
            raise ValueError("kernel sizes must be odd and positive")
        if config.context < 0:
            raise ValueError("context must be 0 (none) or a positive number of units")
        if config.order_agnostic:
            check_orderings(config.train_orderings, config.height, config.width)
        self.any_order = bool(config.order_agnostic)
        self.first = _LMConv(2, 2 * c, k0)
        self.convs = nn.ModuleList(_LMConv(c, 2 * c, k) for _ in range(config.layers))
        self.res = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(config.layers))
        self.out1 = nn.Conv2d(c, config.head, 1)
        self.out2 = nn.Conv2d(config.head, self.out_params, 1)
        # per pixel, a bias for each of the head's numbers, D P values pixel-major (a vector, like
        # every bias: the (D, K) level frequencies of a softmax head start it); a binary model's
        # stays (H, W), as saved
        bias_shape = (config.height, config.width) if self.binary else (config.size * self.out_params,)
        self.pixel_bias = nn.Parameter(torch.zeros(bias_shape))
        self.reach = k0 // 2 + config.layers * (k // 2)
        u, d = config.context, config.height * config.width
        if u:  # the summary's weights per pixel (value, and being known), its bias and its readout
            self.ctx_w = nn.Parameter(torch.randn(u, d) * 0.05)
            self.ctx_v = nn.Parameter(torch.randn(u, d) * 0.01)
            self.ctx_b = nn.Parameter(torch.zeros(u))
            self.ctx_out = nn.Conv2d(u, c, 1)
        # conditional: per gated layer (the first, then each of ``convs``) a (2C) class term added to
        # its pre-activations; one embedding per layer, so that a deeper model grows from a shallower
        # one's by name, as every other weight does
        embs = [class_embedding(config.classes, 2 * c) for _ in range(config.layers + 1)]  # Nones if unconditional
        self.class_layers = nn.ModuleList(e for e in embs if e is not None) if config.classes else None

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.pixel_bias, marginals, zero=[self.out2.bias])

    def _masks(self, steps: Tensor) -> tuple[Tensor, Tensor]:
        """Type A (first layer) and type B masks, (B|1, k*k, L), of step maps (B|1, 1, H', W')."""
        return _local_masks(steps, self.config.first_kernel, strict=True), _local_masks(steps, self.config.kernel, strict=False)

    def _class_terms(self, y: Tensor | None) -> list[Tensor | None]:
        """Per gated layer (the first, then each of ``convs``), the (B, 2C) class term of its
        pre-activations; Nones for an unconditional model."""
        if self.class_layers is None:
            return [None] * (self.config.layers + 1)
        return [class_vectors(emb, y) for emb in typed(self.class_layers, nn.Embedding)]

    def _net(self, img: Tensor, steps: Tensor | None, masks: tuple[Tensor, Tensor] | None = None,
             perm: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """(B, H', W') logits, or (B, H', W', P) head numbers, of images ``img`` (B, 1, H', W'), levels
        scaled to [0, 1], whose steps are ``steps`` (B|1, 1, H', W'); with ``context``, ``perm``
        (B|1, D) is the ordering (step -> pixel) of each image; ``y`` (B,) the classes of a
        conditional model. No per-pixel bias yet."""
        if masks is None:
            if steps is None:
                raise ValueError("_net needs the step maps or the masks made from them")
            masks = self._masks(steps)
        a, bm = masks
        cls = self._class_terms(y)
        h = gate(_plus(self.first(torch.cat([img, torch.ones_like(img)], 1), a), cls[0]))  # (B, C, H', W')
        if self.config.context:
            if perm is None:
                raise ValueError("a model with context needs the ordering of each image")
            h = h + self.ctx_out(self._context(img.flatten(1), perm).view(-1, self.config.context, *img.shape[2:]))
        for conv, res, cb in zip(self.convs, self.res, cls[1:], strict=True):
            h = h + res(gate(_plus(conv(h, bm), cb)))
        return output_head(self.out1, self.out2, h, self.binary)

    def _with_bias(self, out: Tensor) -> Tensor:
        """(B, D) logits, or (B, D, P) raster-indexed head numbers, from the network's output."""
        b = out.shape[0]
        if self.binary:
            return (out + self.pixel_bias).reshape(b, -1)
        return (out.reshape(b, -1) + self.pixel_bias).view(b, self.config.size, self.out_params)

    def _context(self, x: Tensor, perm: Tensor) -> Tensor:
        """(B, K, D) summary at every pixel of the pixels before it: x (B, D) scaled levels, perm (B|1, D)."""
        b, u = x.shape[0], self.config.context
        perm = perm.expand(b, -1)
        xs = x.gather(1, perm).to(self.ctx_w.dtype)  # (B, D) values in the order they are drawn
        terms = xs[..., None] * self.ctx_w.T[perm] + self.ctx_v.T[perm]  # (B, D, K) what each step adds
        before = torch.cumsum(terms, 1)
        before = torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], 1)  # exclusive: strictly earlier steps
        at_pixel = torch.empty_like(before).scatter_(1, perm[..., None].expand(-1, -1, u), before)
        return torch.sigmoid(at_pixel + self.ctx_b).transpose(1, 2)

    def _steps(self, inverse: Tensor, dtype: torch.dtype) -> Tensor:
        """(B|1, 1, H, W) step maps from (B|1, D) inverse permutations."""
        return inverse.to(dtype).view(-1, 1, self.config.height, self.config.width)

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        inv = torch.from_numpy(np.array(ordering.inverse)).to(x.device)[None]  # (1, D)
        masks = self._masks(self._steps(inv, x.dtype))
        img = scale_levels(x, self.levels).view(b, 1, self.config.height, self.config.width)
        perm = torch.from_numpy(np.array(ordering.perm)).to(x.device)[None]  # (1, D)
        return self._with_bias(self._net(img, None, masks, perm, y))

    def trained_orderings(self) -> list[Ordering]:
        c = self.config
        return named_orderings(c.train_orderings, c.height, c.width) if self.any_order else []

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if not self.config.order_agnostic:
            return super().training_loss(x, y)
        c = self.config
        perm = draw_orderings(c.train_orderings, x.shape[0], c.height, c.width, x.device, self.train_generator)  # (B, D)
        steps = self._steps(torch.argsort(perm, dim=1), x.dtype)  # (B, 1, H, W)
        img = scale_levels(x, self.levels).view(-1, 1, c.height, c.width)
        params = self._with_bias(self._net(img, steps, perm=perm, y=y))  # each image's class in its own ordering
        if self.binary:
            return F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(1).mean()
        return -self.dist_head.log_prob_of(params, x).sum(1).mean()

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _CachedStepper(self, x, ordering, y)

    def notes(self) -> list[str]:
        if self.config.context:
            return [f"Every earlier pixel reaches each conditional: a summary of all of them ({self.config.context} units, "
                    "the context) adds what the local masks cannot see."]
        return ["Blind spot: stacked local masks let information travel only through earlier and earlier neighbours, "
                "so some earlier pixels never reach a conditional (in raster, most of the row above, right of the "
                "kernel). The influence map of a pinned pixel shows which."]

    def grow_from(self, src: ARModel) -> None:
        """Also wider: ``src`` may have fewer ``channels`` (and fewer layers). Its weights fill the
        first channels of every tensor; the new channels of the residual stream start at zero (their
        writers, the new filter half of the first gate and the new rows of every 1x1, are zeroed)
        while the weights that read them and the new gate units keep this model's random start. So
        the wider net computes exactly what ``src`` does; the weights writing the new channels get
        gradients at once, the others from the second step on, once those have moved.

        A model with ``context`` may also start from one without: the summary's readout starts at
        zero, so again the conditionals are the source's, and the summary opens as training goes.
        The levels and the head must be the source's."""
        check_same_levels(self, src)
        c0, c = getattr(src.config, "channels", None), self.config.channels
        u0, u = getattr(src.config, "context", 0), self.config.context
        if src.family == self.family and u0 != u:
            if u0:
                raise ValueError(f"the checkpoint has a context of {u0} units: one can be added to a model "
                                 f"without, not changed ({u})")
            plain = LocallyMaskedPixelCNN(replace(self.config, context=0), self.ordering)
            plain.grow_from(src)
            mine = self.state_dict()
            with torch.no_grad():
                for name, t in plain.state_dict().items():
                    mine[name].copy_(t)
                for p in self.ctx_out.parameters():
                    p.zero_()
            return None
        if src.family != self.family or c0 == c:
            return super().grow_from(src)
        assert isinstance(src, LocallyMaskedPixelCNN) and isinstance(c0, int)
        if c0 > c:
            raise ValueError(f"the checkpoint has {c0} channels: a model can grow from it, not shrink ({c})")
        # the source made as deep as this model (closed residual branches), then copied in
        deep = LocallyMaskedPixelCNN(replace(self.config, channels=c0), self.ordering)
        deep.grow_from(src)
        gated = torch.cat([torch.arange(c0), c + torch.arange(c0)])  # the old filter and gate halves' rows
        mine, theirs = self.state_dict(), deep.state_dict()
        with torch.no_grad():
            for name, t in theirs.items():
                m = mine[name]
                cols = (slice(None, t.shape[1]),) if t.dim() > 1 else ()  # a weight's input channels
                if name.startswith(("first.", "convs.")):  # gated outputs: rows in the two halves
                    m[(gated,) + cols] = t
                    if name.startswith("first."):  # the new filter half: tanh(0) = 0, new channels start at 0
                        m[c0:c].zero_()
                elif name.startswith("class_layers."):  # (classes, 2C) terms of the gated pre-activations
                    m.zero_()
                    m[:, gated] = t
                elif name.startswith(("res.", "ctx_out.")):  # write the stream: their new rows (and columns) closed
                    m.zero_()
                    m[(slice(None, c0),) + cols] = t
                elif name == "out1.weight":  # reads the stream: new columns random, reading zeros
                    m[:, :c0] = t
                else:
                    m.copy_(t)

    def _pixel_logit_flips(self, x: Tensor, pixel: int, flips: Tensor, ordering: Ordering) -> Tensor:
        """Only the pixel's cone is computed: layer l (0 the first) at the positions within
        ``(layers - l) * (kernel // 2)`` of it, and of those only the bounding box of the positions
        not after it in the ordering (a later position never reaches it through the masks, so
        leaving it out, or reading zeros for it, changes nothing). The context, a sum over all
        earlier pixels, is the unflipped image's plus the flipped pixel's term at the positions after
        it; it is needed only where the first layer's output is. Each layer is a valid masked
        convolution of the box of the layer below, zero-padded where that box was cut."""
        cfg = self.config
        hh, ww, u = cfg.height, cfg.width, cfg.context
        p0, q, n_layers = cfg.first_kernel // 2, cfg.kernel // 2, cfg.layers
        r, c = divmod(pixel, ww)
        inv = torch.from_numpy(np.array(ordering.inverse)).to(x.device)
        t = int(inv[pixel])
        early = (inv <= t).view(hh, ww)
        er, ec = early.any(1).nonzero()[:, 0], early.any(0).nonzero()[:, 0]
        lo_r, hi_r, lo_c, hi_c = max(0, int(er.min())), min(hh - 1, int(er.max())), max(0, int(ec.min())), min(ww - 1, int(ec.max()))

        def box(radius: int) -> tuple[int, int, int, int]:  # rows r0..r1, cols c0..c1 (inclusive)
            return (max(r - radius, lo_r), min(r + radius, hi_r), max(c - radius, lo_c), min(c + radius, hi_c))

        boxes = [box((n_layers - i) * q) for i in range(n_layers + 1)]  # where layer i's output is needed
        margin = p0 + n_layers * q + 1
        steps = F.pad(inv.to(x.dtype).view(1, 1, hh, ww), (margin,) * 4, value=_FAR)[0, 0]  # (H + 2m, W + 2m)

        def mask(bx: tuple[int, int, int, int], k: int, strict: bool) -> Tensor:  # (k*k, rows*cols) of box bx
            r0, r1, c0, c1 = bx
            nr, nc, pk = r1 - r0 + 1, c1 - c0 + 1, k // 2
            centre = steps[margin + r0 : margin + r1 + 1, margin + c0 : margin + c1 + 1]
            neigh = torch.stack([steps[margin + r0 - pk + i : margin + r0 - pk + i + nr, margin + c0 - pk + j : margin + c0 - pk + j + nc]
                                 for i in range(k) for j in range(k)])
            return ((neigh < centre) if strict else (neigh <= centre)).reshape(k * k, -1).to(x.dtype)

        masks = [mask(boxes[0], cfg.first_kernel, True)] + [mask(bx, cfg.kernel, False) for bx in boxes[1:]]
        perm = torch.from_numpy(np.array(ordering.perm)).to(x.device)
        if u:  # the unflipped context's pre-activation at every pixel, (D, K)
            xs = x[0, perm].to(self.ctx_w.dtype)
            before = torch.cumsum(xs[:, None] * self.ctx_w.T[perm] + self.ctx_v.T[perm], 0)
            before = torch.cat([torch.zeros_like(before[:1]), before[:-1]])
            pre = torch.empty_like(before).index_copy_(0, perm, before) + self.ctx_b
            r0, r1, c0, c1 = boxes[0]
            where = (torch.arange(r0, r1 + 1, device=x.device)[:, None] * ww + torch.arange(c0, c1 + 1, device=x.device)).reshape(-1)
        pieces = []
        for js in flips.split(32):
            n = len(js)
            xb = x.repeat(n, 1)
            rows = torch.arange(n, device=x.device)
            xb[rows, js] = 1 - xb[rows, js]
            img = xb.view(n, 1, hh, ww)
            inp = F.pad(torch.cat([img, torch.ones_like(img)], 1), (margin,) * 4)
            r0, r1, c0, c1 = boxes[0]
            inp = inp[:, :, margin + r0 - p0 : margin + r1 + p0 + 1, margin + c0 - p0 : margin + c1 + p0 + 1]
            h = gate(_valid_masked(self.first, inp, masks[0], r1 - r0 + 1, c1 - c0 + 1))  # (n, C, rows, cols) on box 0
            if u:
                later = (inv[where][None, :] > inv[js][:, None]).to(pre.dtype)  # (n, P): positions after the flip
                sign = (xb[rows, js] - x[0, js]).to(pre.dtype)  # +1 where a 0 became 1, -1 otherwise
                ctx = torch.sigmoid(pre[where][None] + (sign[:, None] * later)[..., None] * self.ctx_w.T[js][:, None])  # (n, P, K)
                h = h + self.ctx_out(ctx.transpose(1, 2).reshape(n, u, r1 - r0 + 1, c1 - c0 + 1).to(h.dtype))
            for i, (conv, res) in enumerate(zip(typed(self.convs, _LMConv), self.res, strict=True)):
                (a0, a1, b0, b1), (r0, r1, c0, c1) = boxes[i], boxes[i + 1]
                win = F.pad(h, (b0 - (c0 - q), (c1 + q) - b1, a0 - (r0 - q), (r1 + q) - a1))  # box i+1 dilated by q
                keep = h[:, :, r0 - a0 : r1 - a0 + 1, c0 - b0 : c1 - b0 + 1]
                h = keep + res(gate(_valid_masked(conv, win, masks[i + 1], r1 - r0 + 1, c1 - c0 + 1)))
            r0, _, c0, _ = boxes[-1]
            h = h[:, :, r - r0, c - c0][:, :, None, None]  # (n, C, 1, 1) at the pixel
            pieces.append(self.out2(torch.relu(self.out1(torch.relu(h))))[:, 0, 0, 0] + self.pixel_bias[r, c])
        return torch.cat(pieces)


def _valid_masked(conv: _LMConv, h: Tensor, mask: Tensor, rows: int, cols: int) -> Tensor:
    """The masked convolution ``conv`` without padding: h (B, Cin, rows + k - 1, cols + k - 1),
    mask (k*k, rows*cols) -> (B, Cout, rows, cols), the same product as :meth:`_LMConv.forward`.
    Kernel offsets the mask closes at every position (in raster: the right and the row below) are
    left out of the product rather than multiplied by zero."""
    b, cin = h.shape[:2]
    k = conv.k
    used = [o for o in range(k * k) if bool(mask[o].any())]
    if not used:  # no position sees any neighbour: the bias alone
        assert conv.bias is not None  # built with a bias
        return conv.bias.view(1, -1, 1, 1).expand(b, -1, rows, cols).to(h.dtype)
    stack = torch.stack([h[:, :, o // k : o // k + rows, o % k : o % k + cols] for o in used], 2)  # (B, Cin, n, rows, cols)
    stack = (stack.reshape(b, cin, len(used), rows * cols) * mask[used]).reshape(b, cin * len(used), rows * cols)
    weight = conv.weight.reshape(conv.out_channels, cin, k * k)[:, :, used].reshape(conv.out_channels, -1, 1)
    out = F.conv1d(stack, weight, conv.bias)
    return out.view(b, conv.out_channels, rows, cols)


def _matrix(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """A convolution as a matrix over its flattened input window (input channel-major, as the
    window of a (B, Cin, k, k) crop flattens), and its bias."""
    assert conv.bias is not None  # every convolution here is built with one
    return conv.weight.reshape(conv.out_channels, -1), conv.bias


def _apply(wb: tuple[Tensor, Tensor], cols: Tensor) -> Tensor:
    """(B, Cout) = cols (B, Cin*k*k) through the matrix form of a convolution."""
    return torch.addmm(wb[1], cols, wb[0].T)


class _CachedStepper(Stepper):
    """Every layer's output at a position depends only on pixels strictly before that position in
    the ordering (the first layer's mask is strict, the later ones see not-later positions of the
    layer below). So once the ordering reaches a position, its outputs are final: they are computed
    then, from the cached outputs of the earlier neighbours and its own output one layer down, and
    cached. A pixel costs one kernel window per layer, however deep the network (the cone of
    positions that reach a pixel grows with the square of the depth)."""

    def __init__(self, m: LocallyMaskedPixelCNN, x: Tensor, ordering: Ordering, y: Tensor | None = None):
        self.m, self.x = m, x
        self.cls = m._class_terms(y)  # per gated layer (B, 2C), or Nones
        cfg = m.config
        self.h, self.w = cfg.height, cfg.width
        self.k0, self.k = cfg.first_kernel, cfg.kernel
        b, c, q, dt = x.shape[0], cfg.channels, cfg.kernel // 2, x.dtype
        inv = torch.from_numpy(np.array(ordering.inverse)).to(x.device)[None]
        mask_a, mask_b = m._masks(m._steps(inv, dt))  # (1, k0*k0, D), (1, k*k, D)
        self.mask_a, self.mask_b = mask_a[0].T.to(dt), mask_b[0].T.to(dt)  # (D, k0*k0), (D, k*k)
        p0 = self.k0 // 2
        self.levels = m.levels
        img = scale_levels(x, self.levels).view(b, 1, self.h, self.w)
        self.xp = F.pad(torch.cat([img, torch.ones_like(img)], 1), (p0, p0, p0, p0))  # (B, 2, H+2p0, W+2p0)
        # the residual stream after the first layer and after each following one, zero-padded by q
        self.acts = [x.new_zeros(b, c, self.h + 2 * q, self.w + 2 * q) for _ in range(cfg.layers + 1)]
        self.ready = np.zeros(self.h * self.w, dtype=bool)
        self.first = _matrix(m.first)
        self.convs = [_matrix(conv) for conv in typed(m.convs, _LMConv)]
        self.res = [_matrix(res) for res in typed(m.res, nn.Conv2d)]
        self.out1, self.out2 = _matrix(m.out1), _matrix(m.out2)
        if cfg.context:  # the summary of the pixels observed so far, in the ordering's order
            self.ctx = m.ctx_b.detach().to(dt).expand(b, -1).clone()  # (B, K)
            self.ctx_w, self.ctx_v = m.ctx_w.detach().to(dt), m.ctx_v.detach().to(dt)
            self.ctx_out = _matrix(m.ctx_out)

    def _compute(self, pixel: int) -> Tensor:
        """Every layer's output at ``pixel``, cached; returns the last one (B, C)."""
        b = self.x.shape[0]
        r, col = divmod(pixel, self.w)
        q, k, k0 = self.k // 2, self.k, self.k0
        win = self.xp[:, :, r : r + k0, col : col + k0].reshape(b, 2, k0 * k0)
        h = gate(self._plus(_apply(self.first, (win * self.mask_a[pixel]).reshape(b, -1)), 0))  # (B, C)
        if self.m.config.context:  # reached in order: the summary holds exactly the earlier pixels
            h = h + _apply(self.ctx_out, torch.sigmoid(self.ctx))
        self.acts[0][:, :, r + q, col + q] = h
        for i, (conv, res) in enumerate(zip(self.convs, self.res, strict=True)):
            win = self.acts[i][:, :, r : r + k, col : col + k].reshape(b, -1, k * k)
            h = h + _apply(res, gate(self._plus(_apply(conv, (win * self.mask_b[pixel]).reshape(b, -1)), i + 1)))
            self.acts[i + 1][:, :, r + q, col + q] = h
        self.ready[pixel] = True
        return h

    def _plus(self, pre: Tensor, layer: int) -> Tensor:
        """(B, 2C) pre-activations of gated layer ``layer`` at one position, plus its class term."""
        cb = self.cls[layer]
        return pre if cb is None else pre + cb.to(pre.dtype)

    def logits(self, pixel: int) -> Tensor:
        out = _apply(self.out2, torch.relu(_apply(self.out1, torch.relu(self._compute(pixel)))))  # (B, P)
        r, col = divmod(pixel, self.w)
        if self.m.binary:
            return out[:, 0] + self.m.pixel_bias[r, col]
        return out + self.m.pixel_bias.view(-1, self.m.out_params)[pixel]

    def observe(self, pixel: int, value: Tensor) -> None:
        if not self.ready[pixel]:  # a known pixel: its outputs are needed by the later ones all the same
            self._compute(pixel)
        self.x[:, pixel] = value
        r, col = divmod(pixel, self.w)
        p0 = self.k0 // 2
        scaled = scale_levels(value, self.levels)
        self.xp[:, 0, r + p0, col + p0] = scaled
        if self.m.config.context:
            self.ctx = self.ctx + scaled.to(self.ctx.dtype)[:, None] * self.ctx_w[:, pixel] + self.ctx_v[:, pixel]

    def select(self, index: Tensor) -> None:
        self.x, self.xp = _take(self.x, index), _take(self.xp, index)
        self.acts = [_take(a, index) for a in self.acts]
        self.cls = [_take(t, index) for t in self.cls]
        if self.m.config.context:
            self.ctx = _take(self.ctx, index)
