"""The app with an ensemble (a mixture of checkpoints, `pixelchain mix`): it loads like any model,
draws its heatmaps and bar chart, and the inspector shows each member's weight in the pinned
pixel's conditional, the engine's p(member | the pixels before it); a single model hides the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.models import Mixture, build_model

from .test_classes import stroke


@pytest.fixture(scope="module")
def ensemble_bundled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ensemble-bundled")
    members = []
    for seed, family, cfg in [(1, "made", {"hidden": (40,), "direct": True, "classes": 10}), (2, "nade", {"hidden": 20, "classes": 10})]:
        torch.manual_seed(seed)
        m = build_model(family, cfg)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
            m.set_class_prior(np.arange(10) + 5)
        members.append(m)
    meta = {"name": "pair", "metrics": {"test_nll": 80.0},
            "mixture": {"members": [{"name": "<b>a</b>", "family": "made", "metrics": {"test_nll": 81.5, "test_accuracy": 0.981}},
                                    {"name": "b", "family": "nade", "metrics": {}}]}}
    save_checkpoint(folder / "pair.safetensors", Mixture.of(members), meta)
    save_checkpoint(folder / "single.safetensors", members[0], {"name": "single", "metrics": {"test_nll": 90.0}})
    return folder


def test_the_inspector_shows_each_members_weight_in_the_pinned_pixels_conditional(qtbot, make_window, ensemble_bundled):
    win = make_window(ensemble_bundled)  # starts on the best single model, though the ensemble's NLL is lower
    assert win.model.family == "made"
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(ensemble_bundled / "pair.safetensors")
    assert win.model.family == "mixture" and win.class_panel.isVisible()
    card = win.model_info.text.text()  # the members, their names escaped, with their recorded figures
    assert "Members: &lt;b&gt;a&lt;/b&gt; (MADE, test NLL 81.50, 98.10% correct); b (NADE)." in card
    stroke(qtbot, win, [(8, 10), (9, 12), (10, 14), (12, 15), (14, 15)])
    pixel = 16 * 28 + 14
    win.state.set_pin(pixel)
    row = win.inspector.fields["members"]
    assert win.inspector._form.isRowVisible(row)
    x = win.session.flat().astype(np.float32)[None]
    with torch.no_grad():
        want = win.model.member_posterior(x, win.ordering)[:, 0, pixel].numpy()
    assert abs(want.sum() - 1) < 1e-5 and want.min() < 0.99  # the stroke tells the members apart
    shown = [float(part.split("<b>")[1].split("%")[0]) / 100 for part in row.text().split("&nbsp;") if "<b>" in part]
    np.testing.assert_allclose(shown, want, atol=0.006)
    assert "1 · MADE" in row.text() and "2 · NADE" in row.text()
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(ensemble_bundled / "single.safetensors")
    win.state.set_pin(pixel)
    assert not win.inspector._form.isRowVisible(win.inspector.fields["members"])


def test_file_menu_makes_an_ensemble_and_opens_it(qtbot, make_window, ensemble_bundled, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    win = make_window(ensemble_bundled)
    assert win.model.family == "made"
    members = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        members.append(build_model("made", {"hidden": (30,), "direct": True}))
        save_checkpoint(tmp_path / f"m{seed}.safetensors", members[-1], {"name": f"m{seed}"})
    out = tmp_path / "both"
    monkeypatch.setattr(QFileDialog, "getOpenFileNames",
                        lambda *a, **k: ([str(tmp_path / "m3.safetensors"), str(tmp_path / "m4.safetensors")], ""))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.acts.act_ensemble.trigger()
    assert win.model.family == "mixture" and [m.family for m in win.model.models] == ["made", "made"]
    assert (tmp_path / "both.safetensors").is_file()
    x = torch.zeros(1, 784)
    x[0, 300:320] = 1
    with torch.no_grad():
        want = torch.logsumexp(torch.stack([m.log_prob(x) for m in members]), 0) - np.log(2)
        np.testing.assert_allclose(win.model.log_prob(x).numpy(), want.numpy(), atol=1e-4)
    # members that do not fit: one line, and the app keeps its model
    grey = build_model("made", {"hidden": (30,), "levels": 4, "output": "categorical"})
    save_checkpoint(tmp_path / "grey.safetensors", grey, {"name": "grey", "dataset": "mnist"})
    monkeypatch.setattr(QFileDialog, "getOpenFileNames",
                        lambda *a, **k: ([str(tmp_path / "m3.safetensors"), str(tmp_path / "grey.safetensors")], ""))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "bad.safetensors"), ""))
    shown = win.model
    with qtbot.waitSignal(win.state.error, timeout=20000) as blocker:
        win.acts.act_ensemble.trigger()
    assert "same data" in blocker.args[0] and "\n" not in blocker.args[0].strip()
    assert win.model is shown and not (tmp_path / "bad.safetensors").exists()
    # one file chosen: said at once, nothing written
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(tmp_path / "m3.safetensors")], ""))
    with qtbot.waitSignal(win.state.error, timeout=5000) as blocker:
        win.acts.act_ensemble.trigger()
    assert "two or more" in blocker.args[0]
