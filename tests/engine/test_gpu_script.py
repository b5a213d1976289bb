"""scripts/gpu-made.sh, the one-call GPU run of the order-agnostic MADE, run end to end on the CPU
with a tiny network and a few seconds of training: a broken script would waste a GPU lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_trains_measures_and_bundles(tmp_path, data_dir):
    out, dest = tmp_path / "out", tmp_path / "dest"
    env = dict(os.environ, OUT=str(out), DEST=str(dest), DEVICE="cpu", PYTHON=sys.executable, RUNS="16 8,8",
               MINUTES="0.05", MASKS="2", MAX_TRAIN="300", MAX_VALID="100", PIXELCHAIN_DATA=str(data_dir), OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-made.sh"), "run"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    table = r.stdout[r.stdout.index("| run |"):].splitlines()
    assert len(table) == 4 and table[2].startswith("| made-16 |") and table[3].startswith("| made-8x8 |")
    for tag in ("made-16", "made-8x8"):
        single = json.loads((out / f"eval-{tag}.json").read_text())
        ens = json.loads((out / f"eval-{tag}-ens2.json").read_text())
        assert single["n_images"] == ens["n_images"] == 10_000
        assert f"{single['test_nll_nats']:.2f}" in table[2 if tag == "made-16" else 3]
        assert f"{ens['test_nll_nats']:.2f}" in table[2 if tag == "made-16" else 3]
        bundled = load_checkpoint(out / f"{tag}.safetensors")  # returned: small enough
        assert bundled.meta["metrics"]["test_nll_ensemble2"] == ens["test_nll_nats"]
        cfg = bundled.meta["train_config"]
        assert cfg["fit_schedule"] and cfg["state_every"] == 0 and bundled.model.config.order_set == "scans"
        assert "fitted to the limit" in (out / f"train-{tag}.log").read_text()
    assert not (ROOT / "resources" / "checkpoints" / "made-16.safetensors").exists()


def test_gpu_script_prepare_copies_the_data_and_refuses_unknown_commands(tmp_path, data_dir):
    dest = tmp_path / "gpu-data"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-made.sh"), "prepare", str(data_dir)], env=dict(os.environ, GPU_DATA=str(dest)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in data_dir.glob("binarized_mnist_*.amat*"))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-made.sh"), "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".gpu-data/x.amat.gz"])
    assert ignored.returncode == 0  # the copied data never gets committed
