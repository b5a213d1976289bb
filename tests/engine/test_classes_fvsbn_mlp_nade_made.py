"""Class-conditional FVSBN, per-pixel MLP, NADE and MADE, beyond the checks every conditional family
gets (tests/engine/test_classes.py): started from an unconditional model's weights (zero class
terms) each computes that model's conditionals, fast sampler included; the fast steppers carry the
classes through ``select``; NADE's fused training path with one hidden start per image gives plain
autograd's logits and gradients; an order-agnostic MADE is conditional in every member's ordering
and connectivity (normalisation, the autoregressive property, the stepper, member likelihoods as
marginals over classes, the training loss as some member's -log p(x | y))."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine.models import build_model
from engine.ordering import make_ordering

from .test_levels import LEVEL_TINY

H, W, C = 2, 2, 3
D = H * W
FAMILIES = ("fvsbn", "mlp", "nade", "made")
HEADS = [("binary", {}, 2), ("categorical", {"output": "categorical", "levels": 4}, 4)]
CASES = [(f"{label}-{hname}", fam, dict(cfg, **hcfg), k)
         for fam in FAMILIES for label, cfg in LEVEL_TINY[fam] for hname, hcfg, k in HEADS]
IDS = [c[0] for c in CASES]


def randomised(m, seed: int = 0, std: float = 0.7):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.double().eval()


def images(n: int, k: int, seed: int = 0, d: int = D) -> torch.Tensor:
    return torch.randint(0, k, (n, d), generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_zero_class_terms_compute_the_unconditional_model(label, family, cfg, k):
    o = make_ordering("random", H, W, seed=2)
    plain = randomised(build_model(family, dict(cfg, height=H, width=W), o))
    cond = build_model(family, dict(cfg, height=H, width=W, classes=C), o).double()
    missing = cond.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(name.startswith("class_") for name in missing)
    assert all(not torch.any(p) for name, p in cond.named_parameters() if name.startswith("class_"))
    x = images(6, k, seed=1)
    with torch.no_grad():
        want = plain.logits(x)
        for y in range(C):
            torch.testing.assert_close(cond.logits(x, y=y), want, atol=1e-12, rtol=0)
        torch.testing.assert_close(cond.log_prob(x), plain.log_prob(x), atol=1e-10, rtol=0)  # the marginal too
    # with gradients on the pixels (NADE's plain path rather than its fused one) as well
    torch.testing.assert_close(cond.logits(x.clone().requires_grad_(True), y=1).detach(), want, atol=1e-12, rtol=0)
    a = cond.sample(5, y=2, generator=torch.Generator().manual_seed(3))
    b = plain.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_stepper_select_takes_the_classes_of_the_rows(label, family, cfg, k):
    """After ``select(index)`` a conditional stepper gives the conditionals of a fresh one made with
    the reindexed histories and their classes."""
    m = randomised(build_model(family, dict(cfg, height=H, width=W, classes=C), make_ordering("snake", H, W)), seed=4)
    x = images(6, k, seed=5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    perm = m.ordering.perm.tolist()
    with torch.no_grad():
        st = m.stepper(x.clone(), m.ordering, y)
        for p in perm[:2]:
            st.observe(p, x[:, p])
        index = torch.tensor([5, 5, 0, 2, 1, 1])
        st.select(index)
        xs, ys = x[index], y[index]
        full = m.logits(xs, y=ys)
        for p in perm[2:]:
            torch.testing.assert_close(st.logits(p), full[:, p], atol=1e-10, rtol=0)
            st.observe(p, xs[:, p])


@pytest.mark.parametrize("hname,hcfg,k", HEADS, ids=[h[0] for h in HEADS])
@pytest.mark.parametrize("size,block", [((2, 3), 4), ((3, 3), 2)])
def test_nade_fused_path_with_a_start_per_image_matches_plain_autograd(hname, hcfg, k, size, block):
    """The fused forward/backward with ``c + e_y`` (B, H) gives the logits and the gradients of every
    parameter, the class embedding's included, of ordinary autograd (ragged last blocks too)."""
    from engine.models.nade import _FusedLogits

    h, w = size
    m = randomised(build_model("nade", dict(height=h, width=w, hidden=7, classes=C, **hcfg)), seed=6)
    xo = images(6, k, seed=7, d=h * w) / (k - 1)
    y = torch.tensor([2, 0, 1, 1, 0, 2])
    params = list(m.parameters())
    plain = m._logits_plain(xo, m._start(y))
    weights = torch.randn(plain.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    g_plain = torch.autograd.grad((plain * weights).sum(), params)
    fused = _FusedLogits.apply(xo, m.w, m._start(y), m.v, m._out_bias(), block)
    g_fused = torch.autograd.grad((fused * weights).sum(), params)
    torch.testing.assert_close(fused, plain)
    for a, b in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(a, b)
    assert g_fused[[n for n, _ in m.named_parameters()].index("class_emb.weight")].abs().sum() > 0
    # and the training loss (fused: no gradient on the pixels) is -log p(x | y) of the plain path
    x = xo * (k - 1)
    torch.testing.assert_close(m.training_loss(x, y), -m.log_prob(x.clone().requires_grad_(True), y=y).detach().mean())


@pytest.mark.parametrize("hname,hcfg,k", HEADS, ids=[h[0] for h in HEADS])
def test_order_agnostic_made_is_conditional_in_every_member(hname, hcfg, k):
    cfg = dict(height=H, width=W, hidden=(10, 8), order_agnostic=True, num_masks=3, direct=True, member_bias=True,
               classes=C, **hcfg)
    m = randomised(build_model("made", cfg), seed=9)
    with torch.no_grad():
        m.set_class_prior(np.array([4, 1, 2]))
    xs = torch.tensor(list(itertools.product(range(k), repeat=D)), dtype=torch.float64)
    x = images(5, k, seed=10)
    members = []
    for j in range(3):
        o, conn = m.member(j)
        assert conn == m.connectivity_for(o)
        with torch.no_grad():
            per_class = torch.stack([m.log_prob(xs, o, y=y) for y in range(C)])
            for y in range(C):  # every class normalises in the member's ordering
                assert torch.logsumexp(per_class[y], 0).item() == pytest.approx(0.0, abs=1e-9)
            assert (per_class[0] - per_class[2]).abs().max() > 1e-3
            # the member's likelihood is its marginal over the classes
            joint = m.class_log_prior[:, None] + torch.stack([m.log_prob(x, o, y=y) for y in range(C)])
            members.append(m.member_log_prob(x, j))
            torch.testing.assert_close(members[-1], torch.logsumexp(joint, 0), atol=1e-10, rtol=0)
            torch.testing.assert_close(members[-1], m.log_prob(x, o), atol=1e-10, rtol=0)
            # the stepper in the member's connectivity gives the teacher-forced conditionals of a class
            yb = torch.tensor([0, 1, 2, 2, 1])
            full = m.logits(x, o, y=yb)
            st = m.stepper(torch.zeros_like(x), o, yb)
            for pixel in o.perm.tolist():
                torch.testing.assert_close(st.logits(pixel), full[:, pixel], atol=1e-10, rtol=0)
                st.observe(pixel, x[:, pixel])
        # the autoregressive property for a class, in the member's ordering
        xg = x.clone().requires_grad_(True)
        params = m.logits(xg, o, y=1)
        inv = np.asarray(o.inverse)
        for i in range(D):
            g, = torch.autograd.grad(params[:, i].sum(), xg, retain_graph=True)
            assert torch.all(g[:, inv >= inv[i]] == 0)
    # the training loss given the classes is -log p(x | y) of one of the members
    yt = torch.tensor([1, 0, 2, 1, 0])
    with torch.no_grad():
        per_member = [-m.log_prob(x, m.member(j)[0], y=yt).mean() for j in range(3)]
        m.train_generator = torch.Generator().manual_seed(0)
        loss = m.training_loss(x, yt)
    assert any(torch.allclose(loss, lp) for lp in per_member)


def test_made_training_loss_is_minus_log_p_of_x_given_y():
    m = randomised(build_model("made", dict(height=H, width=W, hidden=(9,), classes=C)), seed=11)
    x = images(6, 2, seed=12)
    for y in (torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 2, 2, 1, 1, 1])):
        torch.testing.assert_close(m.training_loss(x, y), -m.log_prob(x, y=y).mean())
    dropped = randomised(build_model("made", dict(height=H, width=W, hidden=(9,), classes=C, dropout=0.3)), seed=11)
    dropped.train_generator = torch.Generator().manual_seed(1)
    a = dropped.training_loss(x, torch.zeros(6, dtype=torch.long))
    dropped.train_generator = torch.Generator().manual_seed(1)
    b = dropped.training_loss(x, torch.full((6,), 2, dtype=torch.long))
    assert torch.isfinite(a) and not torch.allclose(a, b)  # the dropout path takes the class as well
