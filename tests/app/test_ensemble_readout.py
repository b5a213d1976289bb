"""The read-out's ensemble line: log p of the drawn digit under an ensemble of orderings of an
order-agnostic model, computed on its own worker; absent for a model tied to one ordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.ordering import make_ordering

from .test_main_window import stroke


def _ensemble_now(win, n: int) -> float:
    x = torch.as_tensor(win.session.flat(), dtype=torch.float32)[None]
    with torch.no_grad():
        return float(win.model.ensemble_log_prob(x, n)[0])


def test_order_agnostic_model_shows_the_ensemble_log_p(qtbot, win, bundled):
    assert win.entry.name == "made-raster"
    assert win.readout.ens.isHidden()  # a model tied to raster has no ensemble
    with qtbot.waitSignal(win.ensembleShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "made-any.safetensors")
    ro = win.readout
    assert not ro.ens.isHidden() and "ensemble of 8 orderings" in ro.ens.text()  # no record, fresh masks: 8
    assert ro.ensemble.log_p == pytest.approx(_ensemble_now(win, 8), abs=1e-4)
    with qtbot.waitSignal(win.ensembleShown, timeout=20000):
        stroke(qtbot, win, [(10, 5), (10, 22)])
    after = ro.ensemble.log_p
    assert after == pytest.approx(_ensemble_now(win, 8), abs=1e-4)
    assert f"{after:.2f}" in ro.ens.text()
    tip = ro.ens.toolTip()
    assert "best member" in tip and "worst member" in tip and f"{win.figures.log_p:.2f}" in tip
    # another ordering: the same distribution, so no new computation, but the tooltip follows
    combo = win.ordering_picker.combo
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        combo.setCurrentIndex(combo.findData("spiral-out"))
        combo.activated.emit(combo.currentIndex())
    assert win.figures.ordering == make_ordering("spiral-out")
    assert ro.ensemble.log_p == after and f"{win.figures.log_p:.2f}" in ro.ens.toolTip()
    # back to a fixed-order model: the line goes
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "made-raster.safetensors")
    assert ro.ens.isHidden()


def _window_on(qtbot, make_window, folder, name: str, config: dict, recorded: int):
    """A window started on one MADE checkpoint whose metadata records an ensemble of ``recorded``."""
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model

    torch.manual_seed(0)
    save_checkpoint(folder / f"{name}.safetensors", build_model("made", config),
                    {"name": name, "metrics": {"test_nll": 90.0, f"test_nll_ensemble{recorded}": 89.0}})
    win = make_window(folder, start=False)
    with qtbot.waitSignal(win.ensembleShown, timeout=20000):
        win.checkpoints.start_default()
    return win


def test_recorded_ensemble_size_is_used(qtbot, make_window, tmp_path):
    cfg = {"hidden": (32,), "order_agnostic": True, "order_set": "scans", "num_masks": 6, "direct": True}
    win = _window_on(qtbot, make_window, tmp_path, "made-scans", cfg, 4)
    ro = win.readout
    assert "ensemble of 4 orderings" in ro.ens.text() and len(ro.ensemble.members) == 4
    assert all("· mask" in lab for lab, _ in ro.ensemble.members)
    assert ro.ensemble.log_p == pytest.approx(_ensemble_now(win, 4), abs=1e-4)
    assert np.isfinite(ro.ensemble.log_p)


def test_a_connectivity_agnostic_made_shows_the_ensemble_of_its_masks(qtbot, make_window, tmp_path):
    win = _window_on(qtbot, make_window, tmp_path, "made-masks", {"hidden": (24,), "num_masks": 3, "direct": True}, 3)
    ro = win.readout
    assert "ensemble of 3 masks" in ro.ens.text() and "connectivity patterns" in ro.ens.toolTip()
    assert ro.ensemble.log_p == pytest.approx(_ensemble_now(win, 3), abs=1e-4)
    info = win.model_info.text.text()
    assert "ensemble of 3 masks" in info and "3 connectivity patterns" in info
