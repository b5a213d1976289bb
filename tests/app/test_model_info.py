"""The model panel states what is known about the model, including ensemble likelihoods."""

from __future__ import annotations

from app.widgets.model_info import ModelInfo
from engine.models import build_model


def test_model_info_shows_test_and_ensemble_nll(qtbot):
    w = ModelInfo()
    qtbot.addWidget(w)
    m = build_model("made", {"hidden": (8,), "order_agnostic": True, "num_masks": 4})
    w.show_model(m, None, {"metrics": {"test_nll": 91.234, "valid_nll": 92.0, "test_nll_ensemble32": 87.1, "test_nll_ensembleX": 1.0}})
    text = w.text.text()
    assert "91.23" in text and "92.00" in text
    assert "ensemble of 32 orderings <b>87.10</b>" in text
    assert "ensembleX" not in text and "Order-agnostic" in text
    w.show_model(build_model("fvsbn"), None, {"metrics": {"test_nll": "bad", "test_nll_ensemble4": None}})
    text = w.text.text()
    assert "ensemble" not in text and "test NLL" not in text and "Tied to its ordering" in text


def test_model_info_says_whether_an_lmconv_has_a_blind_spot(qtbot):
    w = ModelInfo()
    qtbot.addWidget(w)
    cfg = {"channels": 2, "layers": 1, "head": 3, "order_agnostic": True}
    w.show_model(build_model("lmconv", cfg), None, {})
    assert "Blind spot" in w.text.text()
    w.show_model(build_model("lmconv", dict(cfg, context=7)), None, {})
    assert "Blind spot" not in w.text.text() and "all of them (7 units" in w.text.text()
