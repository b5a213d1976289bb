"""The ``pixelchain`` command line: train -> eval -> sample -> info on a tiny slice of the real
data, and every error path: exit status 2, one line on stderr, no traceback."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine.checkpoint as ckmod
from engine.checkpoint import load_checkpoint
from engine.cli import main
from engine.models import FVSBN, build_model

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--max-train", "500", "--max-valid", "200", "--epochs", "2", "--model", "fvsbn", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("cli") / "fvsbn.safetensors"
    assert main(["train", *TINY, "--out", str(out), "--data", str(data_dir)]) == 0
    return out


def test_init_from_starts_at_the_checkpoint_weights(trained, tmp_path, data_dir):
    """--init-from copies every weight (output biases included) before training: with a learning
    rate too small to move them, the result holds the source's weights."""
    out = tmp_path / "ft.safetensors"
    argv = ["train", *TINY, "--epochs", "1", "--lr", "1e-12", "--init-from", str(trained), "--out", str(out), "--data", str(data_dir)]
    assert main(argv) == 0
    src, ft = load_checkpoint(trained), load_checkpoint(out)
    for k, v in src.model.state_dict().items():
        torch.testing.assert_close(ft.model.state_dict()[k], v, atol=1e-6, rtol=0)
    assert ft.meta["init_from"] == str(trained)
    fresh = tmp_path / "fresh.safetensors"
    assert main(["train", *TINY, "--epochs", "1", "--lr", "1e-12", "--out", str(fresh), "--data", str(data_dir)]) == 0
    assert not torch.allclose(load_checkpoint(fresh).model.weight, src.model.weight)


def run_error(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pixelchain: error: "), err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    return lines[0]


def test_train_eval_sample_info(trained, capsys, tmp_path):
    ck = load_checkpoint(trained)
    assert ck.model.family == "fvsbn" and ck.meta["epoch"] in (1, 2) and len(ck.meta["history"]) == 2
    assert ck.meta["data"]["checksums"]["train"].startswith("727146c3")
    capsys.readouterr()
    assert main(["eval", str(trained), "--json", "--max-images", "300"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("test_nll_nats", "bits_per_dim", "n_images", "model", "ordering"):
        assert key in res
    assert res["n_images"] == 300 and res["model"] == "fvsbn" and res["ordering"] == "raster"
    assert 60 < res["test_nll_nats"] < 250  # a barely trained FVSBN: worse than 97.5, far better than 543
    assert res["bits_per_dim"] == pytest.approx(res["test_nll_nats"] / (784 * math.log(2)))
    assert res["stderr_nats"] > 0
    assert main(["eval", str(trained), "--max-images", "100"]) == 0
    assert "nats per image" in capsys.readouterr().out
    grid = tmp_path / "grid.png"
    assert main(["sample", str(trained), "--n", "4", "--out", str(grid), "--scale", "1"]) == 0
    with Image.open(grid) as img:
        assert img.size == (2 * 30 + 2, 2 * 30 + 2)


def test_info_prints_the_metadata(trained, capsys):
    capsys.readouterr()
    assert main(["info", str(trained)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "fvsbn" and info["ordering"]["name"] == "raster"


def test_a_rows_made_trains_and_evaluates_as_an_ensemble_of_row_orderings(tmp_path, capsys, data_dir):
    out = tmp_path / "rows.safetensors"
    argv = ["train", "--model", "made", "--hidden", "16", "--direct", "--order-agnostic", "--order-set", "rows",
            "--num-masks", "4", "--config", '{"dropout": 0.1}', "--epochs", "1", "--max-train", "300",
            "--max-valid", "100", "--quiet", "--threads", "1", "--out", str(out), "--data", str(data_dir)]
    assert main(argv) == 0
    model = load_checkpoint(out).model
    assert model.config.order_set == "rows" and model.config.dropout == 0.1
    assert [model.member(k)[0].name for k in range(4)] == ["raster"] + ["random-rows"] * 3
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--ensemble", "4", "--max-images", "50", "--data", str(data_dir)]) == 0
    ens = json.loads(capsys.readouterr().out)
    assert main(["eval", str(out), "--json", "--max-images", "50", "--ordering", "random-rows:3", "--data", str(data_dir)]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["ordering"].startswith("random-rows") and math.isfinite(other["test_nll_nats"])
    assert math.isfinite(ens["test_nll_nats"]) and ens["test_nll_nats"] != other["test_nll_nats"]


def test_eval_record_stores_the_measurement(trained, tmp_path, capsys):
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(trained.read_bytes())
    assert main(["eval", str(copy), "--record", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_images"] == 10000 and res["subset"] == "all"
    assert load_checkpoint(copy).meta["metrics"]["test_nll"] == res["test_nll_nats"]
    # a part of the split is never recorded as the split's NLL
    run_error(capsys, ["eval", str(copy), "--max-images", "50", "--record"], "leave out --max-images")
    assert load_checkpoint(copy).meta["metrics"]["test_nll"] == res["test_nll_nats"]


def test_eval_random_subset_draws_across_the_split(trained, capsys):
    """The test split is sorted by digit class: --random-subset draws a seeded sample across it."""
    from engine.data import load_split, subset

    x = load_split("test")
    capsys.readouterr()
    results = {}
    for extra in ([], ["--random-subset"], ["--random-subset", "--seed", "1"]):
        assert main(["eval", str(trained), "--json", "--max-images", "200", *extra]) == 0
        results[tuple(extra)] = json.loads(capsys.readouterr().out)
    first, rand, rand1 = results.values()
    assert first["subset"] == "first" and rand["subset"] == "random" and rand["n_images"] == 200
    assert len({first["test_nll_nats"], rand["test_nll_nats"], rand1["test_nll_nats"]}) == 3
    m = load_checkpoint(trained).model
    imgs, index = subset(x, 200, random=True, seed=0)
    assert index is not None and len(set(index)) == 200 and index.max() > 5000  # across the classes
    nll = -m.log_prob(torch.as_tensor(imgs, dtype=torch.float32)).mean().item()
    assert rand["test_nll_nats"] == pytest.approx(nll, rel=1e-5)
    assert subset(x, 200)[0] is not None and np.array_equal(subset(x, 200)[0], x[:200])
    assert subset(x, None)[0] is x


def test_an_existing_out_is_refused_unless_resume_or_overwrite(trained, tmp_path, capsys, data_dir):
    """Re-running a finished `train` command no longer starts over silently and replaces its --out."""
    out = tmp_path / "done.safetensors"
    out.write_bytes(trained.read_bytes())
    before = out.read_bytes()
    argv = ["train", *TINY, "--out", str(out), "--data", str(data_dir)]
    run_error(capsys, argv, "--resume to continue its run or --overwrite")
    assert out.read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
    assert out.read_bytes() != before and load_checkpoint(out).meta["history"]


def test_resume_continues(trained, tmp_path, data_dir):
    out = tmp_path / "r.safetensors"
    for name in (trained, trained.with_name("fvsbn.resume.safetensors")):
        (tmp_path / name.name.replace("fvsbn", "r")).write_bytes(name.read_bytes())
    argv = ["train", *TINY, "--out", str(out), "--data", str(data_dir)]
    argv[argv.index("--epochs") + 1] = "3"
    assert main([*argv, "--resume"]) == 0
    assert [h["epoch"] for h in load_checkpoint(out.with_name("r.resume.safetensors")).meta["history"]] == [1, 2, 3]


def _errors(tmp, trained):
    missing = tmp / "no-such-folder"
    zero = tmp / "zero.safetensors"
    zero.write_bytes(b"")
    pickle_file = tmp / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    t = ["train", *TINY]
    nade7 = tmp / "nade7.safetensors"
    ckmod.save_checkpoint(nade7, build_model("nade", {"hidden": 7}), {})
    return [
        ("missing data folder", [*t, "--data", str(missing), "--out", str(tmp / "m.safetensors")], "does not exist"),
        ("data folder without files", [*t, "--data", str(tmp), "--out", str(tmp / "m.safetensors")], "has no binarized_mnist_train.amat"),
        ("unknown ordering", [*t, "--ordering", "zigzag", "--out", str(tmp / "m.safetensors")], "unknown ordering 'zigzag'"),
        ("output folder missing", [*t, "--out", str(missing / "m.safetensors")], "does not exist"),
        ("config not JSON", [*t, "--config", "{bad", "--out", str(tmp / "m.safetensors")], "--config is not valid JSON"),
        ("config not an object", [*t, "--config", "[1]", "--out", str(tmp / "m.safetensors")], "JSON object"),
        ("config unknown field", [*t, "--config", '{"depth": 3}', "--out", str(tmp / "m.safetensors")], "unknown FVSBNConfig field"),
        ("hidden for fvsbn", [*t, "--hidden", "5", "--out", str(tmp / "m.safetensors")], "has no hidden size"),
        ("num-masks for fvsbn", [*t, "--num-masks", "3", "--out", str(tmp / "m.safetensors")], "does not apply"),
        ("zero epochs", [*t, "--epochs", "0", "--out", str(tmp / "m.safetensors")], "at least 1"),
        ("resume with nothing saved", [*t, "--resume", "--out", str(tmp / "nothing.safetensors")], "cannot resume"),
        ("eval missing checkpoint", ["eval", str(tmp / "none.safetensors")], "cannot open"),
        ("eval zero-byte checkpoint", ["eval", str(zero)], "empty"),
        ("eval a pickle", ["eval", str(pickle_file)], "never unpickles"),
        ("eval in an unsupported ordering", ["eval", str(trained), "--ordering", "random:3", "--max-images", "5"], "raster ordering only"),
        ("ensemble of a fixed-order model", ["eval", str(trained), "--ensemble", "3", "--max-images", "5"], "order-agnostic"),
        ("eval missing data", ["eval", str(trained), "--data", str(missing)], "does not exist"),
        ("sample n=0", ["sample", str(trained), "--n", "0", "--out", str(tmp / "g.png")], "--n must be at least 1"),
        ("sample into a missing folder", ["sample", str(trained), "--n", "1", "--out", str(missing / "g.png")],
         "No such file or directory"),
        ("sample bad ordering", ["sample", str(trained), "--ordering", "spiral", "--out", str(tmp / "g.png")], "unknown ordering"),
        ("info of a pickle", ["info", str(pickle_file)], "never unpickles"),
        ("init-from another family",
         ["train", *TINY, "--model", "nade", "--init-from", str(trained), "--out", str(tmp / "m.safetensors")], "holds a fvsbn model"),
        ("init-from other sizes",
         ["train", *TINY, "--model", "nade", "--hidden", "5", "--init-from", str(nade7), "--out", str(tmp / "m.safetensors")],
         "sizes differ"),
        ("init-from a pickle", ["train", *TINY, "--init-from", str(pickle_file), "--out", str(tmp / "m.safetensors")], "never unpickles"),
    ] + ([] if torch.cuda.is_available() else
         [("train on missing CUDA", [*t, "--device", "cuda", "--out", str(tmp / "m.safetensors")], "no CUDA device")])


def _error_ids():
    return [
        "missing data folder", "data folder without files", "unknown ordering", "output folder missing", "config not JSON",
        "config not an object", "config unknown field", "hidden for fvsbn", "num-masks for fvsbn", "zero epochs",
        "resume with nothing saved", "eval missing checkpoint", "eval zero-byte checkpoint", "eval a pickle",
        "eval in an unsupported ordering", "ensemble of a fixed-order model", "eval missing data", "sample n=0",
        "sample into a missing folder", "sample bad ordering", "info of a pickle", "train on missing CUDA",
        "init-from another family", "init-from other sizes", "init-from a pickle",
    ]


@pytest.mark.parametrize("name", _error_ids())
def test_error_paths(trained, tmp_path, capsys, name):
    cases = {n: (argv, m) for n, argv, m in _errors(tmp_path, trained)}
    if name not in cases:
        pytest.skip("CUDA is available here")
    argv, match = cases[name]
    run_error(capsys, argv, match)


@pytest.mark.parametrize("fault", ["nan", "oom", "full-disk"])
def test_training_faults_on_the_command_line(trained, tmp_path, capsys, monkeypatch, fault, data_dir):
    out = tmp_path / "m.safetensors"
    if fault == "nan":
        monkeypatch.setattr(FVSBN, "training_loss", lambda self, x, y=None: torch.tensor(float("nan"), requires_grad=True))
        match = "the loss became nan"
    elif fault == "oom":
        def oom(self, x, y=None):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        monkeypatch.setattr(FVSBN, "training_loss", oom)
        match = "batch of 100 images"
    else:
        monkeypatch.setattr(ckmod.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        match = "No space left on device"
    run_error(capsys, ["train", *TINY, "--out", str(out), "--data", str(data_dir)], match)
    assert not out.exists()


def test_argparse_errors_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "resnet", "--out", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


def test_missing_data_in_a_real_process(tmp_path):
    """The installed entry point, as a user runs it: one line, status 2, no traceback."""
    env = dict(os.environ, PIXELCHAIN_DATA=str(tmp_path / "gone"), PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "engine", "train", "--model", "fvsbn", "--out", str(tmp_path / "m.safetensors")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "PIXELCHAIN_DATA" in lines[0] and "is not a directory" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_model_too_large_for_memory(capsys, tmp_path, data_dir):
    """An allocation of ~1 TB fails at once: one line, status 2 (other RuntimeErrors stay bugs)."""
    argv = ["train", "--model", "made", "--hidden", "300000000", "--max-train", "10", "--max-valid", "10",
            "--data", str(data_dir), "--out", str(tmp_path / "m.safetensors")]
    run_error(capsys, argv, "not enough memory")


def test_amp_on_a_cpu_without_bf16_warns(monkeypatch, capsys, tmp_path, data_dir):
    import engine.train as tr

    monkeypatch.setattr(tr, "_cpu_flags", lambda: {"sse2", "avx2"})
    out = tmp_path / "amp.safetensors"
    assert main(["train", *TINY, "--epochs", "1", "--amp", "--device", "cpu", "--out", str(out), "--data", str(data_dir)]) == 0
    err = capsys.readouterr().err
    assert "pixelchain: warning: this CPU" in err and "drop --amp" in err
    monkeypatch.setattr(tr, "_cpu_flags", lambda: {"avx512_bf16"})
    assert main(["train", *TINY, "--epochs", "1", "--amp", "--device", "cpu", "--out", str(out), "--data", str(data_dir),
                 "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_max_minutes_stops_a_run_between_epochs(tmp_path, data_dir, capsys):
    out = tmp_path / "t.safetensors"
    argv = ["train", *[a for a in TINY if a != "--quiet"], "--out", str(out), "--data", str(data_dir), "--max-minutes", "1e-6"]
    argv[argv.index("--epochs") + 1] = "3"
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "time-limit after 1 epochs" in printed and "--resume" in printed
    assert load_checkpoint(out.with_name("t.resume.safetensors")).meta["epoch"] == 1
    assert main([*argv[:-2], "--resume"]) == 0  # without the limit it runs to the end
    assert load_checkpoint(out.with_name("t.resume.safetensors")).meta["epoch"] == 3


def test_fit_schedule_and_state_every_reach_the_run(tmp_path, data_dir, capsys):
    out = tmp_path / "f.safetensors"
    argv = ["train", *[a for a in TINY if a != "--quiet"], "--out", str(out), "--data", str(data_dir),
            "--max-minutes", "1e-6", "--fit-schedule", "--state-every", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fitted to the limit" in printed
    meta = load_checkpoint(out.with_name("f.resume.safetensors")).meta
    assert meta["epoch"] == 1 and meta["train_config"]["fit_schedule"] and meta["train_config"]["state_every"] == 0
    assert main(["train", *TINY, "--out", str(out), "--data", str(data_dir), "--fit-schedule"]) == 2  # needs a limit
    assert "max_minutes" in capsys.readouterr().err


def test_precision_auto_takes_bf16_only_where_it_is_native_and_measured_faster(monkeypatch, capsys, tmp_path, data_dir):
    import engine.train as tr

    cpu = torch.device("cpu")
    native, emulated = {"avx512_bf16"}, {"sse2", "avx2"}
    assert tr.resolve_amp("auto", cpu, "pixelcnn", native) and tr.resolve_amp("auto", cpu, "made", native)
    assert not tr.resolve_amp("auto", cpu, "pixelcnn", emulated)
    assert not tr.resolve_amp("auto", cpu, "nade", native)  # its fused float32 path: not measured faster
    assert tr.resolve_amp("bf16", cpu, "nade", emulated) and not tr.resolve_amp("float32", cpu, "made", native)
    with pytest.raises(ValueError, match="precision must be one of"):
        tr.resolve_amp("fp16", cpu, "made")
    # the command line: the default is auto, the run says which it took and records it
    argv = ["train", *[a for a in TINY if a not in ("--quiet", "fvsbn")], "--device", "cpu", "--data", str(data_dir)]
    argv[argv.index("--model") + 1:argv.index("--model") + 1] = ["made"]
    argv[argv.index("--epochs") + 1] = "1"
    for flags, expect in ((native, "bf16 mixed precision"), (emulated, "float32")):
        monkeypatch.setattr(tr, "_cpu_flags", lambda flags=flags: flags)
        out = tmp_path / f"{expect[:4]}.safetensors"
        assert main([*argv, "--out", str(out)]) == 0
        assert f"CPU, {expect};" in capsys.readouterr().out
        assert load_checkpoint(out).meta["train_config"]["amp"] is (expect != "float32")
    run_error(capsys, [*argv, "--amp", "--precision", "float32", "--out", str(tmp_path / "x.safetensors")], "contradicts")


def test_a_run_in_the_background_logs_its_progress(monkeypatch, capsys, tmp_path, data_dir):
    """With the output in a file (no terminal), the loss is printed every LOG_EVERY seconds."""
    import engine.cli.commands as cli

    monkeypatch.setattr(cli._Bar, "LOG_EVERY", 0.0)
    argv = ["train", *[a for a in TINY if a != "--quiet"], "--out", str(tmp_path / "b.safetensors"), "--data", str(data_dir)]
    argv[argv.index("--epochs") + 1] = "1"
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "mean since the last line" in ln]
    assert lines and all(ln.strip().startswith("epoch 1/1 batch") for ln in lines)
    assert math.isfinite(float(lines[-1].split("loss ")[1].split()[0]))
