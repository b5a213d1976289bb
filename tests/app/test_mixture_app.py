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
    save_checkpoint(folder / "pair.safetensors", Mixture.of(members), {"name": "pair", "metrics": {"test_nll": 80.0}})
    save_checkpoint(folder / "single.safetensors", members[0], {"name": "single", "metrics": {"test_nll": 90.0}})
    return folder


def test_the_inspector_shows_each_members_weight_in_the_pinned_pixels_conditional(qtbot, make_window, ensemble_bundled):
    win = make_window(ensemble_bundled)  # starts on the best: the ensemble
    assert win.model.family == "mixture" and win.class_panel.isVisible()
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
