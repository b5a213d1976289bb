"""Lossless compression with the models: code length against the test NLL, exact decoding, speed.

    python bench/compression.py                           # every bundled checkpoint (or runs/*.safetensors), then grey
    python bench/compression.py runs/made.safetensors --max-images 2000 --json
    python bench/compression.py --grey-only               # the grey figures alone

For each checkpoint, on the test split (or its first ``--max-images`` images): the model's test NLL
in bits per image (teacher-forced, float32, as ``pixelchain eval`` reports it), the ideal code
length under the coded (float64 stepper, 2^-24 grid) probabilities, the range coder's payload and
the whole file (header included) in bits per image, their excess over the NLL in percent, whether
every image decodes exactly, images per second encoded and decoded, and the mean size of each
image as an optimised 1-bit PNG. The target: payload within 1% of the NLL plus the coder's
overhead (a few bits per stream of ``--chunk-size`` images).

Grey figures (K = 256 levels, 200 grey test digits by default): the same columns for each grey
model, with the PNG the lossless 8-bit grey PNG of each digit. The models are the bundled
checkpoints of more than two levels (or those given with ``--grey-checkpoint``, which may be
repeated), else a small NADE with a logistic-mixture head trained here for ``--train-seconds`` (a
minute). Each checkpoint is measured on its own data set at its own levels.
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
from engine.datasets import dataset_of, load_dataset
from engine.models import build_model
from engine.models.base import ARModel
from engine.tasks.compress import Codec, png_size_bytes, read_container_header
from engine.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "resources" / "checkpoints"


def bundled_grey() -> list[str]:
    """The bundled checkpoints whose model has more than two levels."""
    return [str(p) for p in sorted(BUNDLED.glob("*.safetensors")) if load_checkpoint(p).model.levels > 2]


def default_checkpoints() -> list[str]:
    found = sorted(glob.glob(str(ROOT / "resources" / "checkpoints" / "*.safetensors")))
    if not found:
        found = [p for p in sorted(glob.glob(str(ROOT / "runs" / "*.safetensors"))) if ".resume." not in p]
    return found


def bench_one(path: str, x: np.ndarray, chunk_size: int) -> dict:
    return bench_model(load_checkpoint(path).model, path, x, chunk_size)


def split_images(path: str, data: str | None, max_images: int | None) -> np.ndarray:
    """The test split of the data set ``path`` was trained on, at its levels."""
    ck = load_checkpoint(path)
    x = load_dataset(dataset_of(ck.meta), "test", data, ck.model.levels)
    return x[:max_images] if max_images else x


def train_grey_nade(data: str | None, seconds: float, levels: int = 256, seed: int = 0) -> ARModel:
    """A small NADE (32 hidden units, a 5-logistic mixture head) fitted for ``seconds`` on the grey
    training digits with Adam: a stand-in where no grey model is bundled."""
    torch.manual_seed(seed)
    model = build_model("nade", {"levels": levels, "hidden": 32, "output": "logistic-mixture", "components": 5})
    x = torch.as_tensor(load_dataset("mnist", "train", data, levels), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    steps = 0
    while time.perf_counter() - t0 < seconds:
        batch = x[torch.randint(0, len(x), (100,), generator=gen)]
        loss = model.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.train_steps = steps  # type: ignore[attr-defined]  # for the report
    return model.eval()


def bench_model(model: ARModel, name: str, x: np.ndarray, chunk_size: int) -> dict:
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
        "checkpoint": name,
        "family": model.family,
        "levels": model.levels,
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
        "png_bits_per_image": 8 * float(np.mean([png_size_bytes(im.reshape(28, 28), model.levels) for im in x])),
        "raw_bits_per_image": x.shape[1] * math.log2(model.levels),
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
    p.add_argument("--grey-only", action="store_true", help="only the grey figures")
    p.add_argument("--no-grey", action="store_true", help="only the checkpoints' figures")
    p.add_argument("--grey-checkpoint", action="append", default=None,
                   help="a grey checkpoint, may be repeated (default: every bundled one of more than two levels, "
                        "else a NADE trained for --train-seconds)")
    p.add_argument("--grey-images", type=int, default=200, help="grey test digits (default: %(default)s)")
    p.add_argument("--train-seconds", type=float, default=60.0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    if not a.grey_only:
        paths = a.checkpoints or default_checkpoints()
        if not paths:
            print("no checkpoints given or found in resources/checkpoints or runs/", file=sys.stderr)
            return 2
        rows = [bench_one(path, split_images(path, a.data, a.max_images), a.chunk_size) for path in paths]
    grey: list[dict] = []
    note = ""
    if not a.no_grey:
        paths = a.grey_checkpoint or bundled_grey()
        if paths:
            grey = [bench_one(path, split_images(path, a.data, a.grey_images), a.chunk_size) for path in paths]
        else:
            t0 = time.perf_counter()
            model = train_grey_nade(a.data, a.train_seconds)
            note = (f"no bundled grey model: a NADE (32 hidden, 5-logistic mixture, K=256) trained here for "
                    f"{time.perf_counter() - t0:.0f} s ({getattr(model, 'train_steps', 0)} Adam steps of 100 digits)")
            x = load_dataset("mnist", "test", a.data, 256)[: a.grey_images]
            grey = [bench_model(model, "nade-grey256 (trained here)", x, a.chunk_size)]
    if a.json:
        print(json.dumps({"threads": a.threads, "results": rows, "grey": grey, "grey_note": note}))
        return 0
    head = (f"{'checkpoint':<28} {'NLL':>8} {'ideal':>8} {'payload':>8} {'file':>8} {'excess':>7} {'exact':>5} "
            f"{'enc/s':>7} {'dec/s':>7} {'PNG':>6}")
    for title, table in ((f"{rows[0]['n_images'] if rows else 0} test images", rows),
                         (f"grey: {grey[0]['n_images'] if grey else 0} test digits at {grey[0]['levels'] if grey else 256} levels "
                          f"(PNG: lossless 8-bit grey)", grey)):
        if not table:
            continue
        print(f"{title}, {a.threads} thread(s); bits per image")
        print(head)
        for r in table:
            print(f"{Path(r['checkpoint']).name:<28} {r['test_nll_bits']:8.2f} {r['ideal_bits_per_image']:8.2f} "
                  f"{r['payload_bits_per_image']:8.2f} {r['file_bits_per_image']:8.2f} {r['payload_excess_percent']:6.2f}% "
                  f"{'yes' if r['all_decoded_exactly'] else 'NO':>5} {r['encode_images_per_s']:7.0f} {r['decode_images_per_s']:7.0f} "
                  f"{r['png_bits_per_image']:6.0f}")
    if note:
        print(note)
    return 0 if all(r["all_decoded_exactly"] for r in rows + grey) else 1


if __name__ == "__main__":
    sys.exit(main())
