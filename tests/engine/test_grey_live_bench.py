"""bench/grey_live.py runs on a grey checkpoint and reports what it says (figures themselves are not
asserted): the heatmaps of grey test digits, and the fast and reference samplers drawing the same
images for one seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from engine.checkpoint import save_checkpoint
from engine.models import build_model

ROOT = Path(__file__).resolve().parents[2]


def test_grey_live_bench_times_heatmaps_and_compares_the_samplers(tmp_path, shared_data):
    torch.manual_seed(0)
    model = build_model("nade", {"hidden": 8, "levels": 256, "output": "logistic-mixture", "components": 2})
    path = save_checkpoint(tmp_path / "tiny-grey.safetensors", model, {"name": "tiny-grey", "dataset": "mnist"})
    binary = save_checkpoint(tmp_path / "tiny-binary.safetensors", build_model("nade", {"hidden": 4}), {"name": "b"})
    cmd = [sys.executable, str(ROOT / "bench" / "grey_live.py"), str(path), "--digits", "3", "--samples", "2",
           "--data", str(shared_data), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["rows"]
    assert row["model"] == "tiny-grey" and row["levels"] == 256 and row["digits"] == 3
    assert 0 < row["heatmap_ms_min"] <= row["heatmap_ms_median"] <= row["heatmap_ms_max"]
    assert row["samples"] == 2 and row["same_images"] is True and row["pixels_differ"] == 0
    assert row["fast_s"] > 0 and abs(row["speedup"] - row["reference_s"] / row["fast_s"]) < 1e-9
    # a binary checkpoint is not a grey model: the bench says so instead of timing it
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "grey_live.py"), str(binary), "--skip-sampling"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "not a grey model" in out.stderr
