"""Images per second of a training step (forward, backward, fused Adam) for the deep families --
PixelCNN, LMConv, LSTM, Transformer -- at a few sizes, in float32 and under bf16 autocast, with and
without ``channels_last`` for the convolutional ones, and optionally under ``torch.compile``.

    python bench/deep_training_step.py                       # every family, its sizes, 2 threads
    python bench/deep_training_step.py --family pixelcnn --compile --threads 1,2
    python bench/deep_training_step.py --family lmconv --reference-lmconv --threads 1
    python bench/deep_training_step.py --json > figures.json
    python bench/deep_training_step.py --family pixelcnn --sizes 3,4 --threads 1 --levels 256 --output categorical
    python bench/deep_training_step.py --family pixelcnn --sizes 3,4 --threads 1 --levels 256 --output logistic-mixture --components 10

The figures are the median over the timed steps after warm-up steps, as images per second (higher is
better), and the epoch time they imply for the 50,000 training digits. ``--levels K`` times grey models
(K-level images, a ``categorical`` or ``logistic-mixture`` head); the default is the binary models. They say which path and which
size a CPU run should take: bf16 pays only where the CPU computes in it (AVX-512 BF16 or AMX), and a
convolution's memory layout decides which oneDNN kernel runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models import build_model  # noqa: E402
from engine.models.lmconv import _LMConv  # noqa: E402
from engine.train import bf16_is_native  # noqa: E402

_ORDERINGS = ["raster", "snake", "column", "column-snake", "hilbert", "diagonal", "spiral-in", "spiral-out"]

#: family -> [(label, config)], smallest first; the first of each is the size bundled before.
SIZES: dict[str, list[tuple[str, dict]]] = {
    "pixelcnn": [
        ("16ch x4", {"channels": 16, "layers": 4, "head": 32}),
        ("32ch x6", {"channels": 32, "layers": 6, "head": 64}),
        ("64ch x8", {"channels": 64, "layers": 8, "head": 128}),
        ("32ch x8", {"channels": 32, "layers": 8, "head": 64}),
        # the UvA deep learning course's gated PixelCNN (7 gated layers of 64 channels; 852k parameters
        # there, 848k here at K = 256 with a softmax head, 200k of them the per-pixel output bias)
        ("uva 64ch x7", {"channels": 64, "layers": 7, "head": 64}),
    ],
    "lmconv": [
        ("16ch x3", {"channels": 16, "layers": 3, "head": 32, "order_agnostic": True, "train_orderings": _ORDERINGS}),
        ("32ch x6", {"channels": 32, "layers": 6, "head": 64, "order_agnostic": True, "train_orderings": _ORDERINGS}),
        ("32ch x8", {"channels": 32, "layers": 8, "head": 64, "order_agnostic": True, "train_orderings": _ORDERINGS}),
        ("32ch x12", {"channels": 32, "layers": 12, "head": 64, "order_agnostic": True, "train_orderings": _ORDERINGS}),
        ("32ch x12 ctx64", {"channels": 32, "layers": 12, "head": 64, "context": 64, "order_agnostic": True,
                            "train_orderings": _ORDERINGS}),
        ("48ch x12", {"channels": 48, "layers": 12, "head": 64, "order_agnostic": True, "train_orderings": _ORDERINGS}),
        ("64ch x6", {"channels": 64, "layers": 6, "head": 128, "order_agnostic": True, "train_orderings": _ORDERINGS}),
    ],
    "lstm": [
        ("96 x1", {"hidden": 96, "layers": 1, "embed": 32}),
        ("256 x1", {"hidden": 256, "layers": 1, "embed": 64}),
        ("256 x2", {"hidden": 256, "layers": 2, "embed": 64}),
    ],
    "transformer": [
        ("d48 x2", {"d_model": 48, "layers": 2, "heads": 4, "order_agnostic": True}),
        ("d64 x4", {"d_model": 64, "layers": 4, "heads": 4, "order_agnostic": True}),
        ("d128 x4", {"d_model": 128, "layers": 4, "heads": 4, "order_agnostic": True}),
    ],
}
CONV = {"pixelcnn", "lmconv"}


def images_per_s(model, step_fn, x, amp: bool, steps: int, warmup: int) -> float:
    """Median images per second of ``step_fn`` (a training step) after ``warmup`` steps."""
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = step_fn(x)
        loss.backward()
        model._bench_opt.step()
        model._bench_opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return len(x) / statistics.median(times)


def grey(cfg: dict, levels: int, output: str, components: int) -> dict:
    """``cfg`` for ``levels``-level pixels under the ``output`` head (the binary config for 2)."""
    if levels == 2:
        return cfg
    return dict(cfg, levels=levels, output=output, components=components)


def batch_of_images(batch: int, levels: int) -> torch.Tensor:
    """Digit-like training images: mostly background, the rest of any level."""
    g = torch.Generator().manual_seed(0)
    on = torch.rand(batch, 784, generator=g) < 0.15
    return (on * torch.randint(1, levels, (batch, 784), generator=g)).float()


def measure(family: str, cfg: dict, batch: int, amp: bool, channels_last: bool, compiled: bool,
            steps: int, warmup: int, reference: bool = False, levels: int = 2) -> float:
    torch.manual_seed(0)
    model = build_model(family, cfg)
    if reference:  # LMConv with its layers in their plain unfold form (what the fast form replaced)
        for mod in model.modules():
            if isinstance(mod, _LMConv):
                mod.forward = mod.reference_forward  # type: ignore[method-assign]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model._bench_opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)  # as engine.train uses it
    step_fn = model.training_loss
    if compiled:
        step_fn = torch.compile(model.training_loss, dynamic=False)
        warmup += 2  # the first calls compile
    x = batch_of_images(batch, levels)
    return images_per_s(model, step_fn, x, amp, steps, warmup)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default=",".join(SIZES), help="comma-separated families")
    p.add_argument("--sizes", default=None, help="comma-separated size indices (0 = smallest), default all")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--threads", default="2", help="comma-separated thread counts")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--reference-lmconv", action="store_true",
                   help="also time LMConv with its layers in the plain unfold form, against the fast one")
    p.add_argument("--levels", type=int, default=2, help="pixel levels K (2: the binary models)")
    p.add_argument("--output", default="categorical", choices=["categorical", "logistic-mixture"],
                   help="the head of a grey model (--levels > 2)")
    p.add_argument("--components", type=int, default=10, help="logistics of a logistic-mixture head")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    head = "bernoulli" if a.levels == 2 else a.output + (f" x{a.components}" if a.output == "logistic-mixture" else "")
    rows = []
    for threads in (int(t) for t in a.threads.split(",")):
        torch.set_num_threads(threads)
        for family in a.family.split(","):
            sizes = SIZES[family]
            picks = range(len(sizes)) if a.sizes is None else [int(s) for s in a.sizes.split(",")]
            for i in picks:
                label, cfg = sizes[i]
                cfg = grey(cfg, a.levels, a.output, a.components)
                variants = [(amp, cl, False, False) for cl in ([False, True] if family in CONV else [False])
                            for amp in (False, True)]
                if a.compile:
                    variants += [(amp, False, True, False) for amp in (False, True)]
                if a.reference_lmconv and family == "lmconv":
                    variants += [(amp, False, False, True) for amp in (False, True)]
                for amp, cl, comp, ref in variants:
                    try:
                        ips = measure(family, cfg, a.batch, amp, cl, comp, a.steps, a.warmup, ref, a.levels)
                        err = None
                    except Exception as e:  # a path that does not work on this CPU is a finding too
                        ips, err = float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
                    n_params = sum(q.numel() for q in build_model(family, cfg).parameters())
                    row = {"family": family, "size": label, "params": n_params, "levels": a.levels, "head": head,
                           "threads": threads,
                           "batch": a.batch, "precision": "bf16" if amp else "float32",
                           "channels_last": cl, "compiled": comp, "reference_layer": ref, "images_per_s": round(ips, 1),
                           "epoch_min": round(50_000 / ips / 60, 1) if ips == ips else None, "error": err}
                    rows.append(row)
                    if not a.json:
                        path = (f"{row['precision']}{' channels_last' if cl else ''}{' compiled' if comp else ''}"
                                f"{' unfold layer' if ref else ''}")
                        fig = f"{ips:8.1f} img/s  {row['epoch_min']:6.1f} min/epoch" if err is None else err
                        print(f"{family:>11} {label:>11} {n_params:>9,} K={a.levels} {head:<20} {threads}t  {path:<28} {fig}",
                              flush=True)
    if a.json:
        print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "bf16_native": bf16_is_native(torch.device("cpu")), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
