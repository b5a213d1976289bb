"""How well the "how digit-like" scores tell test digits from inputs that are not digits.

    python bench/ood.py                              # every bundled checkpoint (or runs/*.safetensors)
    python bench/ood.py runs/made.safetensors --max-images 2000 --json

Positives: test digits. Negatives, made here from a seed: random noise at several ink densities,
inverted test digits, test digits shifted 6-9 pixels off-centre (zero fill), and simple shapes
(lines, rectangle outlines, circle outlines, 1-3 pixels thick, random size and place). For each
checkpoint the table gives the AUROC (1: every digit scores above every negative, 0.5: chance,
below 0.5: the score prefers the negatives) of three scores: the model's log-likelihood, the
likelihood ratio against the per-pixel independent background model fitted on the training split
(:mod:`engine.tasks.score`), and, as a baseline, the background model's own log-likelihood.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine.checkpoint import load_checkpoint
from engine.data import load_split
from engine.tasks.score import auroc, load_background, model_log_prob

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression import default_checkpoints  # noqa: E402


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(x)
    for k, im in enumerate(x.reshape(-1, 28, 28)):
        dy, dx = rng.integers(6, 10, 2) * rng.choice([-1, 1], 2)
        src = im[max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
        out[k].reshape(28, 28)[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def shapes(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((n, 784), np.uint8)
    for k in range(n):
        img = Image.new("L", (28, 28), 0)
        d = ImageDraw.Draw(img)
        width = int(rng.integers(1, 4))
        if kind == "lines":
            p = rng.integers(2, 26, 4)
            while abs(p[0] - p[2]) + abs(p[1] - p[3]) < 8:
                p = rng.integers(2, 26, 4)
            d.line([int(v) for v in p], fill=255, width=width)
        else:
            size = rng.integers(8, 22, 2) if kind == "rectangles" else np.repeat(rng.integers(8, 22), 2)
            x0, y0 = rng.integers(1, 28 - size)
            box = [int(x0), int(y0), int(x0 + size[0]), int(y0 + size[1])]
            (d.rectangle if kind == "rectangles" else d.ellipse)(box, outline=255, width=width)
        out[k] = (np.asarray(img) > 127).reshape(-1)
    return out


def negatives(digits: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sets = {f"noise {int(100 * p)}%": (rng.uniform(size=(n, 784)) < p).astype(np.uint8) for p in (0.02, 0.1, 0.3, 0.5)}
    base = digits[:n]
    sets["inverted digits"] = 1 - base
    sets["shifted digits"] = shifted(base, rng)
    for kind in ("lines", "rectangles", "circles"):
        sets[kind] = shapes(kind, n, rng)
    return sets


def bench_one(path: str, digits: np.ndarray, sets: dict[str, np.ndarray], bg) -> dict:
    model = load_checkpoint(path).model
    pos_lp = model_log_prob(model, digits)
    pos_bg = bg.log_prob(digits)
    rows = {}
    for name, neg in sets.items():
        lp, b = model_log_prob(model, neg), bg.log_prob(neg)
        rows[name] = {"log_prob": auroc(pos_lp, lp), "llr": auroc(pos_lp - pos_bg, lp - b), "background": auroc(pos_bg, b)}
    return {"checkpoint": path, "family": model.family, "auroc": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*")
    p.add_argument("--max-images", type=int, default=None, help="test digits to use (default: all 10000)")
    p.add_argument("--n-negatives", type=int, default=1000, help="images per kind of non-digit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    paths = a.checkpoints or default_checkpoints()
    if not paths:
        print("no checkpoints given or found in resources/checkpoints or runs/", file=sys.stderr)
        return 2
    digits = load_split("test", a.data)
    if a.max_images:
        digits = digits[: a.max_images]
    sets = negatives(digits, a.n_negatives, a.seed)
    bg = load_background(a.data)
    results = [bench_one(path, digits, sets, bg) for path in paths]
    if a.json:
        print(json.dumps({"n_digits": len(digits), "n_negatives": a.n_negatives, "seed": a.seed, "results": results}))
        return 0
    print(f"AUROC, {len(digits)} test digits against {a.n_negatives} images of each kind "
          "(log p: model log-likelihood; LLR: log p - log p_background; bg: background alone)")
    for r in results:
        print(f"\n{Path(r['checkpoint']).name} ({r['family']})")
        print(f"  {'negatives':<18} {'log p':>7} {'LLR':>7} {'bg':>7}")
        for name, v in r["auroc"].items():
            print(f"  {name:<18} {v['log_prob']:7.3f} {v['llr']:7.3f} {v['background']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
