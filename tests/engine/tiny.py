"""Tiny versions of every family for exact checks (all 2^D images enumerable)."""

from __future__ import annotations

import pytest
import torch

from engine.models import build_model, family_class
from engine.ordering import make_ordering

H, W = 2, 4

#: family -> list of (label, config) small enough for exhaustive checks
TINY_CONFIGS: dict[str, list[tuple[str, dict]]] = {
    "fvsbn": [("fvsbn", {})],
    "mlp": [("mlp", {"hidden": 3})],
    "nade": [("nade", {"hidden": 5})],
    "made": [
        ("made", {"hidden": (7, 6)}),
        ("made-agnostic", {"hidden": (9,), "order_agnostic": True, "num_masks": 4, "direct": True}),
        ("made-scans", {"hidden": (8,), "order_agnostic": True, "order_set": "scans", "num_masks": 6, "direct": True}),
        ("made-rows", {"hidden": (8,), "order_agnostic": True, "order_set": "rows", "num_masks": 5, "direct": True}),
        ("made-member-bias", {"hidden": (6, 5), "order_agnostic": True, "order_set": "scans", "num_masks": 4, "member_bias": True}),
    ],
    "pixelcnn": [("pixelcnn", {"channels": 3, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 4})],
    "lmconv": [
        ("lmconv", {"channels": 3, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 4}),
        ("lmconv-agnostic", {"channels": 2, "layers": 1, "kernel": 3, "first_kernel": 5, "head": 3, "order_agnostic": True}),
        ("lmconv-context", {"channels": 3, "layers": 1, "kernel": 3, "first_kernel": 3, "head": 5, "order_agnostic": True,
                            "context": 3}),
    ],
    "lstm": [
        ("lstm", {"hidden": 5, "layers": 2, "embed": 4}),
        ("lstm-agnostic", {"hidden": 4, "layers": 1, "embed": 3, "order_agnostic": True}),
    ],
    "transformer": [
        ("transformer", {"d_model": 8, "layers": 2, "heads": 2, "mlp_ratio": 2}),
        ("transformer-fixed-order", {"d_model": 4, "layers": 1, "heads": 1, "mlp_ratio": 1, "order_agnostic": False}),
    ],
}


def all_tiny():
    return [(label, fam, cfg) for fam, items in TINY_CONFIGS.items() for label, cfg in items]


def make_tiny(family: str, cfg: dict, ordering_name: str = "raster", seed: int = 0, std: float = 0.7):
    """A tiny model with random (not trained) weights large enough to make conditionals vary.

    Skips the test only where the family declares that it cannot be built in the ordering (the
    gated PixelCNN: raster only); a family that claims an ordering and then refuses it fails."""
    torch.manual_seed(seed)
    o = make_ordering(ordering_name, H, W, seed=seed)
    ok, why = family_class(family).builds_in(o)
    if not ok:
        pytest.skip(f"{family} declares it cannot be built in the {ordering_name} ordering: {why}")
    m = build_model(family, dict(cfg, height=H, width=W), o)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.double()
