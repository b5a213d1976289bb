"""Copy trained checkpoints into resources/checkpoints/ for the app, with measured test NLL.

    python scripts/bundle.py [--device cuda] [--dest DIR] [--max-images N] runs/made1000d_wd.safetensors:made-raster [more SRC:NAME[:K] ...]

For each: evaluate the test NLL in float32, store the weights in the smallest form that leaves the
reported NLL (two decimals) unchanged after reloading -- int8 with group-wise scales (weight
matrices; about half the size of float16), float16, else float32 -- and record the name, the
test NLL and its standard error in the checkpoint's metadata. With ``:K`` (order-agnostic models)
also the test NLL of the ensemble of K orderings (log-mean-exp), recorded as
``test_nll_ensembleK``. Prints a Markdown table row each. ``--max-images N`` measures on the first N
test images only (quick end-to-end checks; the recorded NLL is then not the test NLL).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.checkpoint import INT8, load_checkpoint, save_checkpoint  # noqa: E402
from engine.datasets import dataset_of, load_dataset  # noqa: E402
from engine.recipes import nll_metrics, with_metrics  # noqa: E402
from engine.train import evaluate  # noqa: E402

DEST = ROOT / "resources" / "checkpoints"


def test_images(ck, max_images: int | None = None):
    """The test split of the data set the checkpoint was trained on, at its model's levels."""
    return load_dataset(dataset_of(ck.meta), "test", levels=ck.model.levels)[:max_images]


def bundle(src: str, name: str, test=None, ensemble: int = 1, device: str = "cpu", dest: Path | None = None,
           max_images: int | None = None) -> str:
    """Bundle ``src`` as ``name``, measured on ``test`` (default: the test split of its data set)."""
    ck = load_checkpoint(src, device=device)
    if test is None:
        test = test_images(ck, max_images)
    t0 = time.perf_counter()
    nll, se = evaluate(ck.model, test)
    secs = time.perf_counter() - t0
    meta = with_metrics(dict(ck.meta, name=name), nll_metrics("test", nll, se))
    ens = ""
    if ensemble > 1:
        enll, ese = evaluate(ck.model, test, batch_size=500, ensemble=ensemble)
        meta = with_metrics(meta, nll_metrics("test", enll, ese, ensemble))
        ens = f"; ensemble of {ensemble}: {enll:.2f} ± {ese:.2f}"
    meta.pop("optimizer", None)
    dest = dest or DEST
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.safetensors"
    for dtype in (INT8, torch.float16, None):
        meta["weights_dtype"] = INT8 if dtype == INT8 else str(dtype or torch.float32).replace("torch.", "")
        save_checkpoint(out, ck.model, meta, dtype=dtype)
        reloaded = load_checkpoint(out, device=device).model
        nll2, _ = evaluate(reloaded, test)
        same = f"{nll2:.2f}" == f"{nll:.2f}"
        if same and ensemble > 1:
            same = f"{evaluate(reloaded, test, batch_size=500, ensemble=ensemble)[0]:.2f}" == f"{enll:.2f}"
        if same:
            break
    hist = ck.meta.get("history", [])
    valid = min((h["valid_nll"] for h in hist), default=float("nan"))
    epochs = ck.meta.get("epoch", len(hist))
    wall = sum(h.get("seconds", 0) for h in hist)
    m = ck.model
    return (
        f"| {name} | {m.family} | {m.ordering.label} | {m.num_parameters():,} | {epochs} "
        f"| {wall / 60:.0f} min, {ck.meta.get('device', '?')} | {valid:.2f} | {nll:.2f} ± {se:.2f}{ens}"
        f" ({nll / (m.size * math.log(2)):.4f} bits/dim) "
        f"| {out.stat().st_size / 2**20:.1f} MB ({meta['weights_dtype']}) | `{ck.meta.get('command', '')}` |"
        f"  <!-- eval {secs:.1f}s -->"
    )


def main(argv: list[str]) -> int:
    opts = {"--device": "cpu", "--dest": None, "--max-images": None}  # where to evaluate; where to write; first N test images
    while argv[:1] and argv[0] in opts and len(argv) > 1:
        opts[argv[0]], argv = argv[1], argv[2:]
    device, dest = opts["--device"], Path(opts["--dest"]) if opts["--dest"] else None
    max_images = int(opts["--max-images"]) if opts["--max-images"] else None
    print("| name | family | ordering | parameters | epochs | training | valid NLL | test NLL | file | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in argv:
        src, _, rest = arg.partition(":")
        name, _, k = rest.partition(":")
        print(bundle(src, name or Path(src).stem, None, int(k or 1), device, dest, max_images), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
