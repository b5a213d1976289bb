"""``pixelchain`` with grey digits: train on MNIST at K levels, and eval, sample, info reading the
data set and levels from the checkpoint (no flag); option errors in one line."""

from __future__ import annotations

import json
import math
import shlex

import numpy as np
import pytest
from PIL import Image

from engine.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from engine.cli import build_parser, main
from engine.datasets import load_dataset
from engine.models import build_model, family_class
from engine.recipes import model_config_from_args, train_argv
from engine.train import TrainConfig, evaluate

TINY = ["--model", "fvsbn", "--max-train", "200", "--max-valid", "100", "--epochs", "1", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def grey(tmp_path_factory, shared_data):
    """A tiny FVSBN trained one epoch on 200 grey images at 4 levels, through the command line."""
    out = tmp_path_factory.mktemp("grey") / "grey.safetensors"
    assert main(["train", *TINY, "--dataset", "mnist", "--levels", "4", "--data", str(shared_data), "--out", str(out)]) == 0
    return out


def test_training_records_the_data_set_and_levels(grey):
    meta = read_metadata(grey)
    assert meta["dataset"] == "mnist" and meta["data"]["name"] == "mnist" and meta["data"]["levels"] == 4
    assert meta["config"]["levels"] == 4 and meta["config"]["output"] == "categorical"  # the default head for K > 2
    assert "--dataset mnist --levels 4" in meta["command"]


def test_eval_json_reads_the_data_set_from_the_checkpoint(grey, shared_data, capsys):
    assert main(["eval", str(grey), "--json", "--max-images", "100", "--data", str(shared_data), "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"] == "mnist" and res["levels"] == 4 and res["split"] == "test"
    assert res["test_nll_nats"] == res["test_nll_nats"] and res["n_images"] == 100
    assert res["bits_per_dim"] == pytest.approx(res["test_nll_nats"] / (784 * math.log(2)), rel=1e-12)
    # the images it measured are the grey test images at 4 levels: the same number measured directly
    x = load_dataset("mnist", "test", shared_data, levels=4)[:100]
    assert res["test_nll_nats"] == pytest.approx(evaluate(load_checkpoint(grey).model, x)[0], rel=1e-6)
    assert 0 < res["bits_per_dim"] < 2  # no worse than uniform over 4 levels


def test_eval_prints_the_data_set_and_bits_per_dim(grey, shared_data, capsys):
    assert main(["eval", str(grey), "--split", "valid", "--max-images", "50", "--data", str(shared_data), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "on MNIST at 4 levels: valid NLL" in out and "bits per dimension over 50 images" in out


def test_eval_json_of_a_checkpoint_older_than_data_sets_is_binarized(tmp_path, shared_data, capsys):
    """A checkpoint that records no data set is a binary model of binarized MNIST; the folder of
    both data sets serves it (its binarized_mnist/ folder)."""
    path = save_checkpoint(tmp_path / "old.safetensors", build_model("fvsbn"), {"name": "old"})
    assert "dataset" not in read_metadata(path)
    assert main(["eval", str(path), "--json", "--split", "valid", "--max-images", "20", "--data", str(shared_data)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"] == "binarized-mnist" and res["levels"] == 2 and "valid_nll_nats" in res
    assert res["bits_per_dim"] == pytest.approx(res["valid_nll_nats"] / (784 * math.log(2)), rel=1e-12)
    x = load_dataset("binarized-mnist", "valid", shared_data)[:20]
    assert res["valid_nll_nats"] == pytest.approx(evaluate(load_checkpoint(path).model, x)[0], rel=1e-6)


def test_sample_writes_a_grey_grid(grey, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(grey), "--n", "4", "--out", str(out), "--scale", "1", "--threads", "1"]) == 0
    with Image.open(out) as im:
        assert im.mode == "L"
        a = np.asarray(im)
    assert a.shape == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)
    cells = np.concatenate([a[2 + r * 30 : 30 + r * 30, 2 + c * 30 : 30 + c * 30].ravel() for r in (0, 1) for c in (0, 1)])
    assert set(np.unique(cells)) <= {0, 85, 170, 255} and len(np.unique(cells)) >= 3  # grey, not black and white


def test_info_shows_the_data_set_and_levels(grey, tmp_path, capsys):
    assert main(["info", str(grey)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dataset"] == "mnist" and info["levels"] == 4
    old = save_checkpoint(tmp_path / "old.safetensors", build_model("fvsbn"), {"name": "old"})
    assert main(["info", str(old)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dataset"] == "binarized-mnist" and info["levels"] == 2 and info["name"] == "old"


def test_inpaint_eval_measures_a_grey_model(grey, shared_data, capsys):
    rc = main(["inpaint-eval", str(grey), "--region", "top", "--max-images", "2", "--data", str(shared_data), "--threads", "1",
               "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["n_images"] == 2  # more in test_tasks_grey.py


def test_eval_with_a_folder_without_the_grey_files_names_them(grey, data_dir, capsys):
    assert main(["eval", str(grey), "--max-images", "5", "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{data_dir} has no t10k-images-idx3-ubyte" in err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--levels", "4"], "--levels 4 needs --dataset mnist: binarized-mnist has 2 levels"),
        (["--dataset", "binarized-mnist", "--levels", "16"], "--levels 16 needs --dataset mnist"),
        (["--config", '{"levels": 8}'], "--levels 8 needs --dataset mnist"),
        (["--dataset", "mnist", "--levels", "4", "--components", "3"], "--components is the number of logistics"),
        (["--dataset", "mnist", "--levels", "4", "--head", "bernoulli"], "the bernoulli head is for 2 levels, not 4"),
    ],
)
def test_option_errors_are_one_line(argv, match, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", "--model", "fvsbn", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pixelchain: error: ") and match in err, err
    assert not out.exists()


def test_levels_and_dataset_outside_their_choices_are_refused(capsys):
    for argv in (["--levels", "3"], ["--dataset", "cifar"], ["--head", "gaussian"]):
        with pytest.raises(SystemExit) as e:
            main(["train", "--model", "fvsbn", *argv, "--out", "m.safetensors"])
        assert e.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_the_head_options_make_the_config():
    def cfg(*argv):
        a = build_parser().parse_args(["train", "--model", "fvsbn", *argv, "--out", "m.safetensors"])
        return model_config_from_args("fvsbn", a)

    assert cfg() == {}  # binary models: nothing new in their config
    assert cfg("--levels", "16") == {"levels": 16, "output": "categorical"}
    assert cfg("--levels", "256", "--head", "logistic-mixture", "--components", "3") == {
        "levels": 256, "output": "logistic-mixture", "components": 3}
    assert cfg("--levels", "8", "--config", '{"output": "logistic-mixture"}') == {"levels": 8, "output": "logistic-mixture"}
    assert cfg("--head", "categorical") == {"output": "categorical"}  # a 2-way softmax: allowed


@pytest.mark.parametrize("cfg", [{"levels": 256, "output": "logistic-mixture", "components": 3},
                                 {"levels": 4, "output": "categorical"}, {"levels": 2, "output": "categorical"}])
def test_a_grey_recipe_turns_into_a_command_that_repeats_it(cfg):
    tc = TrainConfig(epochs=2)
    argv = train_argv("fvsbn", cfg, "raster", tc, "m.safetensors")
    assert ("--dataset" in argv) == (cfg["levels"] > 2) and "--config" not in argv
    args = build_parser().parse_args(shlex.split(shlex.join(argv)))
    assert args.dataset == ("mnist" if cfg["levels"] > 2 else "binarized-mnist")
    cls = family_class("fvsbn").config_class
    assert cls.from_dict(model_config_from_args("fvsbn", args)) == cls.from_dict(cfg)
    assert build_parser().parse_args(train_argv("fvsbn", {}, "raster", tc, "m", dataset="mnist")).dataset == "mnist"
