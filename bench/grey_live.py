"""The live view with grey models: heatmaps after a stroke, and 16 samples with the fast sampler
against the reference one, for each bundled grey model (or the checkpoints given).

    python bench/grey_live.py                                  # every bundled model of K > 2 levels
    python bench/grey_live.py resources/checkpoints/nade-grey256.safetensors --digits 50
    python bench/grey_live.py --skip-sampling --json

**Heatmaps.** After a stroke the app computes the figures of the whole canvas on its compute worker
(one torch thread): :func:`engine.figures.pixel_figures`, one teacher-forced pass that gives every
pixel's whole K-way conditional, the expected intensity and the NLL of the drawn level
(:func:`app.jobs.figures_job`). This times that same call on grey test digits (a stroke changes
the canvas, so each call gets a different digit), after one call of warm-up; the goal is < 150 ms.
The minimum is the figure least disturbed by other work on the machine. The repaint of the
heatmaps is not included (``bench/gui_latency.py`` times the whole path in the window).

**Sampling.** ``model.sample(16, fast=True/False, generator=...)`` with the same seed: seconds for
each and whether the two draw the same 16 images (the pixels that differ are counted: a level
sits where a uniform falls in the CDF, so float rounding of the two paths can move a rare one).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.datasets import dataset_of, load_dataset  # noqa: E402
from engine.figures import pixel_figures  # noqa: E402

GOAL_MS = 150.0


def grey_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints in ``folder`` whose model has more than two levels."""
    out = []
    for path in sorted(folder.glob("*.safetensors")):
        if load_checkpoint(path, device="cpu").model.levels > 2:
            out.append(path)
    return out


def time_heatmaps(model, digits: np.ndarray) -> list[float]:
    """Milliseconds of :func:`pixel_figures` per digit (the first call, a warm-up, not counted)."""
    pixel_figures(model, digits[0])
    times = []
    for img in digits:
        t0 = time.perf_counter()
        figs = pixel_figures(model, img)
        times.append((time.perf_counter() - t0) * 1000)
        assert figs.table is not None and figs.table.shape == (model.size, model.levels)
    return times


def time_sampling(model, n: int, seed: int, fast: bool) -> tuple[float, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        x = model.sample(n, generator=gen, fast=fast)
    return time.perf_counter() - t0, x.cpu().numpy()


def bench(path: Path, digits: int, samples: int, seed: int, sampling: bool, data: str | None) -> dict:
    ck = load_checkpoint(path, device="cpu")
    model = ck.model.eval()
    test = load_dataset(dataset_of(ck.meta), "test", data, levels=model.levels)[:digits]
    ms = time_heatmaps(model, test)
    row = {
        "model": ck.meta.get("name", path.stem), "family": model.family, "levels": model.levels,
        "head": getattr(model.config, "output", "?"), "parameters": model.num_parameters(),
        "heatmap_ms_median": statistics.median(ms), "heatmap_ms_min": min(ms), "heatmap_ms_max": max(ms), "digits": len(ms),
        "heatmap_goal_ms": GOAL_MS,
    }
    if sampling:
        fast_s, xf = time_sampling(model, samples, seed, True)
        ref_s, xr = time_sampling(model, samples, seed, False)
        row.update({
            "samples": samples, "seed": seed, "fast_s": fast_s, "reference_s": ref_s, "speedup": ref_s / fast_s,
            "same_images": bool(np.array_equal(xf, xr)), "pixels_differ": int((xf != xr).sum()),
            "max_level_gap": int(np.abs(xf - xr).max()),
        })
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="checkpoints to measure (default: the bundled grey ones)")
    p.add_argument("--digits", type=int, default=30, help="grey test digits whose heatmaps are timed")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the app's workers use 1)")
    p.add_argument("--skip-sampling", action="store_true")
    p.add_argument("--data", default=None, help="folder of the data sets (default: PIXELCHAIN_DATA or the cache)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = a.data
    if data is None and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
        data = str(ROOT.parent / "shared" / "data")
    paths = [Path(c) for c in a.checkpoints] or grey_checkpoints(ROOT / "resources" / "checkpoints")
    if not paths:
        print("no grey checkpoints to measure (bundle one or pass its path)", file=sys.stderr)
        return 1
    for path in paths:
        levels = load_checkpoint(path, device="cpu").model.levels
        if levels <= 2:
            print(f"{path}: not a grey model ({levels} levels)", file=sys.stderr)
            return 2
    rows = []
    if not a.json:
        print(f"torch {torch.__version__}, {a.threads} thread(s), {platform.processor() or platform.machine()}")
        print(f"{'model':<22}{'family':<10}{'K':>4} {'params':>10} {'heatmap ms (min / median / max)':>32}"
              + ("" if a.skip_sampling else f" {'16 fast s':>10} {'16 ref s':>9} {'speed-up':>9}  same images"))
    for path in paths:
        r = bench(path, a.digits, a.samples, a.seed, not a.skip_sampling, data)
        rows.append(r)
        if not a.json:
            line = (f"{r['model'][:21]:<22}{r['family']:<10}{r['levels']:>4} {r['parameters']:>10,} "
                    f"{r['heatmap_ms_min']:>13.1f} / {r['heatmap_ms_median']:.1f} / {r['heatmap_ms_max']:<8.1f}")
            if not a.skip_sampling:
                same = "yes" if r["same_images"] else f"no: {r['pixels_differ']} of {r['samples'] * 784} pixels differ"
                line += f" {r['fast_s']:>10.2f} {r['reference_s']:>9.2f} {r['speedup']:>8.1f}x  {same}"
            print(line, flush=True)
    if a.json:
        print(json.dumps({"torch": torch.__version__, "threads": a.threads, "rows": rows}, indent=1,
                         default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
