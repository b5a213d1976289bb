"""Representation learning: how linearly separable the digit classes are in an unconditional
model's hidden features, against the same classifier on the raw pixels.

    python bench/linear_probe.py                              # the bundled NADE, MADE and PixelCNN
    python bench/linear_probe.py --train-images 10000 --json

The features, computed once for every image of the three splits of binarized MNIST (float32, no
gradients, eval mode):

* ``pixels``: the 784 binary pixels themselves (the baseline);
* ``nade``: NADE's hidden units after the last pixel, ``sigmoid(c + sum_s W[s] x_s)`` over all 784
  pixels. This is the one hidden state that has seen the whole image; the mean over steps would
  mix it with the early steps' states, which see only the first rows (mostly blank) and so add
  features that say little about the digit;
* ``made``: the hidden layer of the raster MADE (1,000 masked ReLU units of the whole image);
* ``pixelcnn``: the gated PixelCNN's last horizontal-stack layer (32 channels at every position),
  pooled over positions two ways: the mean over the whole image (32 features), and the mean over
  each cell of a 4x4 grid of 7x7 blocks (512 features, about as many as NADE's), which keeps where
  on the page a feature fired.

The classifier is multinomial logistic regression in torch (a linear map and a bias, cross-entropy
plus ``lam/2 |W|^2``), on features standardised with the training split's mean and deviation,
fitted by full-batch L-BFGS. ``lam`` is chosen from a grid by the validation split's accuracy; the
test accuracy of that fit is reported. Labels come from :func:`engine.datasets.load_labels` (the
recovered labels of the binarized split).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.datasets import load_dataset, load_labels  # noqa: E402
from engine.models.heads import scale_levels  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parents[1] / "resources" / "checkpoints"
LAMBDAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
Features = Callable[[torch.Tensor], torch.Tensor]


def pixelcnn_columns(width: int) -> dict[str, slice]:
    """The two pools in :func:`pixelcnn_features`' C + 16 C columns."""
    c = width // 17
    return {"pixelcnn-mean": slice(0, c), "pixelcnn-grid": slice(c, None)}


def nade_features(model) -> Features:
    """NADE's hidden state after the last pixel: sigmoid of the bias plus every pixel's row of W."""
    def f(x: torch.Tensor) -> torch.Tensor:
        xo = scale_levels(x, model.levels)[:, model.perm]  # W's rows are in step order
        return torch.sigmoid(model.c + xo @ model.w)
    return f


def made_features(model) -> Features:
    """The raster MADE's hidden layer(s): the last one, masked as the model computes it."""
    masks = model._masks(model.ordering, 0)

    def f(x: torch.Tensor) -> torch.Tensor:
        h = scale_levels(x, model.levels)
        for layer, m, b in zip(model.layers, masks[: len(model.layers)], model._hidden_biases(0), strict=True):
            h = torch.relu(F.linear(h, layer.weight * m, b))
        return h
    return f


def pixelcnn_last_layer(model, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) the last horizontal-stack layer of an unconditional gated PixelCNN."""
    b = x.shape[0]
    img = scale_levels(x, model.levels).view(b, 1, model.config.height, model.config.width)
    cv, ch = model._class_terms(None)
    return model._horizontal(img, model._links(model._vertical(img, cv), ch))


def pixelcnn_features(model) -> Features:
    """The last layer averaged over the whole image (C features), then over each cell of a 4x4 grid
    (16 C features), side by side: both pools come from one pass (:func:`pixelcnn_columns`)."""
    def f(x: torch.Tensor) -> torch.Tensor:
        h = pixelcnn_last_layer(model, x)
        return torch.cat([h.mean((2, 3)), F.adaptive_avg_pool2d(h, 4).flatten(1)], 1)
    return f


@torch.no_grad()
def extract(fn: Features, x: np.ndarray, chunk: int) -> torch.Tensor:
    xt = torch.as_tensor(x, dtype=torch.float32)
    return torch.cat([fn(part) for part in xt.split(chunk)]).float()


def fit(xtr: torch.Tensor, ytr: torch.Tensor, lam: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: (weights (F, 10), bias (10,))."""
    w = torch.zeros(xtr.shape[1], 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def accuracy(x: torch.Tensor, y: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> float:
    return float(((x @ wb[0] + wb[1]).argmax(1) == y).float().mean())


def probe(feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], steps: int) -> dict:
    """Standardise on the training split, choose lambda on validation, report test accuracy."""
    mu, sd = feats["train"].mean(0), feats["train"].std(0).clamp_min(1e-6)
    z = {s: (f - mu) / sd for s, f in feats.items()}
    by_lam = {}
    for lam in LAMBDAS:
        wb = fit(z["train"], labels["train"], lam, steps)
        by_lam[lam] = (accuracy(z["valid"], labels["valid"], wb), wb)
    best = max(LAMBDAS, key=lambda lam: by_lam[lam][0])
    wb = by_lam[best][1]
    return {"features": int(z["train"].shape[1]), "lambda": best, "valid_accuracy": by_lam[best][0],
            "train_accuracy": accuracy(z["train"], labels["train"], wb), "test_accuracy": accuracy(z["test"], labels["test"], wb),
            "valid_by_lambda": {str(lam): by_lam[lam][0] for lam in LAMBDAS}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="the data folder (default: $PIXELCHAIN_DATA, else the download cache)")
    p.add_argument("--train-images", type=int, default=None, help="use the first N training images (default: all 50,000)")
    p.add_argument("--steps", type=int, default=300, help="L-BFGS iterations per fit (default: %(default)s)")
    p.add_argument("--valid-images", type=int, default=None, help="use the first N validation images (default: all 10,000)")
    p.add_argument("--only", default=None, help="comma-separated feature sets (pixels, nade, made, pixelcnn)")
    p.add_argument("--chunk", type=int, default=16,
                   help="images per feature pass (default: %(default)s; the PixelCNN is fastest on a CPU in small pieces)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    x = {s: load_dataset("binarized-mnist", s, a.data) for s in ("train", "valid", "test")}
    y = {s: torch.as_tensor(load_labels("binarized-mnist", s, a.data)) for s in ("train", "valid", "test")}
    if a.train_images:  # the training split is sorted by nothing in particular, so its head is a fair sample
        x["train"], y["train"] = x["train"][: a.train_images], y["train"][: a.train_images]
    if a.valid_images:
        x["valid"], y["valid"] = x["valid"][: a.valid_images], y["valid"][: a.valid_images]

    def model(name: str):
        m = load_checkpoint(CHECKPOINTS / f"{name}.safetensors").model.float().eval()
        return m

    sets: dict[str, Callable[[], Features]] = {
        "pixels": lambda: (lambda t: t),
        "nade": lambda: nade_features(model("nade-raster")),
        "made": lambda: made_features(model("made-raster")),
        "pixelcnn": lambda: pixelcnn_features(model("pixelcnn-raster")),
    }
    names = a.only.split(",") if a.only else list(sets)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        fn = sets[name]()
        feats = {s: extract(fn, x[s], a.chunk) for s in x}
        t1 = time.perf_counter()
        parts = pixelcnn_columns(feats["train"].shape[1]) if name == "pixelcnn" else {name: slice(None)}
        for label, cols in parts.items():
            t2 = time.perf_counter()
            r = probe({s: f[:, cols] for s, f in feats.items()}, y, a.steps)
            r.update(name=label, extract_seconds=t1 - t0, fit_seconds=time.perf_counter() - t2)
            rows.append(r)
            if not a.json:
                print(f"{label:14s} {r['features']:5d} features  lambda {r['lambda']:g}  train {r['train_accuracy']:.4f}  "
                      f"valid {r['valid_accuracy']:.4f}  test {r['test_accuracy']:.4f}  "
                      f"({r['extract_seconds']:.0f}s features, {r['fit_seconds']:.0f}s fits)", flush=True)
    if a.json:
        print(json.dumps({"train_images": len(x["train"]), "valid_images": len(x["valid"]), "test_images": len(x["test"]),
                          "steps": a.steps, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
