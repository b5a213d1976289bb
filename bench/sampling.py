"""Sampling speed per family: the fast sampler (each family's Stepper) against the reference (one
full teacher-forced pass per pixel), for 16 and 64 samples, on the CPU and, when present, a GPU.

    python bench/sampling.py                      # every family, 16 and 64 samples
    python bench/sampling.py --families transformer,pixelcnn --pixels 64 --json
    python bench/sampling.py --quick
    python bench/sampling.py --families transformer --config transformer='{"d_model": 128, "layers": 4, "heads": 4}'

Models are untrained but of the size one would bundle with the app (``BENCH_CONFIGS``). The
reference sampler of a deep model is slow at 784 pixels, so ``--pixels N`` times only its first N
pixels and extrapolates linearly to the whole image: its cost per pixel does not depend on the
step (every step is the same full pass). The fast sampler always draws whole images. The speed-up
is (extrapolated) reference time / fast time for the same number of samples.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from engine.models import FAMILIES, build_model

#: bundle-sized configurations (28x28), one per family
BENCH_CONFIGS: dict[str, dict] = {
    "fvsbn": {},
    "mlp": {"hidden": 8},
    "nade": {"hidden": 500},
    "made": {"hidden": (500,)},
    "pixelcnn": {"channels": 32, "layers": 5, "head": 64},
    "lmconv": {"channels": 16, "layers": 3, "head": 32, "order_agnostic": True},
    "lstm": {"hidden": 128, "layers": 1, "embed": 32},
    "transformer": {"d_model": 64, "layers": 2, "heads": 4},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sampling(model, n: int, fast: bool, pixels: int | None, device: torch.device) -> tuple[float, int]:
    """Seconds to generate the first ``pixels`` pixels (all when None) of ``n`` samples."""
    gen = torch.Generator().manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    done = 0
    steps = model.sample_steps(n, generator=gen, fast=fast)
    for _ in steps:
        done += 1
        if pixels is not None and done >= pixels:
            break
    steps.close()
    _sync(device)
    return time.perf_counter() - t0, done


def bench_family(family: str, device: torch.device, sizes: list[int], pixels: int | None, repeats: int, config: dict) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(family, config).to(device).eval()
    d = model.size
    time_sampling(model, 2, True, 8, device)  # warm-up (lazy initialisation, caches)
    time_sampling(model, 2, False, 2, device)
    rows = []
    for n in sizes:
        fast = min(time_sampling(model, n, True, None, device)[0] for _ in range(repeats))
        ref_s, ref_px = min((time_sampling(model, n, False, pixels, device) for _ in range(repeats)), key=lambda r: r[0])
        ref_full = ref_s * d / ref_px
        rows.append(
            {
                "family": family,
                "device": str(device),
                "samples": n,
                "parameters": model.num_parameters(),
                "fast_s": fast,
                "reference_s": ref_full,
                "reference_measured_pixels": ref_px,
                "reference_extrapolated": ref_px < d,
                "speedup": ref_full / fast,
                "fast_ms_per_pixel": 1000 * fast / d,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=None, help="comma-separated families (default: all registered)")
    p.add_argument("--pixels", type=int, default=None, help="time only the first N pixels of the reference sampler and extrapolate")
    p.add_argument("--samples", default="16,64", help="batch sizes to time (default 16,64)")
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    p.add_argument("--no-gpu", action="store_true", help="CPU only even when CUDA is available")
    p.add_argument("--quick", action="store_true", help="16 samples only, reference on its first 16 pixels")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--config", action="append", default=[], metavar="FAMILY=JSON",
                   help='override a family\'s config, e.g. transformer=\'{"d_model": 128, "layers": 4, "heads": 4}\'')
    a = p.parse_args(argv)
    configs = dict(BENCH_CONFIGS)
    for item in a.config:
        fam, _, text = item.partition("=")
        try:
            configs[fam.strip()] = json.loads(text)
        except json.JSONDecodeError as exc:
            p.error(f"--config {item!r}: {exc}")
    torch.set_num_threads(a.threads)
    families = [f.strip() for f in a.families.split(",")] if a.families else list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families: {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    sizes = [16] if a.quick else [int(s) for s in a.samples.split(",")]
    pixels = a.pixels if a.pixels is not None else (16 if a.quick else None)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not a.no_gpu:
        devices.append(torch.device("cuda"))
    rows = []
    for dev in devices:
        for fam in families:
            rows.extend(bench_family(fam, dev, sizes, pixels, a.repeats, configs.get(fam, {})))
            if not a.json:
                for r in rows[-len(sizes) :]:
                    _print_row(r)
                sys.stdout.flush()
    note = (
        f"reference sampler timed on its first {pixels} pixels and extrapolated linearly to the whole image"
        if pixels
        else "reference sampler timed on whole images"
    )
    if a.json:
        info = {
            "torch": torch.__version__,
            "threads": a.threads,
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.no_gpu else None,
            "note": note,
            "configs": {f: configs.get(f, {}) for f in families},
        }
        print(json.dumps({"info": info, "results": rows}, indent=1))
    else:
        print(f"note: {note}; speed-up = reference / fast; torch {torch.__version__}, {a.threads} CPU thread(s)")
    return 0


_header_printed = False


def _print_row(r: dict) -> None:
    global _header_printed
    if not _header_printed:
        print(f"{'family':<12} {'device':<6} {'n':>3} {'params':>9} {'fast s':>9} {'ms/pixel':>9} {'reference s':>12} {'speed-up':>9}")
        _header_printed = True
    ref = f"{r['reference_s']:.3f}{'*' if r['reference_extrapolated'] else ' '}"
    print(
        f"{r['family']:<12} {r['device']:<6} {r['samples']:>3} {r['parameters']:>9} {r['fast_s']:>9.3f} "
        f"{r['fast_ms_per_pixel']:>9.3f} {ref:>12} {r['speedup']:>8.1f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
