"""How each earlier pixel's drawn value moves one pixel's conditional (the inspector's influence map)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.figures import pixel_influence_steps
from engine.steps import drain

from .tiny import H, W, all_tiny, make_tiny


@pytest.mark.parametrize("label,family,cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
@pytest.mark.parametrize("ordering", ["raster", "snake"])
@torch.no_grad()
def test_influence_is_the_change_of_the_conditional_when_one_earlier_pixel_flips(label, family, cfg, ordering):
    m = make_tiny(family, cfg, ordering)
    order = m.ordering
    rng = np.random.default_rng(3)
    image = rng.integers(0, 2, H * W).astype(np.float64)
    for pixel in (int(order.perm[0]), int(order.perm[3]), int(order.perm[-1])):
        fracs, inf = drain(pixel_influence_steps(m, image, pixel, batch_size=2))
        t = int(order.inverse[pixel])
        assert inf.step == t and inf.pixel == pixel
        x = torch.as_tensor(image.reshape(1, -1))
        p = float(torch.sigmoid(m.logits(x, order)[0, pixel]))
        assert inf.p == pytest.approx(p, abs=1e-12)
        d = inf.delta.reshape(-1)
        for s in range(H * W):
            j = int(order.perm[s])
            if s >= t:  # itself and every later pixel: cannot move it
                assert np.isnan(d[j])
                continue
            flipped = x.clone()
            flipped[0, j] = 1 - flipped[0, j]
            expect = p - float(torch.sigmoid(m.logits(flipped, order)[0, pixel]))
            assert d[j] == pytest.approx(expect, abs=1e-9), (label, ordering, pixel, j)
        if t:
            assert fracs == sorted(fracs) and fracs[-1] == 1.0 and len(fracs) == -(-t // 2)
        else:
            assert fracs == [] and np.isnan(d).all()


def test_the_strongest_influences_come_first():
    m = make_tiny("fvsbn", {})
    image = np.array([1, 0, 1, 1, 0, 1, 0, 0], dtype=np.float64)
    _, inf = drain(pixel_influence_steps(m, image, int(m.ordering.perm[-1])))
    top = inf.strongest(3)
    finite = np.abs(inf.delta.reshape(-1)[np.isfinite(inf.delta.reshape(-1))])
    assert [abs(v) for _, v in top] == sorted(finite, reverse=True)[:3]
    assert all(inf.delta.reshape(-1)[j] == v for j, v in top)


def test_a_bad_pixel_index_is_a_clear_error():
    m = make_tiny("fvsbn", {})
    with pytest.raises(ValueError, match="raster index"):
        next(pixel_influence_steps(m, np.zeros(H * W), H * W))


@pytest.mark.parametrize("label,family,cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
@pytest.mark.parametrize("ordering", ["raster", "snake", "random"])
@torch.no_grad()
def test_one_pixels_logit_is_that_of_the_full_pass(label, family, cfg, ordering):
    """``pixel_logit`` (which the sequence families compute from a prefix only) equals the full pass."""
    m = make_tiny(family, cfg, ordering)
    x = torch.as_tensor(np.random.default_rng(4).integers(0, 2, (3, H * W)).astype(np.float64))
    full = m.logits(x)
    for pixel in range(H * W):
        one = m.pixel_logit(x, pixel)
        assert one.shape == (3,)
        assert torch.allclose(one, full[:, pixel], rtol=0, atol=1e-10), (label, pixel)
    with pytest.raises(ValueError, match="raster index"):
        m.pixel_logit(x, H * W)
