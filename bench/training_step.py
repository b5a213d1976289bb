"""Time of one MADE training step (forward, backward, Adam) in float32 and under bf16 autocast,
per batch size and thread count, on the CPU (and a GPU when present).

    python bench/training_step.py
    python bench/training_step.py --hidden 2000 --batch 100,250 --threads 1,2 --json

bf16 pays only where the hardware computes in it (GPUs of compute capability 8+, CPUs with
AVX-512 BF16 or AMX); elsewhere autocast emulates it and is slower, which is why ``train --amp``
warns there (``engine.train.amp_warning``). The figures are milliseconds per 100 images, the median
of the timed steps after warm-up steps.
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
from engine.train import amp_warning, bf16_is_native  # noqa: E402


def step_ms(model, opt, x, amp: bool, device: torch.device, steps: int, warmup: int = 3) -> float:
    """Median milliseconds per 100 images of a training step, after ``warmup`` steps and with the
    masks of every member already built (a step that meets a member for the first time builds its
    masks, which a long run does once: timing such steps measured mask building, not training)."""
    for k in range(max(1, model.config.num_masks)):
        model._masks(*model.member(k))
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.training_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) * 100 / len(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="1000,1000", help="MADE hidden sizes")
    p.add_argument("--batch", default="100,250,1000")
    p.add_argument("--threads", default="2")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    hidden = tuple(int(h) for h in a.hidden.split(","))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for threads in (int(t) for t in a.threads.split(",")) if device.type == "cpu" else [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            for bs in (int(b) for b in a.batch.split(",")):
                torch.manual_seed(0)
                cfg = {"hidden": hidden, "direct": True, "order_agnostic": True, "order_set": "scans", "num_masks": 32}
                model = build_model("made", cfg).to(device)
                opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)  # as engine.train uses it
                x = (torch.rand(bs, 784, device=device) < 0.2).float()
                f32 = step_ms(model, opt, x, False, device, a.steps)
                bf16 = step_ms(model, opt, x, True, device, a.steps)
                rows.append({"device": device.type, "threads": threads, "batch": bs, "hidden": list(hidden),
                             "float32_ms_per_100": round(f32, 1), "bf16_ms_per_100": round(bf16, 1),
                             "bf16_native": bf16_is_native(device)})
    if a.json:
        print(json.dumps(rows))
        return 0
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"MADE {'-'.join(map(str, hidden))} + direct, order-agnostic; CPU capability {cap}")
    for d in devices:
        w = amp_warning(d)
        if w:
            print(f"  {d.type}: {w}")
    print(f"{'device':>6} {'threads':>7} {'batch':>5} {'float32':>9} {'bf16':>9}   (ms per 100 images)")
    for r in rows:
        print(f"{r['device']:>6} {r['threads']:>7} {r['batch']:>5} {r['float32_ms_per_100']:>9.1f} {r['bf16_ms_per_100']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
