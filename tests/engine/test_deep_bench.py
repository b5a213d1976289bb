"""bench/sampling.py runs and reports what it says (figures themselves are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from engine.train import bf16_is_native

ROOT = Path(__file__).resolve().parents[2]


def test_sampling_bench_json_and_extrapolation():
    cmd = [sys.executable, str(ROOT / "bench" / "sampling.py"), "--families", "nade,lstm", "--samples", "2", "--pixels", "5",
           "--json", "--no-gpu", "--config", 'nade={"hidden": 8}', "--config", 'lstm={"hidden": 8, "embed": 4}']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert "first 5 pixels" in res["info"]["note"] and res["info"]["configs"]["nade"] == {"hidden": 8}
    rows = res["results"]
    assert [(r["family"], r["samples"]) for r in rows] == [("nade", 2), ("lstm", 2)]
    for r in rows:
        assert r["reference_measured_pixels"] == 5 and r["reference_extrapolated"]
        assert r["fast_s"] > 0 and abs(r["speedup"] - r["reference_s"] / r["fast_s"]) < 1e-9


def test_sampling_bench_rejects_unknown_family():
    cmd = [sys.executable, str(ROOT / "bench" / "sampling.py"), "--families", "nope"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown families" in out.stderr


def test_training_step_bench_reports_both_precisions():
    cmd = [sys.executable, str(ROOT / "bench" / "training_step.py"), "--hidden", "8", "--batch", "4,10", "--threads", "1",
           "--steps", "1", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["device"] == "cpu"]
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 4), (1, 10)]
    for r in rows:
        assert r["hidden"] == [8] and r["float32_ms_per_100"] > 0 and r["bf16_ms_per_100"] > 0
        assert r["bf16_native"] == bf16_is_native(torch.device("cpu"))  # what the engine says of this CPU


def test_deep_training_step_bench_times_the_lmconv_reference_layer_too():
    cmd = [sys.executable, str(ROOT / "bench" / "deep_training_step.py"), "--family", "lmconv", "--sizes", "0", "--threads", "1",
           "--steps", "1", "--warmup", "0", "--batch", "2", "--reference-lmconv", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    kinds = sorted((r["precision"], r["channels_last"], r["reference_layer"]) for r in rows)
    assert kinds == sorted([(p, cl, False) for p in ("float32", "bf16") for cl in (False, True)]
                           + [(p, False, True) for p in ("float32", "bf16")])
    assert all(r["error"] is None and r["images_per_s"] > 0 for r in rows)  # the fast layer works channels_last too
