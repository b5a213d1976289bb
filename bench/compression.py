"""Lossless compression with the models: code length against the test NLL, exact decoding, speed.

    python bench/compression.py                           # every bundled checkpoint (or runs/*.safetensors)
    python bench/compression.py runs/made.safetensors --max-images 2000 --json

For each checkpoint, on the test split (or its first ``--max-images`` images): the model's test NLL
in bits per image (teacher-forced, float32, as ``pixelchain eval`` reports it), the ideal code
length under the coded (float64 stepper, 2^-24 grid) probabilities, the range coder's payload and
the whole file (header included) in bits per image, their excess over the NLL in percent, whether
every image decodes exactly, images per second encoded and decoded, and the mean size of each
image as an optimised 1-bit PNG. The target: payload within 1% of the NLL plus the coder's
overhead (a few bits per stream of ``--chunk-size`` images).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import load_checkpoint
from engine.data import load_split
from engine.tasks.compress import Codec, png_size_bytes, read_container_header
from engine.train import evaluate

ROOT = Path(__file__).resolve().parents[1]


def default_checkpoints() -> list[str]:
    found = sorted(glob.glob(str(ROOT / "resources" / "checkpoints" / "*.safetensors")))
    if not found:
        found = [p for p in sorted(glob.glob(str(ROOT / "runs" / "*.safetensors"))) if ".resume." not in p]
    return found


def bench_one(path: str, x: np.ndarray, chunk_size: int) -> dict:
    ck = load_checkpoint(path)
    model = ck.model
    nll_nats, _ = evaluate(model, x)
    nll_bits = nll_nats / math.log(2.0)
    codec = Codec(model, chunk_size=chunk_size)
    t0 = time.perf_counter()
    data, ideal = codec.encode_detailed(x)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    y = codec.decode(data)
    t_dec = time.perf_counter() - t0
    info = read_container_header(data)
    n = len(x)
    payload = 32 * sum(w for _, w in info.chunks) / n
    file_bits = 8 * len(data) / n
    return {
        "checkpoint": path,
        "family": model.family,
        "ordering": model.ordering.spec,
        "n_images": n,
        "test_nll_nats": nll_nats,
        "test_nll_bits": nll_bits,
        "ideal_bits_per_image": float(ideal.mean()),
        "payload_bits_per_image": payload,
        "file_bits_per_image": file_bits,
        "payload_excess_percent": 100 * (payload / nll_bits - 1),
        "file_excess_percent": 100 * (file_bits / nll_bits - 1),
        "within_1_percent_plus_overhead": bool(payload <= 1.01 * nll_bits + 64 * len(info.chunks) / n),
        "all_decoded_exactly": bool(np.array_equal(y.reshape(n, -1), x)),
        "encode_images_per_s": n / t_enc,
        "decode_images_per_s": n / t_dec,
        "png_bits_per_image": 8 * float(np.mean([png_size_bytes(im.reshape(28, 28)) for im in x])),
        "raw_bits_per_image": x.shape[1],
        "file_bytes": len(data),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    paths = a.checkpoints or default_checkpoints()
    if not paths:
        print("no checkpoints given or found in resources/checkpoints or runs/", file=sys.stderr)
        return 2
    x = load_split("test", a.data)
    if a.max_images:
        x = x[: a.max_images]
    rows = [bench_one(path, x, a.chunk_size) for path in paths]
    if a.json:
        print(json.dumps({"threads": a.threads, "results": rows}))
        return 0
    print(f"{len(x)} test images, {a.threads} thread(s); bits per image")
    head = (f"{'checkpoint':<28} {'NLL':>8} {'ideal':>8} {'payload':>8} {'file':>8} {'excess':>7} {'exact':>5} "
            f"{'enc/s':>7} {'dec/s':>7} {'PNG':>6}")
    print(head)
    for r in rows:
        print(f"{Path(r['checkpoint']).name:<28} {r['test_nll_bits']:8.2f} {r['ideal_bits_per_image']:8.2f} "
              f"{r['payload_bits_per_image']:8.2f} {r['file_bits_per_image']:8.2f} {r['payload_excess_percent']:6.2f}% "
              f"{'yes' if r['all_decoded_exactly'] else 'NO':>5} {r['encode_images_per_s']:7.0f} {r['decode_images_per_s']:7.0f} "
              f"{r['png_bits_per_image']:6.0f}")
    return 0 if all(r["all_decoded_exactly"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
