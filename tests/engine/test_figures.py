"""The per-pixel figures the explorer shows (engine/figures.py): conditionals and NLL, the reference
log p of test digits and the percentile among them. Influence and ensemble read-outs have their
own files (test_influence.py, test_ensemble_figures.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.figures import percentile, pixel_figures, reference_log_probs
from engine.models import build_model
from engine.ordering import make_ordering


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
