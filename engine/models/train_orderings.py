"""The orderings an order-agnostic family trains over (``train_orderings`` in its config): checked
when the model is built, drawn one per image in training, and listed for inference (the fixed ones
among them are the orderings whose conditionals were trained).

"random" in a list of names stands for a fresh uniformly random ordering; the other names are
those of :func:`engine.ordering.make_ordering`. Shared by the sequence models (LSTM, Transformer)
and the locally masked PixelCNN.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..ordering import Ordering, make_ordering

__all__ = ["check_orderings", "draw_orderings", "named_orderings", "random_orderings"]


def random_orderings(b: int, d: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """(B, D) one uniformly random permutation per image, from ``generator`` (a training run's own,
    so that it is reproducible from its seed; None: the global torch RNG)."""
    return torch.argsort(torch.rand(b, d, generator=generator), dim=1).to(device)


def check_orderings(names: tuple[str, ...] | list[str], height: int, width: int) -> None:
    """Raises ValueError for an empty list of training orderings or an unknown name in it."""
    if not names:
        raise ValueError("order-agnostic training needs at least one training ordering")
    for name in set(names) - {"random"}:
        make_ordering(name, height, width)  # raises on unknown names


def named_orderings(names: tuple[str, ...] | list[str], height: int, width: int) -> list[Ordering]:
    """The fixed orderings among the training orderings ``names``: each once, in the order given,
    without "random"."""
    return list(_named_orderings(tuple(names), height, width))


@functools.lru_cache(maxsize=32)
def _named_orderings(names: tuple[str, ...], height: int, width: int) -> tuple[Ordering, ...]:
    # lru_cache is thread-safe and keys on the names themselves (equality, not only the hash);
    # Orderings are immutable, so every caller may share the tuple
    return tuple(make_ordering(n, height, width) for n in dict.fromkeys(names) if n != "random")


def draw_orderings(
    names: tuple[str, ...] | list[str], b: int, height: int, width: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """(B, D) one ordering per image (step -> pixel), each drawn uniformly from ``names`` with
    ``generator`` (None: the global torch RNG); "random" stands for a fresh uniformly random ordering."""
    d = height * width
    if all(n == "random" for n in names):
        return random_orderings(b, d, device, generator)
    fixed = {n: torch.from_numpy(np.array(make_ordering(n, height, width).perm)) for n in sorted(set(names) - {"random"})}
    pick = torch.randint(len(names), (b,), generator=generator).tolist()
    return torch.stack([torch.randperm(d, generator=generator) if names[i] == "random" else fixed[names[i]] for i in pick]).to(device)
