"""scripts/bundle.py: measured test NLL (and ensemble NLL) recorded in the bundled checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models import build_model
from engine.train import evaluate

ROOT = Path(__file__).resolve().parents[2]


def _bundle_module(dest: Path):
    spec = importlib.util.spec_from_file_location("bundle_script", ROOT / "scripts" / "bundle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.DEST = dest
    return mod


def test_bundle_records_single_and_ensemble_nll(tmp_path):
    torch.manual_seed(0)
    m = build_model("made", {"hidden": (16,), "order_agnostic": True, "num_masks": 4, "direct": True})
    src = tmp_path / "run.safetensors"
    save_checkpoint(src, m, {"history": [{"epoch": 1, "valid_nll": 500.0, "seconds": 1.0}], "epoch": 1, "optimizer": {"x": 1}})
    x = (np.random.default_rng(0).random((50, 784)) < 0.2).astype(np.uint8)
    mod = _bundle_module(tmp_path / "out")
    row = mod.bundle(str(src), "made-any", x, ensemble=4)
    ck = load_checkpoint(tmp_path / "out" / "made-any.safetensors")
    met = ck.meta["metrics"]
    assert ck.meta["name"] == "made-any" and "optimizer" not in ck.meta
    assert met["test_nll"] == pytest.approx(evaluate(m, x)[0], abs=0.01)
    assert met["test_nll_ensemble4"] == pytest.approx(evaluate(m, x, ensemble=4)[0], abs=0.01)
    assert met["test_nll_ensemble4"] != pytest.approx(met["test_nll"], abs=0.01)
    assert f"ensemble of 4: {met['test_nll_ensemble4']:.2f}" in row and "| made-any | made |" in row
    # stored in int8 or float16 only when the two reported decimals stay the same
    assert ck.meta["weights_dtype"] in ("int8", "float16", "float32")
    assert f"{evaluate(ck.model, x)[0]:.2f}" == f"{met['test_nll']:.2f}"


def test_bundle_picks_the_smallest_storage_that_keeps_the_reported_nll(tmp_path):
    from engine.checkpoint import INT8
    torch.manual_seed(1)
    m = build_model("made", {"hidden": (32,), "direct": True})
    src = tmp_path / "run.safetensors"
    save_checkpoint(src, m, {"history": [], "epoch": 0})
    x = (np.random.default_rng(1).random((40, 784)) < 0.2).astype(np.uint8)
    probe = save_checkpoint(tmp_path / "probe.safetensors", m, dtype=INT8)
    int8_keeps = f"{evaluate(load_checkpoint(probe).model, x)[0]:.2f}" == f"{evaluate(m, x)[0]:.2f}"
    _bundle_module(tmp_path / "out").bundle(str(src), "m", x)
    out = tmp_path / "out" / "m.safetensors"
    ck = load_checkpoint(out)
    assert (ck.meta["weights_dtype"] == "int8") == int8_keeps
    if int8_keeps:
        assert out.stat().st_size < 0.6 * save_checkpoint(tmp_path / "f16.safetensors", m, dtype=torch.float16).stat().st_size


def test_forced_int8_records_the_figures_of_the_weights_as_stored(tmp_path):
    from engine.checkpoint import INT8
    torch.manual_seed(3)
    m = build_model("made", {"hidden": (32,), "direct": True})
    with torch.no_grad():
        for p in m.parameters():  # large weights: int8 moves the NLL
            p.mul_(40)
    src = tmp_path / "run.safetensors"
    save_checkpoint(src, m, {"history": [], "epoch": 0})
    x = (np.random.default_rng(2).random((40, 784)) < 0.2).astype(np.uint8)
    probe = load_checkpoint(save_checkpoint(tmp_path / "probe.safetensors", m, dtype=INT8)).model
    stored, own = evaluate(probe, x)[0], evaluate(m, x)[0]
    assert f"{stored:.2f}" != f"{own:.2f}"  # the case the option is for
    _bundle_module(tmp_path / "out").bundle(str(src), "m", x, first_dtype="int8")
    ck = load_checkpoint(tmp_path / "out" / "m.safetensors")
    assert ck.meta["weights_dtype"] == "int8"
    assert ck.meta["metrics"]["test_nll"] == pytest.approx(stored, abs=1e-4)


def test_a_grey_checkpoint_is_measured_on_its_own_data_set(tmp_path, shared_data, monkeypatch):
    from engine.datasets import load_dataset

    monkeypatch.setenv("PIXELCHAIN_DATA", str(shared_data))
    torch.manual_seed(2)
    m = build_model("fvsbn", {"levels": 4, "output": "categorical"})
    src = tmp_path / "grey.safetensors"
    save_checkpoint(src, m, {"history": [], "epoch": 0, "dataset": "mnist"})
    row = _bundle_module(tmp_path / "out").bundle(str(src), "g", max_images=30)
    x = load_dataset("mnist", "test", levels=4)[:30]
    met = load_checkpoint(tmp_path / "out" / "g.safetensors").meta["metrics"]
    assert met["test_nll"] == pytest.approx(evaluate(m, x)[0], abs=0.01)
    assert f"{met['test_nll'] / (784 * np.log(2)):.4f} bits/dim" in row
