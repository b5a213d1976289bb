"""The class read-out of a drawing (engine/class_figures.py): one batched pass over the classes gives
the marginal conditionals, one class's conditionals, the posterior from the drawn prefix and the
evidence map, each equal to what the model's public API computes on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.class_figures import class_pass, drawn_prefix
from engine.figures import pixel_figures
from engine.models import build_model
from engine.ordering import make_ordering

pytestmark = pytest.mark.usefixtures("_no_grad")


@pytest.fixture
def _no_grad():
    with torch.no_grad():
        yield


def tiny_conditional(levels: int = 2, seed: int = 0, ordering: str = "raster"):
    """A small conditional PixelCNN whose class terms matter (they start at zero)."""
    torch.manual_seed(seed)
    cfg = {"channels": 8, "layers": 2, "head": 16, "classes": 10, "levels": levels,
           "output": "bernoulli" if levels == 2 else "categorical"}
    m = build_model("pixelcnn", cfg, make_ordering(ordering)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (1.0 if name.startswith("class_") else 0.3))
        m.set_class_prior(np.arange(1, 11))
    return m


def drawing(levels: int, rows: slice = slice(6, 15)) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[rows, 10:14] = levels - 1
    img[rows.stop - 1, 8:20] = max(1, (levels - 1) // 2)
    return img


@pytest.mark.parametrize("levels", [2, 4])
def test_one_pass_matches_the_public_api(levels):
    m = tiny_conditional(levels)
    img = drawing(levels)
    x = torch.as_tensor(img.reshape(1, -1), dtype=torch.float32)
    order = m.ordering
    marg, figs = class_pass(m, x, order)
    torch.testing.assert_close(marg, m.logits(x), atol=1e-4, rtol=1e-4)
    for c in (0, 7):
        given, _ = class_pass(m, x, order, y=c)
        torch.testing.assert_close(given, m.logits(x, y=c), atol=1e-5, rtol=1e-5)
    upto = drawn_prefix(img, order)
    assert upto == 14 * 28 + 20  # the last drawn pixel is (14, 19) in raster order
    ref = m.class_log_posterior(x, order, upto=upto)[0].double().numpy()
    np.testing.assert_allclose(figs.log_post, ref, atol=1e-5)
    np.testing.assert_allclose(figs.per_pixel, m.class_log_probs(x)[:, 0].numpy(), atol=1e-5)
    assert figs.upto == upto and "first 412 pixels" in figs.note


def test_evidence_sums_to_the_posterior_log_odds():
    m = tiny_conditional(2, seed=3)
    img = drawing(2)
    x = torch.as_tensor(img.reshape(1, -1), dtype=torch.float32)
    _, figs = class_pass(m, x, m.ordering)
    a, b = figs.top_two()
    assert figs.posterior[a] >= figs.posterior[b] >= np.delete(figs.posterior, [a, b]).max()
    ev = figs.evidence(a, b)
    lp = m.class_log_probs(x)[:, 0].double().numpy()
    done = np.isfinite(ev.reshape(-1))
    assert done.sum() == figs.upto
    np.testing.assert_allclose(ev.reshape(-1)[done], (lp[a] - lp[b])[done], atol=1e-4)
    prior_odds = figs.log_prior[a] - figs.log_prior[b]
    assert np.nansum(ev.astype(np.float64)) == pytest.approx(figs.log_post[a] - figs.log_post[b] - prior_odds, abs=1e-3)


def test_prefix_in_another_ordering_and_blank_canvas():
    m = tiny_conditional(2)
    _, figs = class_pass(m, torch.zeros(1, 784), m.ordering)
    counts = np.arange(1, 11) + 1.0  # add-one smoothed
    np.testing.assert_allclose(figs.posterior, counts / counts.sum(), rtol=1e-5)
    assert figs.upto == 0 and figs.note.startswith("nothing drawn yet")
    _, figs = class_pass(m, torch.ones(1, 784), m.ordering)
    assert figs.upto == 784 and figs.note == "from the whole canvas"
    img = np.zeros((28, 28), np.uint8)
    img[3, 5] = img[2, 27] = 1
    snake = make_ordering("spiral-in")
    assert drawn_prefix(img, snake) == int(max(snake.inverse[3 * 28 + 5], snake.inverse[2 * 28 + 27])) + 1
    assert drawn_prefix(img, m.ordering) == 3 * 28 + 6


def test_pixel_figures_of_a_conditional_model():
    m = tiny_conditional(4, seed=1)
    img = drawing(4)
    f = pixel_figures(m, img)
    assert f.classes is not None and f.given is None and f.table is not None
    ref = m.level_log_probs(img.reshape(1, -1))[0].numpy()
    np.testing.assert_allclose(f.table, ref, atol=1e-4)
    f7 = pixel_figures(m, img, y=7)
    assert f7.given == 7
    assert f7.log_p == pytest.approx(float(m.log_prob(img.reshape(1, -1), y=7)), abs=1e-3)
    with pytest.raises(ValueError):
        pixel_figures(m, img, y=10)
    with pytest.raises(ValueError):
        pixel_figures(build_model("fvsbn"), img, y=1)


def test_the_influence_map_of_a_picked_class():
    from engine.figures import pixel_influence_steps
    from engine.steps import drain

    m = tiny_conditional(2, seed=2)
    img = drawing(2)
    pixel = 7 * 28 + 12
    x = torch.as_tensor(img.reshape(1, -1), dtype=torch.float32)
    _, inf = drain(pixel_influence_steps(m, img, pixel, y=4, batch_size=256))
    assert inf.p == pytest.approx(float(torch.sigmoid(m.pixel_logit(x, pixel, y=4))[0]), abs=1e-6)
    assert inf.p != pytest.approx(float(torch.sigmoid(m.pixel_logit(x, pixel, y=5))[0]), abs=1e-4)
    j = 6 * 28 + 11  # an inked pixel before it: flipped, the conditional given y = 4 moves by delta
    flipped = x.clone()
    flipped[0, j] = 0
    moved = float(torch.sigmoid(m.pixel_logit(flipped, pixel, y=4))[0])
    assert inf.delta.reshape(-1)[j] == pytest.approx(inf.p - moved, abs=1e-5)
