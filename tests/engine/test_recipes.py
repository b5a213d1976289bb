"""engine.recipes: `pixelchain train`'s options come from TrainConfig, family options make one model
config (with the MADE mask rules) wherever they are given, and measured metrics are recorded once."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
import torch

from engine.checkpoint import INT8, load_checkpoint, read_metadata, save_checkpoint, stored_dtype
from engine.cli import build_parser
from engine.data import CHECKSUMS
from engine.models import QUICK_CONFIGS, build_model, family_class
from engine.recipes import (
    FIXED_MEMBERS,
    model_config,
    model_config_from_args,
    nll_metrics,
    record_metrics,
    run_metadata,
    train_argv,
    train_config_from_args,
    with_metrics,
)
from engine.train import TrainConfig

OUT = ["--out", "m.safetensors"]


def _train_args(*extra: str):
    return build_parser().parse_args(["train", "--model", "made", *extra, *OUT])


def test_train_options_are_the_train_config_fields_with_their_defaults():
    args = _train_args()
    assert train_config_from_args(args) == TrainConfig()
    train = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in train, f"TrainConfig.{f.name} has no option"
        assert train[f.name].default == f.default
        assert train[f.name].help.startswith(f.metadata["help"])
        assert train[f.name].option_strings == ["--" + f.name.replace("_", "-")]


def test_every_train_option_reaches_the_train_config():
    changed = {"epochs": "7", "batch_size": "33", "lr": "0.0025", "weight_decay": "1e-05", "lr_min_factor": "0.1",
               "grad_clip": "2.5", "warmup": "50", "seed": "4", "device": "cpu", "patience": "3", "max_minutes": "1.5", "state_every": "0",
               "state_minutes": "2.5",
               "max_train": "200", "max_valid": "100", "eval_batch_size": "250", "l1": "3e-05", "ema": "0.999",
               "class_weight": "2.5", "class_batch": "8", "shift": "2", "select": "accuracy"}
    switches = [f.name for f in dataclasses.fields(TrainConfig) if f.type in ("bool", bool)]
    assert set(changed) | set(switches) == {f.name for f in dataclasses.fields(TrainConfig)}
    argv = [x for k, v in changed.items() for x in ("--" + k.replace("_", "-"), v)] + ["--" + s.replace("_", "-") for s in switches]
    tc = train_config_from_args(_train_args(*argv))
    for f in dataclasses.fields(TrainConfig):
        want = True if f.name in switches else type(f.default if f.default is not None else 0.0)(changed[f.name])
        got = getattr(tc, f.name)
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, f.name
        assert got != f.default, f.name


@pytest.mark.parametrize(
    "options, num_masks",
    [
        ({"order_agnostic": True}, 0),  # random orderings: a fresh ordering and mask every minibatch
        ({"order_agnostic": True, "order_set": "random"}, 0),
        ({"order_agnostic": True, "order_set": "scans"}, FIXED_MEMBERS),
        ({"order_agnostic": True, "order_set": "rows"}, FIXED_MEMBERS),
        ({"order_agnostic": True, "order_set": "scans", "num_masks": 5}, 5),  # given: kept
        ({"order_agnostic": True, "num_masks": 0}, 0),
        ({"num_masks": 0}, 0),  # not order-agnostic: only what is given
        ({}, 1),  # the family's default
    ],
)
def test_made_mask_rules(options, num_masks):
    cfg = model_config("made", hidden=16, direct=True, **options)
    assert build_model("made", cfg).config.num_masks == num_masks
    argv = ["--hidden", "16", "--direct"]
    for key, value in options.items():
        argv += ["--" + key.replace("_", "-")] + ([] if value is True else [str(value)])
    assert model_config_from_args("made", _train_args(*argv)) == cfg


def test_given_config_fields_are_kept_and_options_win():
    recorded = {"hidden": [64, 48], "order_agnostic": True, "order_set": "scans", "num_masks": 8, "member_bias": True}
    cfg = model_config("made", recorded)
    assert cfg["num_masks"] == 8 and cfg["hidden"] == (64, 48)  # a recorded number of masks is not re-chosen
    assert model_config("made", recorded, hidden=(100,))["hidden"] == (100,)
    args = _train_args("--order-agnostic", "--config", json.dumps({"num_masks": 3, "dropout": 0.1}))
    assert model_config_from_args("made", args) == {"num_masks": 3, "dropout": 0.1, "order_agnostic": True}


@pytest.mark.parametrize(
    "family, argv, match",
    [
        ("fvsbn", ["--hidden", "5"], "has no hidden size"),
        ("nade", ["--direct"], "--direct does not apply to nade"),
        ("nade", ["--num-masks", "0"], "--num-masks does not apply"),
        ("nade", ["--hidden", "5,5"], "one hidden layer"),
        ("made", ["--order-set", "scans"], "add --order-agnostic"),
        ("lstm", ["--order-agnostic", "--order-set", "scans"], "--order-set does not apply to lstm"),
        ("made", ["--config", "[1]"], "JSON object"),
        ("made", ["--config", "{bad"], "not valid JSON"),
    ],
)
def test_options_that_do_not_apply_are_errors_on_the_command_line(family, argv, match):
    args = build_parser().parse_args(["train", "--model", family, *argv, *OUT])
    with pytest.raises(ValueError, match=match):
        model_config_from_args(family, args)


def test_without_strict_options_that_do_not_apply_are_left_out():
    assert model_config("nade", hidden=7, direct=True, order_agnostic=True, order_set="scans", strict=False) == {"hidden": 7}
    assert "order_set" not in model_config("made", order_agnostic=False, order_set="scans", strict=False)


CASES = [
    ("made", {"hidden": (300, 200), "direct": True, "order_agnostic": True, "order_set": "rows", "num_masks": 32}, "raster"),
    ("made", {"hidden": (16,), "order_agnostic": True, "num_masks": 1, "dropout": 0.25}, "snake"),  # 1: kept, not re-chosen
    ("made", {"hidden": (16,), "num_masks": 4, "order_set": "scans"}, "raster"),  # an order set left unused
    ("transformer", {"order_agnostic": False, **QUICK_CONFIGS["transformer"]}, "raster"),
    ("lstm", dict(QUICK_CONFIGS["lstm"]), "random:3"),
    ("fvsbn", {}, "column"),
]


@pytest.mark.parametrize("family, cfg, ordering", CASES)
def test_a_recipe_turns_into_a_command_that_repeats_it(family, cfg, ordering):
    tc = TrainConfig(epochs=3, lr=2e-3, amp=True, max_train=500, grad_clip=1.5, ema=0.999, fit_schedule=True, max_minutes=2.0)
    argv = train_argv(family, cfg, ordering, tc, "out dir/m.safetensors")
    args = build_parser().parse_args(shlex.split(shlex.join(argv)))  # through a shell's quoting
    assert args.model == family and args.ordering == ordering and args.out == "out dir/m.safetensors"
    assert train_config_from_args(args) == tc
    cls = family_class(family).config_class
    assert cls.from_dict(model_config_from_args(family, args)) == cls.from_dict(cfg)


def test_run_metadata_records_data_device_and_a_quoted_command():
    meta = run_metadata("cpu", ["train", "--model", "made", "--config", '{"dropout": 0.1}'], name="m", init_from="a.safetensors")
    assert meta["data"]["checksums"] == {k: CHECKSUMS[k] for k in ("train", "valid")}
    assert meta["device"] == "cpu" and meta["name"] == "m" and meta["init_from"] == "a.safetensors"
    assert shlex.split(meta["command"]) == ["pixelchain", "train", "--model", "made", "--config", '{"dropout": 0.1}']


def test_metrics_are_merged_into_the_metadata(tmp_path):
    assert nll_metrics("test", 90.5, 0.25) == {"test_nll": 90.5, "test_nll_stderr": 0.25}
    assert nll_metrics("valid", 91, 0.5, ensemble=8) == {"valid_nll_ensemble8": 91.0, "valid_nll_ensemble8_stderr": 0.5}
    meta = {"name": "m", "metrics": {"valid_nll": 92.0, "test_nll": 99.0}}
    merged = with_metrics(meta, nll_metrics("test", 90.5, 0.25))
    assert merged["metrics"] == {"valid_nll": 92.0, "test_nll": 90.5, "test_nll_stderr": 0.25} and merged["name"] == "m"
    assert meta["metrics"]["test_nll"] == 99.0  # the original is not changed
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("fvsbn"), meta)
    before = load_checkpoint(path).model.state_dict()
    record_metrics(path, nll_metrics("test", 90.5, 0.25, ensemble=4))
    info = read_metadata(path)
    assert info["metrics"] == {"valid_nll": 92.0, "test_nll": 99.0, "test_nll_ensemble4": 90.5, "test_nll_ensemble4_stderr": 0.25}
    assert info["name"] == "m"
    after = load_checkpoint(path).model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)


@pytest.mark.parametrize("dtype", [torch.float16, INT8, None])
def test_recording_metrics_keeps_how_the_file_stores_its_weights(tmp_path, dtype):
    """A float16 or int8 checkpoint (the bundled ones) stays one, with its extra tensors and the
    same log-likelihoods, when ``eval --record`` or the training panel adds a metric."""
    torch.manual_seed(0)
    model = build_model("made", {"hidden": (300,)})
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"name": "m"}, extra={"step": torch.arange(3)}, dtype=dtype)
    size, kind = path.stat().st_size, stored_dtype(path)
    assert kind == (dtype or torch.float32)
    x = torch.randint(0, 2, (5, 784)).float()
    before = load_checkpoint(path).model.log_prob(x)
    record_metrics(path, nll_metrics("test", 90.5, 0.25))
    ck = load_checkpoint(path)
    assert ck.meta["metrics"]["test_nll"] == 90.5 and stored_dtype(path) == kind
    assert abs(path.stat().st_size - size) < 200 and torch.equal(ck.extra["step"], torch.arange(3))
    assert torch.equal(ck.model.log_prob(x), before)
