"""Training from the app: a short run that completes and lands in the model picker, a stop that
takes effect promptly, and closing the window mid-training."""

from __future__ import annotations

import math
import re
import time

from PySide6.QtCore import Qt

from engine.checkpoint import load_checkpoint, read_metadata


def _small(panel, epochs: int, max_train: int = 300) -> None:
    panel.family.setCurrentIndex(panel.family.findData("fvsbn"))
    panel.epochs.setValue(epochs)
    panel.batch.setValue(50)
    panel.max_train.setValue(max_train)
    panel.max_valid.setValue(200)


def test_short_training_run_saves_and_lists_its_checkpoint(qtbot, win, data_dir):
    panel = win.training
    _small(panel, epochs=2)
    assert re.search(r"\((cpu|cuda|mps)\)(  ·  bf16 in [\w -]+)?$", panel.device.text()), panel.device.text()
    with qtbot.waitSignal(panel.checkpointReady, timeout=60000) as blocker:
        panel.start_btn.click()
        assert panel.running and not panel.start_btn.isEnabled()
    path, how = blocker.args
    assert how == "finished" and path.is_file() and path.parent == panel.out_dir
    xs, ys = panel.valid_curve.getData()
    assert list(xs) == [1, 2] and all(math.isfinite(y) for y in ys)
    meta = read_metadata(path)
    assert meta["family"] == "fvsbn" and len(meta["history"]) == 2
    assert math.isfinite(meta["metrics"]["test_nll"])  # measured after the run
    labels = [win.model_picker.itemText(i) for i in range(win.model_picker.count())]
    assert any(path.stem in t and "test NLL" in t for t in labels)
    assert not panel.running and panel.start_btn.isEnabled()
    load_checkpoint(path)  # a complete, loadable file


def test_regularisation_options_reach_the_run(qtbot, win, data_dir):
    """The L1 penalty and weight averaging set in the panel are the ones the run trains with."""
    panel = win.training
    _small(panel, epochs=1)
    assert panel.config()[2].l1 == 0.0 and panel.config()[2].ema == 0.0
    panel.l1.setValue(1e-4)
    panel.ema.setChecked(True)
    tc = panel.config()[2]
    assert tc.l1 == 1e-4 and tc.ema == 0.999
    with qtbot.waitSignal(panel.checkpointReady, timeout=60000) as blocker:
        panel.start_btn.click()
    meta = read_metadata(blocker.args[0])
    assert meta["train_config"]["l1"] == 1e-4 and meta["train_config"]["ema"] == 0.999
    panel.l1.setValue(0.0)
    panel.ema.setChecked(False)


def test_stop_takes_effect_quickly_and_keeps_the_best_epoch(qtbot, win, data_dir):
    panel = win.training
    _small(panel, epochs=200, max_train=2000)
    panel.start_btn.click()
    qtbot.waitUntil(lambda: panel.epochs_done >= 1, timeout=60000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(panel.checkpointReady, timeout=10000) as blocker:
        panel.stop_btn.click()
    stop_seconds = time.perf_counter() - t0
    path, how = blocker.args
    assert how == "stopped" and panel.epochs_done < 200
    assert stop_seconds < 5  # the target is < 1 s; generous for a loaded CI machine
    meta = read_metadata(path)
    assert len(meta["history"]) >= 1 and "test_nll" not in meta.get("metrics", {})
    assert "Stopped" in panel.status.text()


def test_closing_the_window_mid_training_asks_then_stops_cleanly(qtbot, make_window, bundled, data_dir, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    win = make_window(bundled)
    panel = win.training
    _small(panel, epochs=200, max_train=2000)
    panel.start_btn.click()
    qtbot.waitUntil(lambda: panel.progress.value() > 0, timeout=60000)
    out_dir = panel.out_dir
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda _p, _t, text, *a, **k: asked.append(text) or answers.pop(0)))
    assert not win.close()  # "No": the window and the run go on
    assert len(asked) == 1 and "training" in asked[0] and win.isVisible() and panel.running
    assert win.close()  # "Yes"
    assert len(asked) == 2 and not win.isVisible()
    assert not win.trainer._thread.isRunning() and not win.compute._thread.isRunning()
    leftovers = [p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # nothing half-written
    for p in out_dir.glob("*.safetensors"):
        load_checkpoint(p)  # whatever is there is complete


def test_every_family_and_option_gives_a_buildable_config(win):
    """Each family the panel offers, CPU-sized or not, with or without order-agnostic training,
    turns into a config the engine accepts; CPU-sized deep models are the small quick configs."""
    from engine.models import QUICK_CONFIGS, build_model
    from engine.ordering import make_ordering

    panel = win.training
    for i in range(panel.family.count()):
        panel.family.setCurrentIndex(i)
        for small in (True, False):
            panel.small.setChecked(small)
            for oa in (False, True):
                panel.order_agnostic.setChecked(oa and panel.order_agnostic.isEnabled())
                family, cfg, _ = panel.config()
                if small:
                    for k, v in QUICK_CONFIGS[family].items():
                        if k != "hidden":
                            assert cfg[k] == v
                if family == "pixelcnn" or not small:
                    continue  # full-size deep models are slow to build; pixelcnn is raster-only
                model = build_model(family, cfg, make_ordering("raster"))
                assert model.family == family
                assert bool(getattr(model.config, "order_agnostic", False)) == panel.order_agnostic.isChecked()
    panel.family.setCurrentIndex(panel.family.findData("lstm"))
    panel.small.setChecked(True)
    assert panel.hidden.value() == QUICK_CONFIGS["lstm"]["hidden"]
    panel.small.setChecked(False)
    assert panel.hidden.value() == 256  # the GPU-sized default


def test_made_order_set_and_bf16_options_reach_the_config(win):
    from engine.models import build_model
    from engine.ordering import make_ordering, scan_orderings

    panel = win.training
    panel.family.setCurrentIndex(panel.family.findData("made"))
    panel.order_agnostic.setChecked(False)
    assert not panel.order_set.isEnabled()
    assert "order_set" not in panel.config()[1]
    panel.order_agnostic.setChecked(True)
    assert panel.order_set.isEnabled()
    panel.order_set.setCurrentIndex(panel.order_set.findData("scans"))
    family, cfg, tc = panel.config()
    assert cfg["order_set"] == "scans" and cfg["num_masks"] == 32
    assert tc.amp == panel.amp.isEnabled()  # bf16 by default for MADE where it is native, as the CLI's --precision auto
    model = build_model(family, dict(cfg, hidden=(16,)), make_ordering("raster"))
    assert {model.member(k)[0] for k in range(16)} == set(scan_orderings())
    panel.amp.setChecked(True)
    assert panel.config()[2].amp == panel.amp.isEnabled()  # offered only where bf16 is native
    panel.amp.setChecked(False)
    panel.order_set.setCurrentIndex(panel.order_set.findData("rows"))
    family, cfg, _tc = panel.config()
    assert cfg["order_set"] == "rows" and cfg["num_masks"] == 32
    rows = build_model(family, dict(cfg, hidden=(16,)), make_ordering("raster"))
    assert {rows.member(k)[0].name for k in range(1, 8)} == {"random-rows"}
    panel.order_set.setCurrentIndex(panel.order_set.findData("random"))
    assert panel.config()[1]["num_masks"] == 0 and panel.config()[1]["order_set"] == "random"
    # MADE trains with direct connections unless the box is cleared
    assert panel.direct.isEnabled() and panel.config()[1]["direct"] is True
    panel.direct.setChecked(False)
    assert panel.config()[1]["direct"] is False
    assert build_model("made", dict(panel.config()[1], hidden=(8,))).direct is None
    panel.direct.setChecked(True)
    # families without orderings sets leave it off
    panel.family.setCurrentIndex(panel.family.findData("lstm"))
    panel.order_agnostic.setChecked(True)
    assert not panel.order_set.isEnabled() and "order_set" not in panel.config()[1]
    assert not panel.direct.isEnabled() and "direct" not in panel.config()[1]


def test_bf16_is_offered_only_where_it_is_native(qtbot, tmp_path, monkeypatch):
    import engine.train as tr
    from app.widgets.training import TrainingPanel
    from app.worker import Worker

    for flags, offered in (({"sse2", "avx2"}, False), ({"avx2", "avx512_bf16"}, True), ({"avx512_bf16", "amx_bf16"}, True)):
        monkeypatch.setattr(tr, "_cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr("app.widgets.training.resolve_device", lambda name="auto": tr.torch.device("cpu"))
        worker = Worker("test-training")
        panel = TrainingPanel(worker, tmp_path)
        qtbot.addWidget(panel)
        assert panel.amp.isEnabled() == offered
        for family in ("fvsbn", "nade", "made", "pixelcnn", "lstm", "fvsbn"):  # the default follows --precision auto
            panel.family.setCurrentIndex(panel.family.findData(family))
            assert panel.amp.isChecked() == (offered and family in tr.BF16_PAYS), family
        panel.amp.setChecked(True)
        assert panel.config()[2].amp == offered
        if not offered:
            assert "no bf16 instructions" in panel.amp.toolTip()
            assert "bf16" not in panel.device.text()
        else:  # the device row says what computes it
            hw = "AMX" if "amx_bf16" in flags else "AVX-512 BF16"
            assert panel.device.text().endswith(f"bf16 in {hw}") and hw in panel.amp.toolTip()
        worker.shutdown()


def test_a_bundled_models_recipe_fills_the_form_and_reaches_the_run(qtbot, tmp_path):
    from app.widgets.training import TrainingPanel
    from app.worker import Worker
    from engine.catalogue import list_checkpoints
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model
    from engine.ordering import make_ordering

    cfg = {"hidden": (64, 48), "direct": True, "order_agnostic": True, "order_set": "scans", "num_masks": 8, "member_bias": True}
    tc = {"epochs": 40, "batch_size": 250, "lr": 0.002, "lr_min_factor": 0.02, "weight_decay": 1e-4, "l1": 3e-5,
          "ema": 0.999, "amp": False, "max_train": None, "max_valid": 5000, "patience": "soon", "seed": 3}
    save_checkpoint(tmp_path / "deep.safetensors", build_model("made", cfg, make_ordering("snake")),
                    {"name": "deep", "train_config": tc, "command": "pixelchain train --model made ...",
                     "metrics": {"test_nll": 95.0, "test_nll_ensemble8": 91.0}})
    save_checkpoint(tmp_path / "plain.safetensors", build_model("fvsbn"), {"name": "plain", "metrics": {"test_nll": 99.0}})
    entries, _ = list_checkpoints(tmp_path)
    worker = Worker("test-recipes")
    panel = TrainingPanel(worker, tmp_path / "out")
    qtbot.addWidget(panel)
    panel.set_recipes(entries)
    labels = [panel.recipe.itemText(i) for i in range(panel.recipe.count())]
    assert labels == ["your own settings", "deep  ·  91.00"]  # plain records no training settings
    assert "ensemble of 8: 91.00" in panel.recipe.itemData(1, Qt.ToolTipRole)
    panel.recipe.activated.emit(1)
    assert panel.recipe.currentIndex() == 1
    assert panel.family.currentData() == "made" and panel.ordering.currentData() == "snake"
    assert panel.hidden.value() == 64 and panel.epochs.value() == 40 and panel.batch.value() == 250
    assert panel.order_set.currentData() == "scans" and panel.ema.isChecked() and not panel.small.isChecked()
    family, got, t = panel.config()
    assert got["hidden"] == (64, 48) and got["num_masks"] == 8 and got["member_bias"] and got["order_set"] == "scans"
    assert (t.lr, t.lr_min_factor, t.weight_decay, t.l1, t.ema, t.seed) == (0.002, 0.02, 1e-4, 3e-5, 0.999, 3)
    assert t.patience is None and t.max_train is None and t.max_valid == 5000  # a malformed value is not taken
    build_model(family, got, make_ordering("snake"))  # the config builds
    panel.hidden.setValue(100)  # the form's visible settings win over the recipe's
    assert panel.config()[1]["hidden"] == (100,)
    panel.family.setCurrentIndex(panel.family.findData("nade"))  # another family: the recipe is dropped
    assert panel.recipe.currentIndex() == 0 and "num_masks" not in panel.config()[1]
    assert panel.config()[2].lr_min_factor == 1.0
    worker.shutdown()


def test_a_recipe_trained_to_a_time_limit_fills_in_the_epochs_its_schedule_was_fitted_to(qtbot, tmp_path):
    from app.widgets.training import TrainingPanel
    from app.worker import Worker
    from engine.catalogue import list_checkpoints
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model

    tc = {"epochs": 2000, "batch_size": 1000, "lr": 0.003, "max_minutes": 105.0, "fit_schedule": True}
    save_checkpoint(tmp_path / "timed.safetensors", build_model("made", {"hidden": (32,), "direct": True}),
                    {"name": "timed", "train_config": tc, "schedule_epochs": 480, "metrics": {"test_nll": 95.0}})
    entries, _ = list_checkpoints(tmp_path)
    worker = Worker("test-timed-recipe")
    panel = TrainingPanel(worker, tmp_path / "out")
    qtbot.addWidget(panel)
    panel.set_recipes(entries)
    panel.recipe.activated.emit(1)
    assert panel.epochs.value() == 480 and panel.batch.value() == 1000  # not the cap of 2000
    worker.shutdown()


def test_a_recipe_whose_run_started_from_another_checkpoint_says_so(qtbot, tmp_path):
    """A model grown or fine-tuned from another checkpoint: its recipe trains from fresh weights,
    and the panel says so (status line and tooltip) instead of promising the bundled result."""
    from app.widgets.training import TrainingPanel
    from app.worker import Worker
    from engine.catalogue import list_checkpoints
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model

    tc = {"epochs": 6, "batch_size": 50, "lr": 7e-4}
    save_checkpoint(tmp_path / "grown.safetensors", build_model("fvsbn"),
                    {"name": "grown", "train_config": tc, "init_from": "/runs/pcnn32/small.safetensors",
                     "metrics": {"test_nll": 90.0}})
    save_checkpoint(tmp_path / "fresh.safetensors", build_model("fvsbn"),
                    {"name": "fresh", "train_config": tc, "metrics": {"test_nll": 95.0}})
    entries, _ = list_checkpoints(tmp_path)
    worker = Worker("test-continued-recipe")
    panel = TrainingPanel(worker, tmp_path / "out")
    qtbot.addWidget(panel)
    panel.set_recipes(entries)
    names = {panel.recipe.itemText(i).split()[0]: i for i in range(1, panel.recipe.count())}
    assert "started from the weights of small.safetensors" in panel.recipe.itemData(names["grown"], Qt.ToolTipRole)
    assert "started from" not in panel.recipe.itemData(names["fresh"], Qt.ToolTipRole)
    panel.recipe.activated.emit(names["fresh"])
    assert "started from" not in panel.status.text()
    panel.recipe.activated.emit(names["grown"])
    assert "small.safetensors" in panel.status.text() and "fresh weights" in panel.status.text()
    panel.recipe.activated.emit(names["fresh"])  # the note goes with the recipe it belongs to
    assert "started from" not in panel.status.text()
    worker.shutdown()


def test_an_epoch_validated_by_accuracy_shows_the_classifier_in_the_status(win):
    from pathlib import Path

    from engine.train import EpochEnd

    panel = win.training
    panel._on_progress(Path("c.safetensors"), EpochEnd(3, 10, 95.2, 96.4, 96.1, True, 60.0, 180.0, 420.0, 0.9712, 0.9712))
    assert "classifier 97.12% correct" in panel.status.text() and "(best so far, saved)" in panel.status.text()
    panel._on_progress(Path("c.safetensors"), EpochEnd(4, 10, 95.0, 96.0, 96.0, True, 60.0, 240.0, 360.0))
    assert "correct" not in panel.status.text() and "96.00 nats" in panel.status.text()
