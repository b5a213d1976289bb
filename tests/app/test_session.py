"""The Qt-free explorer state (engine/session.py): editing, history, figures, percentile, model lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering
from engine.session import (
    ModelEntry,
    Session,
    brush_offsets,
    list_checkpoints,
    percentile,
    pixel_figures,
    reference_log_probs,
    resolve_model_name,
)


def test_brush_sizes_grow_and_are_centred():
    sizes = [len(brush_offsets(s)) for s in range(1, 6)]
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] > 9
    assert (0, 0) in brush_offsets(3) and (-1, 0) in brush_offsets(3) and (1, 0) in brush_offsets(3)


def test_stroke_undo_redo_invert_clear():
    s = Session()
    s.begin_stroke()
    assert s.paint(5, 2, 1, from_point=(5, 20))  # a horizontal line with no gaps
    s.end_stroke()
    assert s.canvas[5, 2:21].all() and s.canvas.sum() == 19
    drawn = s.canvas.copy()
    s.invert()
    assert s.canvas.sum() == 784 - 19
    assert s.undo() and np.array_equal(s.canvas, drawn)
    assert s.undo() and s.canvas.sum() == 0 and not s.can_undo
    assert s.redo() and np.array_equal(s.canvas, drawn)
    s.clear()
    assert s.canvas.sum() == 0 and s.can_undo and not s.can_redo


def test_a_stroke_that_changes_nothing_leaves_no_undo_step_and_mask_is_separate():
    s = Session()
    s.begin_stroke()
    assert not s.paint(3, 3, 0)
    s.end_stroke()
    assert not s.can_undo
    v = s.version
    s.begin_stroke()
    s.paint(27, 27, 1, brush=3, mask=True)
    s.end_stroke()
    assert s.mask[27, 27] and s.mask[26, 27] and s.mask[27, 26] and s.canvas.sum() == 0 and s.version == v
    assert (~s.known).sum() == s.mask.sum()
    s.undo()
    assert not s.mask.any()


def test_pixel_figures_match_the_model_log_prob():
    torch.manual_seed(0)
    model = build_model("made", {"hidden": (16,), "order_agnostic": True, "num_masks": 0})
    img = (np.random.default_rng(0).random((28, 28)) < 0.2).astype(np.uint8)
    for name in ("raster", "spiral-in"):
        o = make_ordering(name)
        f = pixel_figures(model, img, o)
        with torch.no_grad():
            expected = float(model.log_prob(torch.as_tensor(img.reshape(1, -1), dtype=torch.float32), o))
        assert f.log_p == pytest.approx(expected, rel=1e-5)
        assert f.prob.shape == (28, 28) and f.nll.min() >= 0
        # the NLL of a pixel is -log p of the drawn value under its conditional
        i = 300
        p = f.prob.reshape(-1)[i]
        v = img.reshape(-1)[i]
        assert f.nll.reshape(-1)[i] == pytest.approx(-math.log(p if v else 1 - p), rel=1e-4, abs=1e-6)
        assert f.bits_per_pixel == pytest.approx(-expected / (784 * math.log(2)), rel=1e-5)


def test_reference_log_probs_can_be_driven_batch_by_batch():
    torch.manual_seed(0)
    model = build_model("fvsbn")
    x = (np.random.default_rng(1).random((25, 784)) < 0.3).astype(np.uint8)
    gen = reference_log_probs(model, x, batch_size=10)
    fracs = []
    try:
        while True:
            fracs.append(next(gen))
    except StopIteration as stop:
        logp = stop.value
    assert fracs == [0.4, 0.8, 1.0]
    np.testing.assert_allclose(logp, model.log_prob(torch.as_tensor(x, dtype=torch.float32)).detach().numpy(), rtol=1e-5)


def test_percentile_counts_values_below_with_half_ties():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    assert percentile(0.0, ref) == 0 and percentile(5.0, ref) == 100
    assert percentile(2.0, ref) == pytest.approx(37.5)
    assert math.isnan(percentile(1.0, np.array([])))


def test_listing_and_resolving_checkpoints(tmp_path):
    m = build_model("fvsbn")
    save_checkpoint(tmp_path / "a.safetensors", m, {"name": "alpha", "metrics": {"test_nll": 88.5}})
    save_checkpoint(tmp_path / "a.resume.safetensors", m, {})
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint at all")
    entries, errors = list_checkpoints(tmp_path)
    assert [e.name for e in entries] == ["alpha"] and len(errors) == 1 and "broken" in errors[0]
    assert "FVSBN" in entries[0].label and "88.50" in entries[0].label
    assert resolve_model_name("alpha", entries) == tmp_path / "a.safetensors"
    assert resolve_model_name(str(tmp_path / "a.resume.safetensors"), entries).name == "a.resume.safetensors"
    with pytest.raises(FileNotFoundError, match="alpha"):
        resolve_model_name("nope", entries)
    e = ModelEntry.from_file(tmp_path / "a.safetensors")
    assert e.family == "fvsbn" and e.ordering == "raster" and e.test_nll == 88.5
    assert e.ensemble is None and "ensemble" not in e.label


def test_the_label_shows_the_largest_recorded_ensemble(tmp_path):
    m = build_model("made", {"hidden": (8,), "order_agnostic": True, "num_masks": 4})
    metrics = {"test_nll": 93.15, "test_nll_ensemble16": 89.73, "test_nll_ensemble32": 89.5,
               "test_nll_ensemble32_stderr": 0.22, "test_nll_ensemble2048": 80.0, "test_nll_ensemble8": "x"}
    save_checkpoint(tmp_path / "s.safetensors", m, {"name": "scans", "metrics": metrics})
    e = ModelEntry.from_file(tmp_path / "s.safetensors")
    assert e.ensemble == (32, 89.5)  # the stderr, an absurd size and a non-number are not ensembles
    assert e.label.endswith("test NLL 93.15  ·  ensemble of 32: 89.50")
