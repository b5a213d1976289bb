"""Time the pinned pixel's influence map for each bundled model: the reference (one teacher-forced
pass per flipped image) and the fast path (:meth:`~engine.models.base.ARModel.pixel_logit_flips`).

    python bench/influence.py [--pixel ROW,COL] [--no-reference] [CKPT ...]

For a test digit and a pixel late in the ordering ((20, 14) by default: step 574 of 784 in raster),
one thread, as the app's worker runs it: seconds for the whole map both ways, and the largest
difference between the two maps (float32 rounding only: both are exact counterfactuals).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.data import load_split  # noqa: E402
from engine.figures import pixel_influence_steps  # noqa: E402
from engine.steps import drain  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="checkpoints (default: the bundled ones)")
    ap.add_argument("--pixel", default="20,14", help="ROW,COL of the pinned pixel")
    ap.add_argument("--no-reference", action="store_true", help="time the fast path only")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    paths = a.paths or sorted(str(p) for p in (ROOT / "resources" / "checkpoints").glob("*.safetensors"))
    row, col = (int(v) for v in a.pixel.split(","))
    image = load_split("test")[3010].astype(np.float32)
    print("| model | pixel (step) | reference s | fast s | speed-up | largest change | largest difference |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        model = load_checkpoint(path).model
        pixel = row * model.config.width + col
        t0 = time.perf_counter()
        inf = drain(pixel_influence_steps(model, image, pixel))[1]
        fast = time.perf_counter() - t0
        d = inf.delta[np.isfinite(inf.delta)]
        ref_s, speed, diff = "–", "–", "–"
        if not a.no_reference:
            t0 = time.perf_counter()
            ref = drain(pixel_influence_steps(model, image, pixel, fast=False))[1]
            slow = time.perf_counter() - t0
            ref_s, speed = f"{slow:.2f}", f"{slow / fast:.0f}x"
            diff = f"{np.nanmax(np.abs(ref.delta - inf.delta)):.1e}"
        print(f"| {Path(path).stem} | ({row}, {col}) ({inf.step}) | {ref_s} | {fast:.2f} | {speed} | {np.abs(d).max():.3f} | {diff} |",
              flush=True)


if __name__ == "__main__":
    main()
