"""The checks every family gets, with K > 2 pixel levels (issue 27): the autoregressive property by
gradient, exact normalisation over all K^D images of a tiny grid, the fast sampler equal to the
reference, the fast stepper equal to teacher forcing, inpainting that keeps known pixels and is
exact where it says so, a checkpoint round trip to the last bit, and order-agnostic models that
tell an unknown pixel from a black one. Each family is checked with a softmax head and with a
discretized logistic mixture."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models import FAMILIES, UnsupportedOrdering, build_model
from engine.ordering import Ordering, make_ordering

H, W, K = 2, 2, 4
D = H * W

#: family -> (label, config) of tiny grey models; every family must appear (see the first test)
LEVEL_TINY: dict[str, list[tuple[str, dict]]] = {
    "fvsbn": [("fvsbn", {})],
    "mlp": [("mlp", {"hidden": 3})],
    "nade": [("nade", {"hidden": 5})],
    "made": [("made", {"hidden": (9,)}),
             ("made-agnostic", {"hidden": (12,), "order_agnostic": True, "num_masks": 4, "direct": True})],
    "lstm": [("lstm", {"hidden": 5, "layers": 2, "embed": 4}),
             ("lstm-agnostic", {"hidden": 4, "layers": 1, "embed": 3, "order_agnostic": True})],
    "transformer": [("transformer-agnostic", {"d_model": 8, "layers": 2, "heads": 2, "mlp_ratio": 2}),
                    ("transformer-fixed-order", {"d_model": 4, "layers": 1, "heads": 1, "mlp_ratio": 1, "order_agnostic": False})],
    "pixelcnn": [("pixelcnn", {"channels": 3, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 4})],
    "lmconv": [
        ("lmconv", {"channels": 3, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 4}),
        ("lmconv-agnostic", {"channels": 3, "layers": 1, "head": 4, "order_agnostic": True, "train_orderings": ("raster", "random")}),
        ("lmconv-agnostic-context", {"channels": 3, "layers": 1, "head": 4, "context": 3, "order_agnostic": True,
                                     "train_orderings": ("raster", "snake", "random")}),
    ],
}
HEADS = [("categorical", {"output": "categorical"}), ("mixture", {"output": "logistic-mixture", "components": 2})]
CASES = [(f"{label}-{hname}", fam, dict(cfg, levels=K, **hcfg))
         for fam, items in LEVEL_TINY.items() for label, cfg in items for hname, hcfg in HEADS]
IDS = [c[0] for c in CASES]


def make(family: str, cfg: dict, ordering_name: str = "raster", seed: int = 0, std: float = 0.7):
    torch.manual_seed(seed)
    o = make_ordering(ordering_name, H, W, seed=seed)
    try:
        m = build_model(family, dict(cfg, height=H, width=W), o)
    except UnsupportedOrdering:
        pytest.skip(f"{family} is tied to its own ordering")
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.double().eval()


def all_images() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(K), repeat=D)), dtype=torch.float64)


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n, D), generator=torch.Generator().manual_seed(seed)).double()


def test_every_family_has_grey_checks():
    assert set(FAMILIES) == set(LEVEL_TINY)


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
@pytest.mark.parametrize("oname", ["raster", "random"])
def test_autoregressive_property_by_gradient(label, family, cfg, oname):
    m = make(family, cfg, oname, seed=1)
    o = m.ordering
    x = random_images(3).requires_grad_(True)
    params = m.logits(x)
    assert params.shape == (3, D, m.out_params)
    for pixel in range(D):
        (g,) = torch.autograd.grad(params[:, pixel].sum(), x, retain_graph=True)
        later = torch.as_tensor(o.inverse >= o.inverse[pixel])
        assert torch.all(g[:, later] == 0), f"pixel {pixel} depends on itself or later pixels"
    (g,) = torch.autograd.grad(params[:, o.perm[-1]].sum(), x)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
@pytest.mark.parametrize("oname", ["raster", "random"])
def test_exact_normalisation_over_all_images(label, family, cfg, oname):
    m = make(family, cfg, oname, seed=2)
    with torch.no_grad():
        total = m.log_prob(all_images()).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
def test_per_pixel_log_prob_is_the_drawn_levels_entry_of_the_whole_conditional(label, family, cfg):
    m = make(family, cfg, "raster", seed=3)
    x = random_images(5, seed=1)
    with torch.no_grad():
        table = m.level_log_probs(x)
        per = m.log_prob_per_pixel(x)
        mean = m.conditionals(x)
    assert table.shape == (5, D, K)
    torch.testing.assert_close(table.exp().sum(-1), torch.ones(5, D, dtype=torch.float64))
    torch.testing.assert_close(per, table.gather(-1, x.long()[..., None])[..., 0])
    torch.testing.assert_close(mean, (table.exp() * torch.arange(K)).sum(-1) / (K - 1))


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
@pytest.mark.parametrize("oname", ["raster", "random"])
def test_fast_sampler_equals_reference_and_draws_levels(label, family, cfg, oname):
    m = make(family, cfg, oname, seed=4)
    a = m.sample(64, generator=torch.Generator().manual_seed(7), fast=True, temperature=0.9)
    b = m.sample(64, generator=torch.Generator().manual_seed(7), fast=False, temperature=0.9)
    assert torch.equal(a, b)
    assert set(a.unique().long().tolist()) <= set(range(K)) and len(a.unique()) > 2
    c = m.sample(64, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
def test_fast_stepper_matches_teacher_forced_conditionals(label, family, cfg):
    m = make(family, cfg, "random", seed=5)
    x = random_images(5, seed=2)
    with torch.no_grad():
        full = m.logits(x)
        st = m.stepper(torch.zeros_like(x), m.ordering)
        for pixel in m.ordering.perm.tolist():
            torch.testing.assert_close(st.logits(pixel), full[:, pixel])
            st.observe(pixel, x[:, pixel])


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
def test_sampling_draws_from_the_model(label, family, cfg):
    """The frequency of each of the K^D images among many samples matches exp(log_prob)."""
    m = make(family, cfg, "raster", seed=6, std=0.5)
    n = 20_000
    with torch.no_grad():
        s = m.sample(n, generator=torch.Generator().manual_seed(0))
        index = (s.long() * (K ** torch.arange(D - 1, -1, -1))).sum(1)
        freq = torch.bincount(index, minlength=K ** D).double() / n
        p = m.log_prob(all_images()).exp()
    assert (freq - p).abs().max() < 5 * np.sqrt(p.max().item() / n)


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
def test_inpainting_keeps_known_pixels_and_is_exact_when_they_come_first(label, family, cfg):
    m = make(family, cfg, "raster", seed=7)
    known = np.array([True, True, False, False])
    values = torch.tensor([3.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    out = m.inpaint(known, values, n=50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, known], values[known].expand(50, 2))
    assert m.inpaint_is_exact(known)
    imgs = all_images()
    with torch.no_grad():
        match = (imgs[:, known] == values[known]).all(1)
        joint = m.log_prob(imgs).exp() * match
        cond = joint / joint.sum()
        target = imgs[torch.nonzero(match)[5, 0]]
        st = m.stepper(torch.zeros(1, D, dtype=torch.float64), m.sampling_ordering(known))
        logp = 0.0
        for p in m.sampling_ordering(known).perm.tolist():
            if not known[p]:
                logp += float(m.dist_head.log_probs(st.logits(p))[0, int(target[p])])
            st.observe(p, target[p:p + 1])
    idx = int((imgs == target).all(1).nonzero()[0, 0])
    assert np.exp(logp) == pytest.approx(cond[idx].item(), rel=1e-9)


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
def test_checkpoint_round_trip_to_the_last_bit(label, family, cfg, tmp_path):
    m = make(family, cfg, "raster", seed=8).float()
    path = tmp_path / "grey.safetensors"
    save_checkpoint(path, m)
    back = load_checkpoint(path).model
    assert (back.levels, back.dist_head.kind) == (K, m.dist_head.kind)
    x = random_images(6, seed=3)
    with torch.no_grad():
        assert torch.equal(m.log_prob(x.float()), back.log_prob(x.float()))


@pytest.mark.parametrize("label,family,cfg", [c for c in CASES if "agnostic" in c[0] or "any" in c[0]],
                         ids=[c[0] for c in CASES if "agnostic" in c[0] or "any" in c[0]])
def test_an_order_agnostic_model_tells_an_unknown_pixel_from_a_black_one(label, family, cfg):
    """Pixel 3's conditional given pixel 0 alone, against given pixel 0 and a black pixel 1: an
    order-agnostic model must see the difference (a black pixel is a level, not 'not drawn')."""
    m = make(family, cfg, "raster", seed=9)
    x = torch.tensor([[2.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    alone = Ordering("custom", H, W, np.array([0, 3, 1, 2]))
    beside_black = Ordering("custom", H, W, np.array([0, 1, 3, 2]))
    with torch.no_grad():
        a = m.level_log_probs(x, alone)[0, 3]
        b = m.level_log_probs(x, beside_black)[0, 3]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("family", sorted(LEVEL_TINY))
def test_a_softmax_head_starts_at_the_level_frequencies(family):
    cfg = dict(LEVEL_TINY[family][0][1], levels=K, output="categorical", height=H, width=W)
    m = build_model(family, cfg).double()
    marg = torch.softmax(torch.randn(D, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    m.init_output_bias(marg)
    with torch.no_grad():
        for p in m.parameters():  # keep only the biases: every conditional is then the marginal
            if p.dim() > 1:
                p.zero_()
        got = m.level_log_probs(random_images(2)).exp()
    torch.testing.assert_close(got, (marg + 1e-3).expand(2, D, K) / (1 + K * 1e-3))
