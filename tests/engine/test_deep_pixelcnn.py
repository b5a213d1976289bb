"""Gated PixelCNN checks in addition to the generic ones: the generic checks in other orderings skip (raster
only), so the stepper, sampler and inpainting are checked here in raster order at a size where the
fast sampler's crops actually cut the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models import GatedPixelCNN, UnsupportedOrdering, build_model
from engine.models.train_orderings import draw_orderings
from engine.ordering import Ordering, OrderingError, make_ordering

H, W = 7, 9
CFG = {"channels": 4, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 5, "height": H, "width": W}


def model(seed=0, **kw):
    torch.manual_seed(seed)
    m = build_model("pixelcnn", dict(CFG, **kw))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.6)
    return m.double()


def test_crops_are_smaller_than_the_image():
    m = model()
    assert m.reach_rows < H - 1 and m.reach_cols < W - 1  # so the tests below exercise the crops


def test_autoregressive_and_no_blind_spot():
    m = model(1)
    x = torch.randint(0, 2, (2, H * W)).double().requires_grad_(True)
    logits = m.logits(x)
    r, c = 4, 3
    (g,) = torch.autograd.grad(logits[:, r * W + c].sum(), x)
    g = g.abs().sum(0).view(H, W)
    step = np.arange(H * W).reshape(H, W)
    assert torch.all(g[torch.as_tensor(step >= r * W + c)] == 0)
    # the pixels up and to the right (the original PixelCNN's blind spot) do reach (r, c)
    assert torch.all(g[r - 1, c - 3 : c + 4] > 0)
    assert torch.all(g[r, c - 2 : c] > 0)


@pytest.mark.parametrize("first_kernel", [3, 5])
def test_stepper_matches_teacher_forced(first_kernel):
    m = model(2, first_kernel=first_kernel)
    x = torch.randint(0, 2, (3, H * W)).double()
    full = m.logits(x)
    st = m.stepper(torch.zeros_like(x), m.ordering)
    for p in range(H * W):
        torch.testing.assert_close(st.logits(p), full[:, p])
        st.observe(p, x[:, p])


def test_fast_sampler_equals_reference_and_inpainting_keeps_known():
    m = model(3)
    a = m.sample(6, generator=torch.Generator().manual_seed(1), fast=True)
    b = m.sample(6, generator=torch.Generator().manual_seed(1), fast=False)
    assert torch.equal(a, b)
    known = np.zeros(H * W, bool)
    known[10:30] = True
    known[50] = True
    values = torch.randint(0, 2, (H * W,)).double()
    out = m.inpaint(known, values, n=5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out[:, known], values[known].expand(5, -1))
    assert not m.inpaint_is_exact(known)  # pixel 50 comes after unknown ones in raster order
    ref = m.inpaint(known, values, n=5, generator=torch.Generator().manual_seed(2), fast=False)
    assert torch.equal(out, ref)


def test_other_orderings_are_refused_with_a_reason():
    m = model()
    ok, why = m.supports(make_ordering("snake", H, W))
    assert not ok and "raster" in why
    with pytest.raises(UnsupportedOrdering, match="raster"):
        build_model("pixelcnn", CFG, make_ordering("hilbert", H, W))
    with pytest.raises(ValueError):
        build_model("pixelcnn", dict(CFG, kernel=4))
    assert isinstance(m, GatedPixelCNN) and not m.any_order


def test_output_bias_starts_at_marginals():
    m = build_model("pixelcnn", CFG)
    marg = torch.rand(H * W) * 0.8 + 0.1
    m.init_output_bias(marg)
    with torch.no_grad():
        for mod in (m.out2,):
            mod.weight.zero_()
    torch.testing.assert_close(torch.sigmoid(m.logits(torch.zeros(1, H * W)))[0], marg, atol=1e-5, rtol=1e-4)


# -- locally masked convolutions ----------------------------------------------------------------
LM = {"channels": 3, "layers": 1, "kernel": 3, "first_kernel": 3, "head": 4, "height": H, "width": W}


def lm_model(oname="random", seed=0, **kw):
    torch.manual_seed(seed)
    m = build_model("lmconv", dict(LM, **kw), make_ordering(oname, H, W, seed=seed))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.6)
    return m.double()


@pytest.mark.parametrize("oname", ["random", "hilbert"])
@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("context", [0, 5])
def test_lmconv_cached_stepper_matches_teacher_forced(oname, deep, context):
    """Pixel by pixel, the cached stepper gives the full pass's conditionals: with some pixels only
    observed (known ones, whose outputs are still needed later), a deep net whose receptive field
    covers the image, rows reordered halfway (sequential Monte Carlo resampling), and the summary
    of the earlier pixels (``context``) kept as they are told."""
    kw = {"layers": 3, "first_kernel": 5} if deep else {}
    m = lm_model(oname, 1, context=context, **kw)
    x = torch.randint(0, 2, (3, H * W)).double()
    st = m.stepper(torch.zeros_like(x), m.ordering)
    perm = m.ordering.perm.tolist()
    swap = torch.tensor([2, 0, 0])
    for t, p in enumerate(perm):
        if t == len(perm) // 2:
            st.select(swap)
            x = x[swap]
        if t % 3 == 1:  # known: observed without asking
            st.observe(p, x[:, p])
            continue
        full = m.logits(torch.where(torch.arange(H * W) == p, 0.0, x))[:, p]
        torch.testing.assert_close(st.logits(p), full)
        st.observe(p, x[:, p])


@pytest.mark.parametrize("context", [0, 4])
def test_lmconv_is_autoregressive_in_any_ordering_and_sees_black_pixels(context):
    m = lm_model("random", 2, order_agnostic=True, context=context)
    o = make_ordering("spiral-in", H, W)
    x = torch.randint(0, 2, (2, H * W)).double().requires_grad_(True)
    logits = m.logits(x, o)
    for pixel in (0, 20, 40, 62):
        (g,) = torch.autograd.grad(logits[:, pixel].sum(), x, retain_graph=True)
        assert torch.all(g[:, torch.as_tensor(o.inverse >= o.inverse[pixel])] == 0)
    # visibility itself is information: with all pixels 0, a pixel's logit still depends on which
    # neighbours are earlier (the constant input channel), so two orderings give different logits
    zero = torch.zeros(1, H * W, dtype=torch.float64)
    assert not torch.allclose(m.logits(zero, o), m.logits(zero, make_ordering("raster", H, W)))


def test_lmconv_context_closes_the_blind_spot():
    """In raster, stacked 3x3 local masks never reach the row above beyond the kernel to the right
    (a path of earlier-and-earlier neighbours cannot turn back left); with ``context`` every earlier
    pixel reaches every later conditional, in raster as in a curve. The per-image orderings of
    order-agnostic training give the same conditionals as one ordering at a time."""
    x = torch.randint(0, 2, (2, H * W)).double().requires_grad_(True)
    pixel = 3 * W + 1  # row 3, column 1: row 2 beyond column 3 is in the blind spot
    def unseen(m, oname):
        o = make_ordering(oname, H, W)
        (g,) = torch.autograd.grad(m.logits(x, o)[:, pixel].sum(), x)
        earlier = torch.as_tensor(o.inverse < o.inverse[pixel])
        return set(torch.nonzero(earlier & (g == 0).all(0)).flatten().tolist())

    assert {2 * W + c for c in range(4, W)} <= unseen(lm_model("raster", 4, layers=2), "raster")  # row 2, right of the kernel
    with_context = lm_model("raster", 4, layers=2, context=4, order_agnostic=True)
    assert [unseen(with_context, o) for o in ("raster", "hilbert", "spiral-in")] == [set(), set(), set()]
    # training's per-image orderings and the one-ordering pass agree, image by image
    m = lm_model("raster", 5, order_agnostic=True, train_orderings=("raster", "hilbert", "random"), context=3)
    xb = torch.randint(0, 2, (6, H * W)).double()
    torch.manual_seed(7)
    loss = m.training_loss(xb)
    torch.manual_seed(7)
    perm = draw_orderings(m.config.train_orderings, 6, H, W, xb.device)
    each = [-m.log_prob(xb[i : i + 1], Ordering("drawn", H, W, perm[i].numpy())) for i in range(6)]
    torch.testing.assert_close(loss, torch.cat(each).mean())


def test_lmconv_order_agnostic_training_draws_orderings_from_the_seed():
    m = lm_model("raster", 3, order_agnostic=True, train_orderings=("snake", "random"))
    x = torch.randint(0, 2, (4, H * W)).double()
    torch.manual_seed(1)
    a = m.training_loss(x)
    torch.manual_seed(1)
    assert m.training_loss(x).item() == a.item()
    with pytest.raises(OrderingError, match="unknown ordering 'zigzag'"):
        build_model("lmconv", dict(LM, order_agnostic=True, train_orderings=("zigzag",)))


def test_lmconv_layer_equals_its_plain_unfold_form():
    """The fast locally masked layer (shifted slices, 1-D convolution) computes what the plain
    unfold / mask / matrix-product form does, with per-image masks, and the same gradients; under
    bf16 autocast it stays within bf16 rounding."""
    from engine.models.lmconv import _LMConv, _local_masks

    torch.manual_seed(0)
    layer = _LMConv(3, 5, 3).double()
    h = torch.randn(4, 3, H, W, dtype=torch.float64, requires_grad=True)
    steps = torch.stack([torch.randperm(H * W) for _ in range(4)]).view(4, 1, H, W).double()
    mask = _local_masks(steps, 3, strict=False)
    fast, ref = layer(h, mask), layer.reference_forward(h, mask)
    torch.testing.assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), h)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), h)
    torch.testing.assert_close(g_fast, g_ref)
    hf, lf = h.detach().float(), layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = lf(hf, mask)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), lf.reference_forward(hf, mask), atol=0.1, rtol=0.02)

