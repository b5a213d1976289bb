"""Time the pinned pixel's influence map (one pass per earlier pixel) for each bundled model.

    python bench/influence.py [CKPT ...]

For a test digit and a pixel two thirds of the way through the ordering (as the app's screenshot
pins), one thread, as the app's worker runs it: seconds for the whole map, and the largest change.
"""

from __future__ import annotations

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


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    paths = paths or sorted(str(p) for p in (ROOT / "resources" / "checkpoints").glob("*.safetensors"))
    image = load_split("test")[3010].astype(np.float32)
    print("| model | pixel (step) | seconds | largest change |")
    print("|---|---|---|---|")
    for path in paths:
        model = load_checkpoint(path).model
        order = model.ordering
        ink = np.flatnonzero(image)
        pixel = int(ink[np.argsort(order.inverse[ink])[len(ink) * 2 // 3]])
        t0 = time.perf_counter()
        inf = drain(pixel_influence_steps(model, image, pixel, order))[1]
        secs = time.perf_counter() - t0
        d = inf.delta[np.isfinite(inf.delta)]
        print(f"| {Path(path).stem} | {inf.step} | {secs:.2f} | {np.abs(d).max():.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
