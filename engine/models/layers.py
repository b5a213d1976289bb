"""Small pieces of network that several families build from: the gated activation of the two
PixelCNNs and the start of an output bias at the pixel marginals.

Only parameter-free functions live here, so moving a family onto them leaves its parameter names,
and so every checkpoint, as they were.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

__all__ = ["gate", "init_bias_at_marginals"]


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
