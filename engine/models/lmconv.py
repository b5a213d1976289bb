"""Locally masked PixelCNN (Jain, Abbeel, Pathak 2020, "Locally Masked Convolution for
Autoregressive Models"): every position of every layer gets its own mask, built from the step
numbers of the ordering, that lets it see only neighbours earlier in that ordering (the first
layer: strictly earlier; later layers: not later, which keeps the chain strictly causal). The
input carries the image and a constant channel, so a visible black pixel differs from an
invisible one. Gated residual layers and a 1x1 head, as in the gated PixelCNN. The masks are a
function of the ordering, so one network serves any ordering; ``order_agnostic`` trains it on
several (one per image). Like the original masked PixelCNN, stacked local masks leave blind
spots: the conditionals are exact but may ignore some earlier pixels.

Fast sampling: a pixel's output depends only on the positions within ``reach`` of it, so the
stepper computes only that cone: the first layer on a small window around the pixel, each
following layer on a window one kernel radius smaller, the head on the pixel alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ordering import Ordering
from .base import ARModel, ModelConfig, Stepper, _take
from .lstm import check_orderings, draw_orderings
from .pixelcnn import _gate


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


_FAR = 1e9  # the step of positions outside the image: never visible


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
    def forward(self, h: Tensor, mask: Tensor, pad: bool = True) -> Tensor:  # type: ignore[override]
        """h (B, Cin, H, W), mask (B|1, k*k, L) -> (B, Cout, H, W); with ``pad`` False, the valid
        positions only: (B, Cout, H - 2(k//2), W - 2(k//2))."""
        if torch.is_autocast_enabled(h.device.type):
            h = h.to(torch.get_autocast_dtype(h.device.type))
        b, cin = h.shape[:2]
        k, p = self.k, self.k // 2
        if pad:
            h = F.pad(h, (p, p, p, p))
        ho, wo = h.shape[2] - 2 * p, h.shape[3] - 2 * p
        cols = torch.stack([h[:, :, i : i + ho, j : j + wo] for i in range(k) for j in range(k)], 2)  # (B, Cin, k*k, Ho, Wo)
        cols = (cols.view(b, cin, k * k, ho * wo) * mask[:, None].to(h.dtype)).view(b, cin * k * k, ho * wo)
        out = F.conv1d(cols, self.weight.reshape(self.out_channels, -1, 1), self.bias)  # (B, Cout, L)
        return out.view(b, self.out_channels, ho, wo)

    def reference_forward(self, h: Tensor, mask: Tensor, pad: bool = True) -> Tensor:
        """The same layer written the plain way (``F.unfold``, mask, broadcast matrix product): the
        specification :meth:`forward` is tested against and ``bench/lmconv_layer.py`` times."""
        b, cin, hh, ww = h.shape
        kk, p = self.k * self.k, self.k // 2
        cols = F.unfold(h, self.k, padding=p if pad else 0).view(b, cin, kk, -1)  # (B, Cin, k*k, L)
        cols = (cols * mask[:, None].to(h.dtype)).view(b, cin * kk, -1)
        assert self.bias is not None  # built with a bias
        out = self.weight.reshape(self.out_channels, -1) @ cols + self.bias[:, None]  # (B, Cout, L)
        return out.view(b, self.out_channels, hh if pad else hh - 2 * p, ww if pad else ww - 2 * p)


class LocallyMaskedPixelCNN(ARModel):
    """Locally masked PixelCNN: see the module docstring."""

    family = "lmconv"
    config_class = LMConvConfig
    residual_out = ("res",)  # the 1x1 after each masked layer closes its residual branch
    config: LMConvConfig
    description = "Locally masked PixelCNN: a convolutional network usable in any ordering."

    def __init__(self, config: LMConvConfig, ordering: Ordering | None = None):
        super().__init__(config, ordering)
        c, k, k0 = config.channels, config.kernel, config.first_kernel
        if c < 1 or config.layers < 0 or config.head < 1:
            raise ValueError("channels and head must be positive, layers non-negative")
        if k < 1 or k0 < 1 or k % 2 == 0 or k0 % 2 == 0:
            raise ValueError("kernel sizes must be odd and positive")
        if config.order_agnostic:
            check_orderings(config.train_orderings, config.height, config.width)
        self.any_order = bool(config.order_agnostic)
        self.first = _LMConv(2, 2 * c, k0)
        self.convs = nn.ModuleList(_LMConv(c, 2 * c, k) for _ in range(config.layers))
        self.res = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(config.layers))
        self.out1 = nn.Conv2d(c, config.head, 1)
        self.out2 = nn.Conv2d(config.head, 1, 1)
        self.pixel_bias = nn.Parameter(torch.zeros(config.height, config.width))
        self.reach = k0 // 2 + config.layers * (k // 2)

    def init_output_bias(self, marginals: Tensor) -> None:
        with torch.no_grad():
            self.pixel_bias.copy_(torch.logit(marginals.to(self.pixel_bias), eps=1e-3).view_as(self.pixel_bias))
            assert self.out2.bias is not None  # built with a bias
            self.out2.bias.zero_()

    def _masks(self, steps: Tensor) -> tuple[Tensor, Tensor]:
        """Type A (first layer) and type B masks, (B|1, k*k, L), of step maps (B|1, 1, H', W')."""
        return _local_masks(steps, self.config.first_kernel, strict=True), _local_masks(steps, self.config.kernel, strict=False)

    def _net(self, img: Tensor, steps: Tensor | None, masks: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """(B, H', W') logits of images ``img`` (B, 1, H', W') whose steps are ``steps`` (B|1, 1, H', W')."""
        if masks is None:
            if steps is None:
                raise ValueError("_net needs the step maps or the masks made from them")
            masks = self._masks(steps)
        a, bm = masks
        h = _gate(self.first(torch.cat([img, torch.ones_like(img)], 1), a))  # (B, C, H', W')
        for conv, res in zip(self.convs, self.res, strict=True):
            h = h + res(_gate(conv(h, bm)))
        return self.out2(torch.relu(self.out1(torch.relu(h))))[:, 0]

    def _steps(self, inverse: Tensor, dtype: torch.dtype) -> Tensor:
        """(B|1, 1, H, W) step maps from (B|1, D) inverse permutations."""
        return inverse.to(dtype).view(-1, 1, self.config.height, self.config.width)

    def _logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        b = x.shape[0]
        inv = torch.from_numpy(np.array(ordering.inverse)).to(x.device)[None]  # (1, D)
        img = x.view(b, 1, self.config.height, self.config.width)
        return (self._net(img, self._steps(inv, x.dtype)) + self.pixel_bias).reshape(b, -1)

    def training_loss(self, x: Tensor) -> Tensor:
        if not self.config.order_agnostic:
            return super().training_loss(x)
        c = self.config
        perm = draw_orderings(c.train_orderings, x.shape[0], c.height, c.width, x.device)  # (B, D)
        steps = self._steps(torch.argsort(perm, dim=1), x.dtype)  # (B, 1, H, W)
        logits = self._net(x.view(-1, 1, c.height, c.width), steps) + self.pixel_bias
        return F.binary_cross_entropy_with_logits(logits.flatten(1), x, reduction="none").sum(1).mean()

    def stepper(self, x: Tensor, ordering: Ordering) -> Stepper:
        return _WindowStepper(self, x, ordering)


class _WindowStepper(Stepper):
    """Computes, for each pixel, only the cone of positions that reach it: the first layer on the
    window of radius ``reach - first_kernel//2`` around it, each following layer on a window
    ``kernel//2`` smaller, the head on the pixel alone. The image and the masks are zero-padded by
    ``reach`` once, so every window is a plain crop and the result equals the full pass."""

    def __init__(self, m: LocallyMaskedPixelCNN, x: Tensor, ordering: Ordering):
        self.m, self.x = m, x
        self.h, self.w = m.config.height, m.config.width
        e = m.reach
        inv = torch.from_numpy(np.array(ordering.inverse)).to(x.device)[None]
        steps = m._steps(inv, x.dtype)  # (1, 1, H, W)
        self.masks = [F.pad(mk.to(x.dtype).view(1, -1, self.h, self.w), (e, e, e, e)) for mk in m._masks(steps)]
        img = x.view(-1, 1, self.h, self.w)
        self.xp = F.pad(torch.cat([img, torch.ones_like(img)], 1), (e, e, e, e))  # (B, 2, H+2e, W+2e)

    def logits(self, pixel: int) -> Tensor:
        m, cfg = self.m, self.m.config
        r, c = divmod(pixel, self.w)
        e = m.reach
        r, c = r + e, c + e  # in padded coordinates

        def crop(t: Tensor, rad: int) -> Tensor:
            return t[:, :, r - rad : r + rad + 1, c - rad : c + rad + 1]

        rad = e - cfg.first_kernel // 2
        h = _gate(m.first(crop(self.xp, e), crop(self.masks[0], rad).flatten(2), pad=False))  # (B, C, 2rad+1, 2rad+1)
        q = cfg.kernel // 2
        for conv, res in zip(m.convs, m.res, strict=True):
            rad -= q
            inner = h[:, :, q : h.shape[2] - q, q : h.shape[3] - q]
            h = inner + res(_gate(conv(h, crop(self.masks[1], rad).flatten(2), pad=False)))
        out = m.out2(torch.relu(m.out1(torch.relu(h))))  # (B, 1, 1, 1)
        return out[:, 0, 0, 0] + m.pixel_bias[r - e, c - e]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.x[:, pixel] = value
        r, c = divmod(pixel, self.w)
        self.xp[:, 0, r + self.m.reach, c + self.m.reach] = value

    def select(self, index: Tensor) -> None:
        self.x, self.xp = _take(self.x, index), _take(self.xp, index)
