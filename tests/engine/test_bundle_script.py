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


@pytest.mark.parametrize("cfg, dataset", [
    # from the classifier pass (10,000 digits under ten classes, three times: a minute)
    pytest.param({"hidden": (8,), "direct": True, "classes": 10, "levels": 4, "output": "categorical"}, "mnist",
                 marks=pytest.mark.slow),
    ({"hidden": (8,), "direct": True}, "binarized-mnist"),  # a pass of its own
])
def test_bundling_ships_the_test_splits_log_likelihoods_for_the_percentile(tmp_path, shared_data, monkeypatch, cfg, dataset):
    """Bundled on the whole test split, a checkpoint's figures for every test digit go to reference/
    beside the checkpoints' folder, keyed by the file as written: the app's percentile (through
    split_log_probs_steps) reads them without running the model."""
    import engine.reference as ref
    from engine.data import content_checksum
    from engine.datasets import load_dataset
    from engine.steps import drain

    monkeypatch.setenv("PIXELCHAIN_DATA", str(shared_data))
    torch.manual_seed(4)
    m = build_model("made", cfg)
    src = tmp_path / "run.safetensors"
    save_checkpoint(src, m, {"history": [], "epoch": 0, "dataset": dataset})
    _bundle_module(tmp_path / "ck").bundle(str(src), "m")
    out = tmp_path / "ck" / "m.safetensors"
    sha, x = ref.checkpoint_sha256(out), load_dataset(dataset, "test", levels=m.levels)
    want = ref.cache_file(sha, m.ordering, content_checksum(x), tmp_path / "reference")
    assert sorted((tmp_path / "reference").iterdir()) == [want]
    bundled = load_checkpoint(out).model
    fresh = drain(ref.split_log_probs_steps(bundled, None, None, images=x))[1]
    monkeypatch.setattr(ref, "BUNDLED_FOLDER", tmp_path / "reference")
    real = type(bundled).log_prob
    monkeypatch.setattr(type(bundled), "log_prob", lambda *a, **k: pytest.fail("the model was run"))
    shipped = drain(ref.split_log_probs_steps(bundled, sha, None, images=x, folder=tmp_path / "user"))[1]
    assert len(shipped) == 10_000
    np.testing.assert_allclose(shipped, fresh, rtol=0, atol=1e-3)
    assert not (tmp_path / "user").exists()  # read from the shipped folder, nothing written to the user's
    # --reference writes the same figures for a checkpoint bundled before, leaving it as it is
    want.unlink()
    monkeypatch.setattr(type(bundled), "log_prob", real)
    _bundle_module(tmp_path / "ck").main(["--reference", str(out)])
    assert ref.checkpoint_sha256(out) == sha and want.is_file()
    monkeypatch.setattr(type(bundled), "log_prob", lambda *a, **k: pytest.fail("the model was run"))
    np.testing.assert_allclose(drain(ref.split_log_probs_steps(bundled, sha, None, images=x, folder=tmp_path / "user"))[1],
                               fresh, rtol=0, atol=1e-3)
    # another file (a byte of its metadata changed): not these figures
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, bundled, {"name": "other"})
    with pytest.raises(pytest.fail.Exception, match="the model was run"):
        drain(ref.split_log_probs_steps(bundled, ref.checkpoint_sha256(other), None, images=x, folder=tmp_path / "user"))
