"""Gated PixelCNN (van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu 2016,
"Conditional Image Generation with PixelCNN Decoders").

A convolutional network whose output at pixel ``(r, c)`` depends only on the pixels before it in
raster order. Two stacks remove the blind spot of the original masked PixelCNN:

* the *vertical* stack convolves with kernels that cover the rows at and above the current one
  (``(k//2 + 1) x k``); its activation at row ``r`` depends on image rows ``<= r``, so it is
  shifted down one row before it feeds the horizontal stack, which then sees rows ``< r`` only;
* the *horizontal* stack convolves along the current row with ``1 x (k//2 + 1)`` kernels: the
  first layer (mask type A) excludes the current pixel, the following ones (type B) include the
  current position of the layer below.

Every layer is gated, ``tanh(W_f * h) * sigmoid(W_g * h)``; the horizontal stack of the layers after
the first is residual (``h + 1x1(gated)``). A 1x1 head gives one Bernoulli logit per pixel, plus a
learned per-pixel bias started at the pixel marginals. Raster is the only ordering: the kernels'
shapes fix it.

With K > 2 levels the image channel holds the level scaled to [0, 1] (the first layer's type-A mask
still hides the current pixel, so its level enters only the later pixels' conditionals), and the
head's last 1x1 gives the output head's P numbers per pixel (K for a softmax, 3 M for a logistic
mixture), each with its own per-pixel bias; a binary model keeps one logit and its parameters as
they were.

Fast sampling (compute only what can change): when a row starts, the vertical stack is computed
once on the rows above it (cropped to its receptive field) and its contributions to the next row
are cached; for every pixel only the horizontal stack of the current row is recomputed, cropped
to the columns in its receptive field. Both crops are exact, so the fast sampler reproduces the
teacher-forced conditionals. For a convolutional model in other orderings see
:mod:`engine.models.lmconv`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering, make_ordering
from .base import ARModel, ModelConfig, Stepper, UnsupportedOrdering, _take, typed
from .heads import scale_levels
from .layers import check_same_levels, class_embedding, class_vectors, gate, init_bias_at_marginals, output_head


@dataclass
class PixelCNNConfig(ModelConfig):
    channels: int = 64  #: C, feature maps of each stack
    layers: int = 8  #: gated residual layers after the first (type A) layer
    kernel: int = 3  #: odd kernel width of the gated layers
    first_kernel: int = 7  #: odd kernel width of the first layer
    head: int = 128  #: hidden units of the 1x1 output head


def _plus(a: Tensor, b: Tensor | None) -> Tensor:
    """A (B, C, H, W) map plus a (B, C) class term at every position (nothing without one)."""
    return a if b is None else a + b[:, :, None, None].to(a.dtype)


def _down(a: Tensor) -> Tensor:
    """Shift a (B, C, H, W) map down one row (row r receives row r-1, row 0 zeros)."""
    return F.pad(a, (0, 0, 1, 0))[:, :, :-1]


class _VConv(nn.Conv2d):
    """Vertical-stack convolution: output row r sees input rows r-k//2..r, all k columns."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, (k // 2 + 1, k))
        self.k = k

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        p = self.k // 2
        return F.conv2d(F.pad(x, (p, p, p, 0)), self.weight, self.bias)


class _HConv(nn.Conv2d):
    """Horizontal-stack convolution: output column c sees input columns c-k//2..c (type B), or
    c-1-k//2..c-1 (type A, the first layer: the current pixel is excluded)."""

    def __init__(self, cin: int, cout: int, k: int, mask_a: bool):
        super().__init__(cin, cout, (1, k // 2 + 1))
        self.k, self.mask_a = k, mask_a

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, R, W) -> (B, Cout, R, W)
        p = self.k // 2
        if self.mask_a:
            x = F.pad(x, (1, 0))[..., :-1]  # shift right: column c now holds column c-1
        return F.conv2d(F.pad(x, (p, 0)), self.weight, self.bias)


class GatedPixelCNN(ARModel):
    family = "pixelcnn"
    config_class = PixelCNNConfig
    config: PixelCNNConfig
    description = "Gated PixelCNN: vertical and horizontal convolution stacks, raster order only."
    residual_out = ("res",)  # the horizontal stack's 1x1 closes each layer's residual branch
    eval_chunk = 16
    takes_classes = True

    def __init__(self, config: PixelCNNConfig, ordering: Ordering | None = None):
        raster = make_ordering("raster", config.height, config.width)
        if ordering is not None and ordering != raster:
            raise UnsupportedOrdering(self._why_raster(ordering))
        super().__init__(config, raster)
        c, k, k0 = config.channels, config.kernel, config.first_kernel
        if c < 1 or config.layers < 0 or config.head < 1:
            raise ValueError("channels and head must be positive, layers non-negative")
        if k < 1 or k0 < 1 or k % 2 == 0 or k0 % 2 == 0:
            raise ValueError("kernel sizes must be odd and positive")
        self.v0 = _VConv(1, 2 * c, k0)
        self.h0 = _HConv(1, 2 * c, k0, mask_a=True)
        self.link0 = nn.Conv2d(2 * c, 2 * c, 1)
        self.vs = nn.ModuleList(_VConv(c, 2 * c, k) for _ in range(config.layers))
        self.hs = nn.ModuleList(_HConv(c, 2 * c, k, mask_a=False) for _ in range(config.layers))
        self.links = nn.ModuleList(nn.Conv2d(2 * c, 2 * c, 1) for _ in range(config.layers))
        self.res = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(config.layers))
        self.out1 = nn.Conv2d(c, config.head, 1)
        self.out2 = nn.Conv2d(config.head, self.out_params, 1)
        # per pixel, a bias for each of the head's numbers, D P values pixel-major (a vector, like
        # every bias: the (D, K) level frequencies of a softmax head start it); a binary model's
        # stays (H, W), as saved
        bias_shape = (config.height, config.width) if self.binary else (config.size * self.out_params,)
        self.pixel_bias = nn.Parameter(torch.zeros(bias_shape))
        # conditional: per layer a class term for the vertical and one for the horizontal pre-activations
        # (van den Oord et al.'s V h, with h a learned vector per class), 4C numbers a layer
        self.class_emb = class_embedding(config.classes, (config.layers + 1) * 4 * c)
        # rows above / columns left of a pixel that can reach it (receptive field of the crops)
        self.reach_rows = k0 // 2 + config.layers * (k // 2)
        self.reach_cols = k0 // 2 + 1 + config.layers * (k // 2)

    @staticmethod
    def _why_raster(ordering: Ordering) -> str:
        return (
            f"the gated PixelCNN computes conditionals in raster order only (its convolution masks fix the "
            f"ordering), not {ordering.label}; use an order-agnostic model for other orderings"
        )

    @classmethod
    def builds_in(cls, ordering: Ordering) -> tuple[bool, str]:
        if ordering != make_ordering("raster", ordering.height, ordering.width):
            return False, cls._why_raster(ordering)
        return True, ""

    def supports(self, ordering: Ordering) -> tuple[bool, str]:
        ok, why = super().supports(ordering)
        if not ok and (ordering.height, ordering.width) == (self.config.height, self.config.width):
            why = self._why_raster(ordering)
        return ok, why

    def init_output_bias(self, marginals: Tensor) -> None:
        init_bias_at_marginals(self.pixel_bias, marginals, zero=[self.out2.bias])

    def grow_from(self, src: ARModel) -> None:
        """Deeper (see :meth:`ARModel.grow_from`) and also wider: ``src`` may have fewer ``channels``.
        Its weights fill the old channels of every tensor (the filter and gate halves of each gated
        layer's rows, and of a link's columns, which read the vertical stack's pre-activations), and
        the new channels start closed, so the wider network computes exactly what ``src`` does:

        * the vertical stack's new units stay at zero (tanh(0) = 0): the new filter-half rows of
          ``v0`` and of every ``vs`` are zeroed; the links' columns reading its new gate halves
          (which are not zero) are zeroed too;
        * the horizontal stream's new channels start at zero: the new filter-half rows of ``h0`` and
          ``link0`` are zeroed, and every ``res`` writes its new rows from zero and reads its new
          columns (the later layers' new units) with zero weights;
        * the class terms of new units start at zero; the head reads the new channels (zeros) with
          random weights.

        The weights writing the new channels get gradients at once, those reading channels that
        start at zero from the second step on."""
        check_same_levels(self, src)
        c0, c = getattr(src.config, "channels", None), self.config.channels
        if src.family != self.family or c0 == c:
            return super().grow_from(src)
        assert isinstance(src, GatedPixelCNN) and isinstance(c0, int)
        if c0 > c:
            raise ValueError(f"the checkpoint has {c0} channels: a model can grow from it, not shrink ({c})")
        deep = GatedPixelCNN(replace(self.config, channels=c0))  # the source as deep as this model
        deep.grow_from(src)
        old = torch.arange(c0)
        gated = torch.cat([old, c + old])  # where the old filter and gate halves sit in 2C rows
        mine, theirs = self.state_dict(), deep.state_dict()
        with torch.no_grad():
            for name, t in theirs.items():
                m = mine[name]
                module = name.split(".")[0]
                if module in ("v0", "vs", "h0", "hs"):  # gated rows; columns read the old C channels
                    m[(gated, slice(None, t.shape[1])) if t.dim() > 1 else gated] = t
                    if module in ("v0", "vs", "h0"):  # new units closed: their filter half at zero
                        m[c0:c].zero_()
                elif module in ("link0", "links"):  # 2C -> 2C 1x1s from the vertical pre-activations
                    if t.dim() > 1:
                        m[gated[:, None], gated] = t
                        m[:, c + c0 :].zero_()  # the vertical stack's new gate halves are not zero
                    else:
                        m[gated] = t
                    if module == "link0":
                        m[c0:c].zero_()  # the first layer's new units: the horizontal stream starts at zero
                elif module == "res":  # writes the stream: new rows and columns closed
                    m.zero_()
                    m[(slice(None, c0), slice(None, c0)) if t.dim() > 1 else slice(None, c0)] = t
                elif module == "class_emb":  # (classes, (layers + 1) * 2 * 2C), per layer and stack
                    n = self.config.layers + 1
                    m.zero_()
                    m.view(len(m), n, 2, 2 * c)[..., gated] = t.view(len(t), n, 2, 2 * c0)
                elif name == "out1.weight":  # reads the stream: new columns random, reading zeros
                    m[:, :c0] = t
                else:
                    m.copy_(t)
        return None

    # -- the network ---------------------------------------------------------------------------
    def _head(self, h: Tensor) -> Tensor:  # (B, C, R, W') -> (B, R, W'), or (B, R, W', P)
        return output_head(self.out1, self.out2, h, self.binary)

    def _class_terms(self, y: Tensor | None) -> tuple[list[Tensor | None], list[Tensor | None]]:
        """Per layer, the (B, 2C) class terms of the vertical and of the horizontal stack (Nones for
        an unconditional model)."""
        n = self.config.layers + 1
        e = class_vectors(self.class_emb, y)
        if e is None:
            return [None] * n, [None] * n
        e = e.view(len(e), n, 2, -1)
        return [e[:, i, 0] for i in range(n)], [e[:, i, 1] for i in range(n)]

    def _vertical(self, img: Tensor, cv: list[Tensor | None]) -> list[Tensor]:
        """Pre-activations of the vertical stack, one (B, 2C, H, W) map per layer."""
        pre = [_plus(self.v0(img), cv[0])]
        for conv, b in zip(self.vs, cv[1:], strict=True):
            pre.append(_plus(conv(gate(pre[-1])), b))
        return pre

    def _horizontal(self, img: Tensor, links: list[Tensor]) -> Tensor:
        """The horizontal stack given the vertical contributions (already shifted, through the
        1x1 links), one (B, 2C, R, W) map per layer; returns the last layer (B, C, R, W)."""
        h = gate(self.h0(img) + links[0])
        for conv, res, link in zip(self.hs, self.res, links[1:], strict=True):
            h = h + res(gate(conv(h) + link))
        return h

    def _links(self, vpre: list[Tensor], ch: list[Tensor | None]) -> list[Tensor]:
        """What the horizontal stack adds to its pre-activations: the vertical stack shifted down
        one row through the 1x1 links, and the class terms."""
        mods = [self.link0, *self.links]
        return [_plus(m(_down(v)), b) for m, v, b in zip(mods, vpre, ch, strict=True)]

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        img = scale_levels(x, self.levels).view(b, 1, self.config.height, self.config.width)  # (B, 1, H, W)
        cv, ch = self._class_terms(y)
        h = self._horizontal(img, self._links(self._vertical(img, cv), ch))
        if self.binary:
            return (self._head(h) + self.pixel_bias).reshape(b, -1)
        return (self._head(h).reshape(b, -1) + self.pixel_bias).view(b, self.config.size, self.out_params)  # (B, D, P)

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return _PixelCNNStepper(self, x, y)

    def _pixel_logit_flips(self, x: Tensor, pixel: int, flips: Tensor, ordering: Ordering) -> Tensor:
        """The fast sampler's computation of one pixel (the vertical stack on the rows above that
        reach it, the horizontal cone of its row), on the flipped images. A flip in a row above
        those never reaches the pixel: its logit is the unflipped image's."""
        r = pixel // self.config.width
        far = flips // self.config.width < r - 1 - self.reach_rows
        out = x.new_empty(len(flips))
        if bool(far.any()):
            out[far] = _PixelCNNStepper(self, x.clone()).logits(pixel)
        near = flips[~far]
        if len(near):
            pieces = []
            for js in near.split(64):
                xb = x.repeat(len(js), 1)
                rows = torch.arange(len(js), device=x.device)
                xb[rows, js] = 1 - xb[rows, js]
                pieces.append(_PixelCNNStepper(self, xb).logits(pixel))
            out[~far] = torch.cat(pieces)
        return out


class _PixelCNNStepper(Stepper):
    """Per row: the vertical stack once, on the rows above that reach it. Per pixel: only the cone
    of the current row's horizontal stack that reaches the pixel (layer l on ``layers - l`` kernel
    steps of columns left of it), as matrix products on channel-last tensors."""

    def __init__(self, m: GatedPixelCNN, x: Tensor, y: Tensor | None = None):
        self.m, self.x = m, x  # x holds levels; the network reads them scaled
        self.cv, self.ch = m._class_terms(y)
        cfg = m.config
        self.h, self.w, self.b = cfg.height, cfg.width, x.shape[0]
        self.pad = m.reach_cols + 1  # zero columns left of the row, so every window is a crop
        self.row = -1
        self.links: list[Tensor] = []
        self.dirty_above = True
        c, q = cfg.channels, cfg.kernel // 2
        self.w0 = m.h0.weight[:, 0, 0, :]  # (2C, k0//2 + 1)
        self.wh = [conv.weight[:, :, 0, :].permute(0, 2, 1).reshape(2 * c, (q + 1) * c) for conv in typed(m.hs, _HConv)]  # tap-major
        self.wres = [res.weight[:, :, 0, 0] for res in typed(m.res, nn.Conv2d)]  # (C, C)
        self.w1, self.w2 = m.out1.weight[:, :, 0, 0], m.out2.weight[:, :, 0, 0]  # (head, C), (P, head)

    def _row_links(self, r: int) -> list[Tensor]:
        """(B, pad + W, 2C) vertical contributions to row r (from image rows < r), channel-last."""
        m = self.m
        mods = [m.link0, *m.links]
        img = scale_levels(self.x, m.levels).view(self.b, 1, self.h, self.w)
        if r == 0:
            vlast = [self.x.new_zeros(self.b, 2 * m.config.channels, 1, self.w)] * len(mods)
        elif r - 1 < m.reach_rows:  # near the top: the stack on all rows above, zero-padded as in the full pass
            vlast = [v[:, :, -1:] for v in m._vertical(img[:, :, :r], self.cv)]
        else:  # no padding: each layer computes only the rows that still reach row r - 1
            p0, q = m.config.first_kernel // 2, m.config.kernel // 2
            v = _plus(F.conv2d(F.pad(img[:, :, r - 1 - m.reach_rows : r], (p0, p0, 0, 0)), m.v0.weight, m.v0.bias), self.cv[0])
            vpre = [v]  # (B, 2C, rows, W), rows shrinking by q per layer down to 1
            for conv, cb in zip(typed(m.vs, _VConv), self.cv[1:], strict=True):
                v = _plus(F.conv2d(F.pad(gate(v), (q, q, 0, 0)), conv.weight, conv.bias), cb)
                vpre.append(v)
            vlast = [v[:, :, -1:] for v in vpre]
        lks = [_plus(mod(v), cb) for mod, v, cb in zip(mods, vlast, self.ch, strict=True)]
        return [F.pad(lk[:, :, 0].transpose(1, 2), (0, 0, self.pad, 0)) for lk in lks]

    def logits(self, pixel: int) -> Tensor:
        m, cfg = self.m, self.m.config
        r, c = divmod(pixel, self.w)
        if r != self.row or self.dirty_above:
            self.links, self.row, self.dirty_above = self._row_links(r), r, False
        q, p0, n_layers = cfg.kernel // 2, cfg.first_kernel // 2, cfg.layers
        cc = c + self.pad  # column of the pixel in padded coordinates
        lo = cc - n_layers * q  # first column layer 0 must produce
        xr = F.pad(scale_levels(self.x[:, r * self.w : (r + 1) * self.w], m.levels), (self.pad, 0))  # (B, pad + W)
        win = xr[:, lo - 1 - p0 : cc].unfold(1, p0 + 1, 1).contiguous()  # (B, n, p0+1): column j sees j-1-p0 .. j-1
        h = gate(F.linear(win, self.w0, m.h0.bias) + self.links[0][:, lo : cc + 1], -1)  # (B, n, C)
        valid = None
        if lo < self.pad:  # the cone reaches left of the image: those columns are zero padding
            valid = (torch.arange(lo, cc + 1, device=h.device) >= self.pad).to(h.dtype)[:, None]  # (n, 1)
            h = h * valid
        for i in range(n_layers):
            n = h.shape[1] - q
            win = h.unfold(1, q + 1, 1).transpose(2, 3).contiguous().view(self.b, n, -1)  # (B, n, (q+1) C)
            pre = F.linear(win, self.wh[i], typed(m.hs, _HConv)[i].bias) + self.links[i + 1][:, cc + 1 - n : cc + 1]
            h = h[:, q:] + F.linear(gate(pre, -1), self.wres[i], typed(m.res, nn.Conv2d)[i].bias)  # (B, n, C)
            if valid is not None:
                valid = valid[q:]
                h = h * valid
        out = F.linear(torch.relu(F.linear(torch.relu(h[:, -1]), self.w1, m.out1.bias)), self.w2, m.out2.bias)  # (B, P)
        return out[:, 0] + m.pixel_bias[r, c] if m.binary else out + m.pixel_bias.view(-1, m.out_params)[pixel]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.x[:, pixel] = value
        if pixel // self.w < self.row:
            self.dirty_above = True

    def select(self, index: Tensor) -> None:
        self.x = _take(self.x, index)
        self.links = [_take(lk, index) for lk in self.links]
        self.cv = [_take(t, index) for t in self.cv]
        self.ch = [_take(t, index) for t in self.ch]
        self.b = int(index.numel())
