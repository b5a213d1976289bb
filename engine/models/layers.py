"""Small pieces of network that several families build from: the gated activation of the two
PixelCNNs and the start of an output bias at the pixel marginals.

Only parameter-free functions live here, so moving a family onto them leaves its parameter names,
and so every checkpoint, as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .base import ARModel, ModelConfig

__all__ = ["check_same_levels", "gate", "init_bias_at_marginals", "output_head"]


def gate(a: Tensor, dim: int = 1) -> Tensor:
    """``tanh(f) * sigmoid(g)`` of the two halves ``f, g`` of ``a`` along ``dim`` (the filter half
    first): the gated activation of van den Oord et al. 2016. ``dim=1`` for (B, 2C, ...) maps,
    ``dim=-1`` for channel-last tensors."""
    f, g = a.chunk(2, dim=dim)
    return torch.tanh(f) * torch.sigmoid(g)


def init_bias_at_marginals(bias: Tensor, marginals: Tensor, *, perm: Tensor | None = None,
                           zero: Iterable[Tensor | None] = ()) -> None:
    """Set ``bias`` to the logits of the pixel ``marginals`` (D,), so that an untrained model starts
    at the independent-pixel model instead of at p = 1/2 everywhere; the logits are clipped at
    1e-3 from 0 and 1 (MNIST's border pixels are never on).

    ``perm`` (step -> pixel) reads them in step order, for a family whose bias is indexed by step;
    the bias may have any shape holding D values (a (H, W) map). The tensors in ``zero``, biases of
    a last layer that adds to ``bias``, start at zero so the sum is the marginal's logit. No gradient
    is recorded.

    With K > 2 levels, ``marginals`` is (D, K), each level's frequency: a softmax head's bias (D K
    values) starts at their logs, so the untrained model is again the independent-pixel one; a
    mixture head's bias, whose numbers are no level's, is left as it was."""
    with torch.no_grad():
        if marginals.dim() == 2:
            if bias.numel() != marginals.numel():
                return
            logit = torch.log(marginals.to(bias) + 1e-3)
        else:
            logit = torch.logit(marginals.to(bias), eps=1e-3)
        if perm is not None:
            logit = logit[perm]
        bias.copy_(logit.view_as(bias))
        for t in zero:
            if t is None:
                raise ValueError("a bias to start at zero is missing (the layer was built without one)")
            t.zero_()


def check_same_levels(model: ARModel, src: ARModel) -> None:
    """Refuse to start ``model`` from ``src`` when their pixels differ: the output layer's shape and
    meaning follow the levels and the head, so no weight of one says anything about the other."""
    a, b = model.config, src.config
    if src.family != model.family:
        return  # the family's own check says so
    if (a.levels, a.output) != (b.levels, b.output) or (a.output == "logistic-mixture" and a.components != b.components):
        def pixels(c: ModelConfig) -> str:
            extra = f" of {c.components} components" if c.output == "logistic-mixture" else ""
            return f"{c.levels} levels with a {c.output} head{extra}"
        raise ValueError(f"the checkpoint's pixels have {pixels(b)}, this model's {pixels(a)}: "
                         "a model can only grow from one with the same levels and head")


def output_head(out1: nn.Conv2d, out2: nn.Conv2d, h: Tensor, binary: bool) -> Tensor:
    """The 1x1 head ``out2(relu(out1(relu(h))))`` of a (B, C, H, W) stream: (B, H, W) logits, or
    (B, H, W, P) head numbers. With P > 1 it runs channel-last as two matrix products, so a pixel's P
    numbers come out side by side, as the output head reads them, without a transposing copy of the
    largest tensor of the network (at K = 256, P = 256 numbers per pixel against C or ``head`` for
    the stream)."""
    if binary:
        return out2(torch.relu(out1(torch.relu(h))))[:, 0]
    a = torch.relu(F.linear(torch.relu(h).permute(0, 2, 3, 1), out1.weight[:, :, 0, 0], out1.bias))
    return F.linear(a, out2.weight[:, :, 0, 0], out2.bias)


def class_embedding(classes: int, width: int) -> nn.Embedding | None:
    """A learned vector of ``width`` numbers per class that a conditional family adds where it forms
    its hidden state or logits; None for an unconditional model (``classes == 0``). It starts at
    zero, so a conditional model started from an unconditional one's weights computes exactly its
    conditionals, for every class, and training moves the classes apart from there."""
    if not classes:
        return None
    emb = nn.Embedding(classes, width)
    nn.init.zeros_(emb.weight)
    return emb


def class_vectors(emb: nn.Embedding | None, y: Tensor | None) -> Tensor | None:
    """(B, width) the embedding of each image's class; None for an unconditional model. A
    conditional model's family is always given the classes (the marginal is formed above it)."""
    if emb is None:
        return None
    if y is None:
        raise ValueError("a class-conditional model needs the class of each image")
    return emb(y)
