"""K-level pixels in the per-pixel MLP, NADE and MADE, beyond the checks every family gets
(tests/engine/test_levels.py): a binary model keeps its parameter shapes (old checkpoints load), the
grey shapes are the P-fold output layers, NADE's fused training path agrees with plain autograd
with P head numbers per step, MADE's members and training loss follow the head, and a tiny grey
model of each family learns from real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models import build_model
from engine.ordering import Ordering, make_ordering

H, W, K = 2, 3, 4
D = H * W
HEADS = [("categorical", {"output": "categorical"}, K), ("mixture", {"output": "logistic-mixture", "components": 2}, 6)]
HEAD_IDS = [h[0] for h in HEADS]


def _randomised(m, std: float = 0.5, seed: int = 0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.double()


def _levels(n: int, d: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n, d), generator=torch.Generator().manual_seed(seed)).double()


def test_binary_models_keep_their_parameter_shapes():
    """The shapes the bundled checkpoints hold: nothing about a binary model changes."""
    shapes = {
        "mlp": {"w1": (D, 3, D), "c": (D, 3), "v": (D, 3), "bias": (D,)},
        "nade": {"w": (D, 5), "c": (5,), "v": (D, 5), "bias": (D,)},
        "made": {"layers.0.weight": (7, D), "layers.0.bias": (7,), "out.weight": (D, 7), "out.bias": (D,), "direct.weight": (D, D)},
    }
    cfgs = {"mlp": {"hidden": 3}, "nade": {"hidden": 5}, "made": {"hidden": (7,), "direct": True}}
    for family, want in shapes.items():
        m = build_model(family, dict(cfgs[family], height=H, width=W))
        assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == want, family


@pytest.mark.parametrize("hname,hcfg,p", HEADS, ids=HEAD_IDS)
def test_grey_models_have_p_outputs_per_pixel(hname, hcfg, p):
    cfg = dict(levels=K, height=H, width=W, **hcfg)
    mlp = build_model("mlp", dict(cfg, hidden=3))
    assert (mlp.v.shape, mlp.bias.shape) == ((D, p, 3), (D * p,))
    nade = build_model("nade", dict(cfg, hidden=5))
    assert (nade.w.shape, nade.v.shape, nade.bias.shape) == ((D, 5), (D, p, 5), (D * p,))
    made = build_model("made", dict(cfg, hidden=(7,), direct=True))
    assert (made.out.weight.shape, made.direct.weight.shape) == ((D * p, 7), (D * p, D))


@pytest.mark.parametrize("hname,hcfg,p", HEADS, ids=HEAD_IDS)
def test_made_repeats_each_pixels_output_mask_for_its_p_numbers(hname, hcfg, p):
    """Every one of a pixel's P outputs sees what its single logit would in a binary MADE."""
    o = make_ordering("random", H, W, seed=3)
    grey = build_model("made", dict(levels=K, height=H, width=W, hidden=(7, 5), direct=True, **hcfg), o)
    binary = build_model("made", dict(height=H, width=W, hidden=(7, 5), direct=True), o)
    g, b = grey._build_masks(o, 2), binary._build_masks(o, 2)
    for mg, mb in zip(g[:2], b[:2], strict=True):
        assert torch.equal(mg, mb)
    for mg, mb in zip(g[2:], b[2:], strict=True):  # output and direct masks
        assert torch.equal(mg, mb.repeat_interleave(p, dim=0))


@pytest.mark.parametrize("hname,hcfg,p", HEADS, ids=HEAD_IDS)
@pytest.mark.parametrize("size,k", [((2, 3), 4), ((5, 7), 8), ((3, 3), 100)])
def test_nade_fused_training_path_with_p_numbers_matches_plain_autograd(hname, hcfg, p, size, k):
    """The block-wise forward/backward of NADE's training path, with (D, P, H) output weights, gives
    the logits and parameter gradients of ordinary autograd (ragged last blocks included)."""
    from engine.models.nade import _FusedLogits

    h, w = size
    m = _randomised(build_model("nade", dict(levels=K, height=h, width=w, hidden=9, **hcfg)), seed=1)
    xo = _levels(6, h * w, seed=2) / (K - 1)
    weights = torch.randn(6, h * w, p, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    plain = m._logits_plain(xo)
    g_plain = torch.autograd.grad((plain * weights).sum(), list(m.parameters()))
    fused = _FusedLogits.apply(xo, m.w, m.c, m.v, m._out_bias(), k)
    g_fused = torch.autograd.grad((fused * weights).sum(), list(m.parameters()))
    assert fused.shape == (6, h * w, p)
    torch.testing.assert_close(fused, plain)
    for a, b in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("hname,hcfg,p", HEADS, ids=HEAD_IDS)
def test_nade_grey_training_loss_takes_the_fused_path_and_agrees_with_log_prob(hname, hcfg, p):
    m = _randomised(build_model("nade", dict(levels=K, height=H, width=W, hidden=5, **hcfg), make_ordering("snake", H, W)))
    x = _levels(7)
    xr = x.clone().requires_grad_(True)  # forces the plain path
    torch.testing.assert_close(m.training_loss(x), -m.log_prob(xr).detach().mean())
    torch.testing.assert_close(m.log_prob(x), m.log_prob(xr).detach())


@pytest.mark.parametrize("hname,hcfg,p", HEADS, ids=HEAD_IDS)
def test_grey_made_members_and_training_loss_follow_the_head(hname, hcfg, p):
    """Each member's likelihood is the model's in that member's ordering, and the training loss is
    some member's mean NLL, with member biases and both order sets."""
    for extra in ({"order_set": "random"}, {"order_set": "scans", "member_bias": True}):
        cfg = dict(levels=K, height=H, width=W, hidden=(8,), order_agnostic=True, num_masks=3, direct=True, **hcfg, **extra)
        m = _randomised(build_model("made", cfg))
        x = _levels(5, seed=4)
        with torch.no_grad():
            members = [m.member_log_prob(x, k) for k in range(3)]
            for k in range(3):
                o, conn = m.member(k)
                assert conn == m.connectivity_for(o)
                torch.testing.assert_close(members[k], m.log_prob(x, o))
            m.train_generator = torch.Generator().manual_seed(0)
            loss = m.training_loss(x)
        assert any(torch.allclose(loss, -lp.mean()) for lp in members)
        # and the table of every level sums to one in a member's ordering
        table = m.level_log_probs(x, m.member(2)[0]).exp().sum(-1)
        torch.testing.assert_close(table, torch.ones_like(table))


def test_grey_made_stepper_uses_the_member_connectivity_and_direct_connections():
    """The fast stepper of an order-agnostic grey MADE in a trained member's ordering (not pattern 0)
    gives the teacher-forced conditionals."""
    cfg = dict(levels=K, height=H, width=W, hidden=(8, 6), order_agnostic=True, num_masks=4, direct=True,
               member_bias=True, output="logistic-mixture", components=2)
    m = _randomised(build_model("made", cfg))
    o, conn = m.member(2)
    assert conn == 2
    x = _levels(4, seed=5)
    with torch.no_grad():
        full = m.logits(x, o)
        st = m.stepper(torch.zeros_like(x), o)
        for pixel in o.perm.tolist():
            torch.testing.assert_close(st.logits(pixel), full[:, pixel])
            st.observe(pixel, x[:, pixel])


def test_an_order_agnostic_grey_made_sees_a_black_pixel_through_its_connectivity():
    """What tells 'black' from 'not drawn yet' in MADE at any K: a hidden unit whose degree lies
    between the two steps feeds the pixel's output in one ordering and not in the other. With every
    hidden unit on (positive biases), the two conditionals of pixel 3 differ."""
    cfg = dict(levels=K, height=2, width=2, hidden=(12,), order_agnostic=True, num_masks=2, output="categorical")
    m = _randomised(build_model("made", cfg), seed=5)
    with torch.no_grad():
        m.layers[0].bias.abs_().add_(1.0)
    assert 1 in m._degrees(0)[0].tolist()  # a unit seeing steps 0 and 1
    x = torch.tensor([[2.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    alone = Ordering("custom", 2, 2, np.array([0, 3, 1, 2]))
    beside_black = Ordering("custom", 2, 2, np.array([0, 1, 3, 2]))
    with torch.no_grad():
        a, b = m.level_log_probs(x, alone)[0, 3], m.level_log_probs(x, beside_black)[0, 3]
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("family,cfg", [("mlp", {"hidden": 4}), ("nade", {"hidden": 16}),
                                        ("made", {"hidden": (32,), "direct": True})], ids=["mlp", "nade", "made"])
@pytest.mark.parametrize("hname,hcfg,p", HEADS, ids=HEAD_IDS)
def test_a_tiny_grey_model_learns_real_digits(family, cfg, hname, hcfg, p):
    """20 Adam steps on 200 real MNIST digits at 4 levels lower the NLL of those digits (and start
    from the level frequencies for a softmax)."""
    from engine.mnist import load_split, quantize

    try:
        grey = load_split("test", "/work/shared/data", download=False)[:200]
    except Exception as exc:  # noqa: BLE001 - the data is optional on a developer's machine
        pytest.skip(f"no MNIST files: {exc}")
    x = torch.as_tensor(quantize(grey, K)).float()
    torch.manual_seed(0)
    m = build_model(family, dict(cfg, levels=K, **hcfg))
    marg = torch.stack([(x == v).float().mean(0) for v in range(K)], 1)  # (D, K)
    m.init_output_bias(marg)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    with torch.no_grad():
        before = m.training_loss(x).item()
    for _ in range(20):
        opt.zero_grad()
        loss = m.training_loss(x)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -m.log_prob(x).mean().item()
    assert np.isfinite(after) and after < before - 5, (before, after)
