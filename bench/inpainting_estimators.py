"""Plain importance sampling against sequential Monte Carlo for the inpainting NLL where the exact
conditional is out of reach (a fixed-order model with known pixels after hidden ones).

    python bench/inpainting_estimators.py [CKPT] [--regions centre,left,top] [--images 40] [--samples 16,256]

Both estimators are biased towards a lower NLL for finite samples (log of an unbiased estimate of
p(known)); the one with less variance gives the higher, nearer figure, and more samples move both
up. Prints, per region and estimator, the mean NLL of the hidden pixels over a random subset of
test digits, the mean effective sample size of the final weights and the time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import load_checkpoint
from engine.data import load_split
from engine.tasks.inpaint_eval import evaluate_inpainting, region_mask

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=str(ROOT / "resources" / "checkpoints" / "fvsbn-raster.safetensors"))
    p.add_argument("--regions", default="centre,left,top")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--samples", default="16,256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint).model
    x = load_split("test")
    idx = np.random.default_rng(a.seed).choice(len(x), a.images, replace=False)
    rows = []
    for region in a.regions.split(","):
        hidden = region_mask(region)
        for s in [int(v) for v in a.samples.split(",")]:
            for method in ("importance", "smc"):
                t = time.perf_counter()
                r = evaluate_inpainting(model, x[idx], hidden, method=method, samples=s, seed=a.seed)
                rows.append({"region": region, "method": r.method, "samples": s, "nll": r.nll, "stderr": r.stderr,
                             "mean_ess": r.mean_ess, "seconds": time.perf_counter() - t})
    if a.json:
        print(json.dumps({"checkpoint": a.checkpoint, "images": a.images, "rows": rows}))
        return
    print(f"{Path(a.checkpoint).name}: {a.images} random test digits (seed {a.seed}); NLL of the hidden pixels, nats")
    print(f"{'region':8} {'method':11} {'samples':>7} {'NLL':>8} {'ESS':>7} {'s':>6}")
    for r in rows:
        print(f"{r['region']:8} {r['method']:11} {r['samples']:7d} {r['nll']:8.2f} {r['mean_ess']:7.1f} {r['seconds']:6.1f}")


if __name__ == "__main__":
    main()
