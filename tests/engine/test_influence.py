"""How each earlier pixel's drawn value moves one pixel's conditional (the inspector's influence map)."""

from __future__ import annotations

from pathlib import Path

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
    with pytest.raises(ValueError, match="batch_size"):
        next(pixel_influence_steps(m, np.zeros(H * W), 3, batch_size=0))


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


@pytest.mark.parametrize("label,family,cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
@pytest.mark.parametrize("ordering", ["raster", "snake", "random"])
@torch.no_grad()
def test_the_fast_flips_equal_the_flipped_images_passes(label, family, cfg, ordering):
    """Each family's ``pixel_logit_flips`` (shared prefix, cropped receptive field, ...) gives the
    logits of the flipped images themselves, for every pixel and flips in any order, repeated too."""
    from engine.models.base import ARModel

    m = make_tiny(family, cfg, ordering)
    order = m.ordering
    rng = np.random.default_rng(5)
    for trial in range(2):
        x = torch.as_tensor(rng.integers(0, 2, (1, H * W)).astype(np.float64))
        for t in range(1, H * W):
            pixel = int(order.perm[t])
            flips = rng.permutation(np.array(order.perm[:t]))
            if trial and t > 2:
                flips = np.concatenate([flips, flips[:2]])  # the same pixel twice
            fast = m.pixel_logit_flips(x, pixel, flips)
            ref = ARModel._pixel_logit_flips(m, x, pixel, torch.as_tensor(flips), order)
            assert fast.shape == (len(flips),)
            torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10, msg=f"{label}: pixel {pixel}")


def test_flips_must_come_before_the_pixel():
    m = make_tiny("lstm", {"hidden": 5, "layers": 2, "embed": 4})
    x = np.zeros(H * W)
    order = m.ordering
    with pytest.raises(ValueError, match="before the pixel"):
        m.pixel_logit_flips(x, int(order.perm[2]), [int(order.perm[2])])
    with pytest.raises(ValueError, match="raster indices"):
        m.pixel_logit_flips(x, int(order.perm[2]), [H * W])
    assert m.pixel_logit_flips(x, int(order.perm[2]), []).shape == (0,)


@pytest.mark.parametrize("label,family,cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
@torch.no_grad()
def test_the_fast_influence_map_equals_the_reference(label, family, cfg):
    m = make_tiny(family, cfg, "snake")
    image = np.random.default_rng(6).integers(0, 2, H * W)
    pixel = int(m.ordering.perm[-1])
    fracs, fast = drain(pixel_influence_steps(m, image, pixel, batch_size=3))
    ref_fracs, ref = drain(pixel_influence_steps(m, image, pixel, batch_size=3, fast=False))
    assert fracs == ref_fracs
    np.testing.assert_allclose(fast.delta, ref.delta, rtol=0, atol=1e-10)


@pytest.mark.parametrize("family,cfg", [
    ("lmconv", {"channels": 3, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 4, "order_agnostic": True, "context": 2}),
    ("lmconv", {"channels": 2, "layers": 1, "kernel": 3, "first_kernel": 5, "head": 3, "order_agnostic": True}),
    ("pixelcnn", {"channels": 3, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 4}),
])
@pytest.mark.parametrize("ordering", ["raster", "hilbert", "random"])
@torch.no_grad()
def test_a_cone_smaller_than_the_image_gives_the_flipped_images_logits(family, cfg, ordering):
    """On a 9x9 image the receptive field of a convolutional net is cut at every side: the cropped
    path must still equal the full pass, at the corners, the edges and the middle."""
    from engine.models import UnsupportedOrdering, build_model
    from engine.models.base import ARModel
    from engine.ordering import make_ordering

    torch.manual_seed(1)
    size = 9
    try:
        m = build_model(family, dict(cfg, height=size, width=size), make_ordering(ordering, size, size, seed=2))
    except UnsupportedOrdering:
        pytest.skip("raster only")
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    m = m.double().eval()
    order = m.ordering
    rng = np.random.default_rng(7)
    x = torch.as_tensor(rng.integers(0, 2, (1, size * size)).astype(np.float64))
    for pixel in (0, size - 1, size * size - 1, size * (size - 1), size * 4 + 4, size * 7 + 2, size * 2 + 6):
        t = int(order.inverse[pixel])
        if t == 0:
            continue
        flips = np.array(order.perm[:t])
        fast = m.pixel_logit_flips(x, pixel, flips)
        ref = ARModel._pixel_logit_flips(m, x, pixel, torch.as_tensor(flips), order)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fast", [True, False])
@torch.no_grad()
def test_a_pixel_in_the_blind_spot_moves_it_by_exactly_nothing(fast):
    """An LMConv without context in raster cannot see most of the row above to the right of its
    kernel: flipping such a pixel leaves the conditional exactly as it was, with either path (the
    map shows those pixels as zero, not rounding noise), while a neighbour does move it."""
    from engine.models import build_model
    from engine.ordering import make_ordering

    torch.manual_seed(3)
    size = 9
    cfg = {"channels": 4, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 5, "height": size, "width": size}
    m = build_model("lmconv", cfg, make_ordering("raster", size, size)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    image = np.random.default_rng(8).integers(0, 2, size * size)
    r, c = 6, 2
    _, inf = drain(pixel_influence_steps(m, image, r * size + c, fast=fast))
    assert (inf.delta[r - 1, c + 3 :] == 0).all()  # beyond the kernel's reach in the row above
    assert inf.delta[r, c - 1] != 0 and inf.delta[r - 1, c] != 0


BUNDLED = Path(__file__).resolve().parents[2] / "resources" / "checkpoints"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lmconv-any", "pixelcnn-raster", "lstm-raster", "transformer-any", "nade-raster"])
@torch.no_grad()
def test_the_bundled_models_fast_flips_equal_the_flipped_images(name):
    """At full size (28x28, 12-layer convolutional nets, float32) on a sample of earlier pixels,
    at a pixel late in the ordering and one by the top edge, in the model's ordering and, for an
    order-agnostic model, in a Hilbert curve."""
    from engine.checkpoint import load_checkpoint
    from engine.models.base import ARModel
    from engine.ordering import make_ordering

    path = BUNDLED / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path.name} is not bundled")
    m = load_checkpoint(path).model.eval()
    x = torch.as_tensor(np.random.default_rng(9).random((1, 784)) < 0.2, dtype=torch.float32)
    for order in [m.ordering] + ([make_ordering("hilbert")] if m.any_order else []):
        for pixel in (20 * 28 + 14, 2 * 28 + 25):
            t = int(order.inverse[pixel])
            flips = np.array(order.perm[:t])[:: max(1, t // 4)]  # a few: the reference is slow at this size
            fast = m.pixel_logit_flips(x, pixel, flips, order)
            ref = ARModel._pixel_logit_flips(m, x, pixel, torch.as_tensor(flips), order)
            torch.testing.assert_close(fast, ref, rtol=0, atol=2e-5, msg=f"{name} {order.label} pixel {pixel}")


@torch.no_grad()
def test_a_pixel_that_sees_no_neighbour_gives_its_bias_term():
    """In a random ordering the second pixel may have no earlier neighbour within the first
    kernel; with no layers after the first, its cone is that pixel alone, whose first layer then
    sees nothing at all (no kernel offset is open): the fast path still agrees."""
    from engine.models import build_model
    from engine.models.base import ARModel
    from engine.ordering import make_ordering

    torch.manual_seed(4)
    size = 9
    cfg = {"channels": 3, "layers": 0, "kernel": 3, "first_kernel": 3, "head": 4, "order_agnostic": True, "height": size, "width": size}
    m = build_model("lmconv", cfg).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    for seed in range(40):
        order = make_ordering("random", size, size, seed=seed)
        (r0, c0), (r1, c1) = (divmod(int(order.perm[s]), size) for s in (0, 1))
        if max(abs(r0 - r1), abs(c0 - c1)) > 1:  # beyond the first kernel
            break
    else:
        pytest.fail("no such ordering among the seeds tried")
    x = torch.as_tensor(np.random.default_rng(1).integers(0, 2, (1, size * size)).astype(np.float64))
    pixel, flips = int(order.perm[1]), [int(order.perm[0])]
    torch.testing.assert_close(m.pixel_logit_flips(x, pixel, flips, order),
                               ARModel._pixel_logit_flips(m, x, pixel, torch.as_tensor(flips), order), rtol=0, atol=1e-10)


def test_a_grey_models_influence_map_inverts_each_earlier_pixel_and_compares_expected_intensities():
    from engine.models import build_model
    from engine.models.base import flip_rows
    from engine.ordering import make_ordering

    torch.manual_seed(0)
    m = build_model("nade", {"hidden": 6, "levels": 16, "output": "logistic-mixture", "components": 2, "height": 3, "width": 3},
                    make_ordering("raster", 3, 3)).double()
    x = torch.randint(0, 16, (1, 9), generator=torch.Generator().manual_seed(1)).double()
    pixel = 7
    steps = pixel_influence_steps(m, x.numpy().reshape(3, 3), pixel, fast=True)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            inf = stop.value
            break
    with torch.no_grad():
        def expected(img):
            return float((m.level_log_probs(img)[0, pixel].exp() * torch.arange(16)).sum() / 15)

        assert inf.p == pytest.approx(expected(x)) and inf.levels == 16
        for j in range(pixel):
            flipped = flip_rows(x, torch.tensor([j]), 16)
            assert flipped[0, j] == 15 - x[0, j]
            assert inf.delta.reshape(-1)[j] == pytest.approx(expected(x) - expected(flipped), abs=1e-9)
    assert np.isnan(inf.delta.reshape(-1)[pixel:]).all()
