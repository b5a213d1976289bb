"""Colour maps shared by the canvas overlays and the heatmaps (pyqtgraph's perceptual maps)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyqtgraph as pg

__all__ = ["lookup_table", "PROB_MAP", "NLL_MAP", "STEP_MAP", "DIFF_MAP", "EVIDENCE_MAP"]

PROB_MAP = "viridis"  #: p(x_i = 1 | x_<i): 0..1
NLL_MAP = "inferno"  #: -log p(x_i | x_<i): nats
STEP_MAP = "plasma"  #: step number in the ordering
DIFF_MAP = "CET-D1"  #: signed differences: blue - white - red, perceptually uniform and symmetric
EVIDENCE_MAP = "CET-D4"  #: evidence between two classes: blue - black - red, its neutral middle as dark as the theme


@lru_cache(maxsize=8)
def lookup_table(n: int, name: str = STEP_MAP) -> np.ndarray:
    """(n, 3) uint8 colours from the start to the end of a colour map."""
    lut = pg.colormap.get(name).getLookupTable(0.0, 1.0, nPts=n, alpha=False)
    out = np.asarray(lut, dtype=np.uint8)[:, :3]
    out.setflags(write=False)
    return out
