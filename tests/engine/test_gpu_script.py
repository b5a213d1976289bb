"""scripts/gpu-train.sh, the one-call GPU run that trains, measures and bundles every family, run end
to end on the CPU with tiny networks and a second of training each: a broken script would waste a
GPU lease. The quick run measures on 100 images of each split; the run as on the GPU, over the whole
splits (a tiny Transformer takes minutes for them on the CPU), is marked slow and left to CI's second step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("max_eval", [100, pytest.param(None, marks=pytest.mark.slow, id="whole-splits")])
def test_gpu_script_trains_measures_and_bundles_every_family(tmp_path, data_dir, max_eval):
    out = tmp_path / "out"
    # one recipe of each kind the script treats apart: fixed-order, order-agnostic sequence model, MADE ensemble
    runs = "pixelcnn-raster transformer-any made-scans"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", PYTHON=sys.executable, SIZE="tiny", RUNS=runs,
               MINUTES="0.02", MASKS="2", MAX_TRAIN="100", MAX_VALID="50", PIXELCHAIN_DATA=str(data_dir), OMP_NUM_THREADS="1")
    env.pop("MAX_EVAL", None)
    if max_eval:
        env["MAX_EVAL"] = str(max_eval)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-train.sh"), "run"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = r.stdout[r.stdout.index("| run |"):].splitlines()[2:]
    assert [row.split(" | ")[0] for row in table] == [f"| {name}" for name in runs.split()]
    for name, row in zip(runs.split(), table, strict=True):
        test = json.loads((out / f"eval-{name}.json").read_text())
        valid = json.loads((out / f"eval-{name}-valid.json").read_text())
        assert test["n_images"] == valid["n_images"] == (max_eval or 10_000) and test["ordering"] == "raster"
        assert f"| {valid['valid_nll_nats']:.2f} | {test['test_nll_nats']:.2f} |" in row
        bundled = load_checkpoint(out / "checkpoints" / f"{name}.safetensors")  # DEST defaults into $OUT
        assert bundled.meta["name"] == name and bundled.meta["metrics"]["test_nll"] == test["test_nll_nats"]
        cfg = bundled.meta["train_config"]
        assert cfg["fit_schedule"] and cfg["state_every"] == 0
        assert "fitted to the limit" in (out / f"train-{name}.log").read_text()
        if name.startswith("made-"):
            ens = json.loads((out / f"eval-{name}-ens2.json").read_text())
            assert bundled.meta["metrics"]["test_nll_ensemble2"] == ens["test_nll_nats"]
            assert f"ensemble of 2: {ens['test_nll_nats']:.2f}" in row and bundled.model.config.order_set == "scans"
        elif name.endswith("-any"):
            other = json.loads((out / f"eval-{name}-random1.json").read_text())
            assert other["ordering"] == "random:1" and f"random:1: {other['test_nll_nats']:.2f}" in row
    assert not (ROOT / "resources" / "checkpoints" / "made-scans-deep.safetensors").exists()


@pytest.mark.slow
def test_gpu_script_grows_and_trains_the_grey_model(tmp_path, data_dir):
    """The grey recipe, tiny: it reads the grey MNIST files from a folder holding both data sets (as
    ../shared/data and the prepared .gpu-data do), and measures and bundles a class-conditional model
    by its classifier pass."""
    if not (data_dir.parent / "mnist").is_dir():
        pytest.skip("no grey MNIST folder beside the binarized one")
    out, name = tmp_path / "out", "pixelcnn-grey256-c10"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", PYTHON=sys.executable, SIZE="tiny", RUNS=name, MINUTES="0.02",
               MAX_TRAIN="100", MAX_VALID="50", MAX_EVAL="50", PIXELCHAIN_DATA=str(data_dir.parent), OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-train.sh"), "run"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    test = json.loads((out / f"eval-{name}.json").read_text())
    assert (test["dataset"], test["levels"], test["classes"], test["n_images"]) == ("mnist", 256, 10, 50)
    bundled = load_checkpoint(out / "checkpoints" / f"{name}.safetensors")
    assert bundled.meta["metrics"]["test_nll"] == pytest.approx(test["test_nll_nats"], rel=1e-5)
    assert "test_accuracy" in bundled.meta["metrics"] and bundled.meta["train_config"]["warmup"] == 2


def test_gpu_script_knows_every_recipe_and_refuses_an_unknown_one(tmp_path):
    script = ROOT / "scripts" / "gpu-train.sh"
    every = "pixelcnn-raster lmconv-any lstm-raster transformer-any made-scans made-scans-deep pixelcnn-grey256-c10"
    r = subprocess.run(["bash", str(script), "run"], env=dict(os.environ, RUNS=f"{every} vae", PIXELCHAIN_DATA=str(tmp_path)),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown recipe vae" in r.stderr and every.split()[0] not in r.stderr.split("(")[0]
    # every recipe's flags parse as a `pixelchain train` command line
    from engine.cli import build_parser
    from engine.models import build_model
    from engine.recipes import model_config_from_args

    for size in ("full", "tiny"):
        for name in every.split():
            flags = subprocess.run(["bash", "-c", f'SIZE={size} MASKS=32; source <(sed -n "/^ORDERINGS=/,/^}}/p" {script}); recipe {name}'],
                                   capture_output=True, text=True, check=True).stdout.split()
            a = build_parser().parse_args(["train", *flags, "--out", "x.safetensors"])
            assert a.model == name.split("-")[0] and a.ema == 0.999
            if size == "tiny":  # the configuration builds its model (the full ones take long to allocate)
                build_model(a.model, model_config_from_args(a.model, a))


def test_gpu_script_prepare_copies_the_data_and_refuses_unknown_commands(tmp_path, data_dir):
    dest = tmp_path / "gpu-data"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-train.sh"), "prepare", str(data_dir)], env=dict(os.environ, GPU_DATA=str(dest)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.glob("*.amat*")) == sorted(p.name for p in data_dir.glob("binarized_mnist_*.amat*"))
    grey = data_dir.parent / "mnist"
    if grey.is_dir():  # the grey files too, in the mnist/ folder their loader looks for
        assert sorted(p.name for p in (dest / "mnist").iterdir()) == sorted(p.name for p in grey.glob("*-ubyte*"))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-train.sh"), "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".gpu-data/x.amat.gz"])
    assert ignored.returncode == 0  # the copied data never gets committed
