"""The training panel and `pixelchain train` turn the same family options into the same model, and
the panel records a command line that repeats its run."""

from __future__ import annotations

import itertools
import shlex

import pytest

from engine.cli import build_parser
from engine.models import family_class
from engine.recipes import model_config_from_args, train_argv, train_config_from_args


@pytest.fixture
def panel(qtbot, tmp_path):
    from app.widgets.training import TrainingPanel
    from app.worker import Worker

    worker = Worker("test-training-recipes")
    p = TrainingPanel(worker, tmp_path / "out")
    qtbot.addWidget(p)
    yield p
    worker.shutdown()


def _cli_config(family: str, hidden: int | None, direct: bool, agnostic: bool, order_set: str | None) -> dict:
    argv = ["train", "--model", family, "--out", "m.safetensors"]
    argv += ["--hidden", str(hidden)] if hidden is not None else []
    argv += ["--direct"] if direct else []
    if agnostic:
        argv.append("--order-agnostic")
    elif getattr(family_class(family).config_class(), "order_agnostic", False):  # on by default: off in --config
        argv += ["--config", '{"order_agnostic": false}']
    argv += ["--order-set", order_set] if order_set else []
    return model_config_from_args(family, build_parser().parse_args(argv))


def test_panel_and_command_line_make_the_same_model_config(panel):
    """Every family, with and without direct connections and order-agnostic training, and each of
    MADE's order sets: the form and the equivalent options give equal configs (mask rules included)."""
    compared = 0
    for i in range(panel.family.count()):
        panel.family.setCurrentIndex(i)
        family = panel.family.currentData()
        panel.small.setChecked(False)
        fields = family_class(family).config_class.__dataclass_fields__
        sets = [panel.order_set.itemData(k) for k in range(panel.order_set.count())] if "order_set" in fields else [None]
        for direct, agnostic, order_set in itertools.product((False, True), (False, True), sets):
            if ("direct" not in fields and direct) or ("order_agnostic" not in fields and agnostic):
                continue
            if order_set is not None and not agnostic:
                continue
            panel.direct.setChecked(direct)
            panel.order_agnostic.setChecked(agnostic)
            if order_set is not None:
                panel.order_set.setCurrentIndex(panel.order_set.findData(order_set))
            hidden = panel.hidden.value() if "hidden" in fields else None
            got_family, cfg, _tc = panel.config()
            cls = family_class(family).config_class
            want = cls.from_dict(_cli_config(family, hidden, direct, agnostic, order_set))
            assert got_family == family and cls.from_dict(cfg) == want, (family, direct, agnostic, order_set)
            compared += 1
    assert compared >= 12
    panel.family.setCurrentIndex(panel.family.findData("made"))
    panel.order_agnostic.setChecked(True)
    for order_set, masks in (("random", 0), ("scans", 32), ("rows", 32)):
        panel.order_set.setCurrentIndex(panel.order_set.findData(order_set))
        assert panel.config()[1]["num_masks"] == masks == _cli_config("made", 500, True, True, order_set)["num_masks"]


def test_the_recorded_command_repeats_the_panels_run(panel):
    panel.family.setCurrentIndex(panel.family.findData("made"))
    panel.order_agnostic.setChecked(True)
    panel.order_set.setCurrentIndex(panel.order_set.findData("scans"))
    panel.epochs.setValue(7)
    panel.l1.setValue(3e-5)
    panel.ema.setChecked(True)
    family, cfg, tc = panel.config()
    argv = shlex.split(shlex.join(train_argv(family, cfg, "snake", tc, "m.safetensors")))
    args = build_parser().parse_args(argv)
    assert train_config_from_args(args) == tc and args.ordering == "snake"
    cls = family_class(family).config_class
    assert cls.from_dict(model_config_from_args(family, args)) == cls.from_dict(cfg)
