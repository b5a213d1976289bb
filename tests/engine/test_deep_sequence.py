"""LSTM and Transformer checks in addition to the generic ones: order-agnostic training draws its orderings
from the torch seed, exact inpainting with scattered known pixels, larger-than-tiny steppers,
checkpoint round-trips of the deep families."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models import build_model
from engine.models.train_orderings import draw_orderings, random_orderings
from engine.ordering import make_ordering

from .tiny import H, W, make_tiny

D = H * W
AGNOSTIC = [
    ("lstm", {"hidden": 4, "layers": 1, "embed": 3, "order_agnostic": True}),
    ("transformer", {"d_model": 8, "layers": 2, "heads": 2, "mlp_ratio": 2}),
]
IDS = [f for f, _ in AGNOSTIC]


@pytest.mark.parametrize("family,cfg", AGNOSTIC, ids=IDS)
def test_order_agnostic_training_loss_follows_the_torch_seed(family, cfg):
    m = make_tiny(family, cfg, "raster", seed=1)
    x = torch.randint(0, 2, (6, D)).double()
    torch.manual_seed(5)
    a = m.training_loss(x)
    torch.manual_seed(5)
    b = m.training_loss(x)
    assert a.item() == b.item()
    losses = set()
    for s in range(6):
        torch.manual_seed(s)
        losses.add(round(m.training_loss(x).item(), 10))
    assert len(losses) > 3  # different orderings give different losses
    # the loss is the NLL averaged over images, each in its own random ordering drawn from the seed
    torch.manual_seed(3)
    perms = random_orderings(len(x), D, x.device)
    expected = torch.stack([-m.log_prob(x[i : i + 1], _perm_ordering(perms[i].numpy()))[0] for i in range(len(x))]).mean()
    torch.manual_seed(3)
    torch.testing.assert_close(m.training_loss(x), expected)


def _perm_ordering(perm):
    from engine.ordering import Ordering

    return Ordering("custom", H, W, np.array(perm))


@pytest.mark.parametrize("family,cfg", AGNOSTIC, ids=IDS)
def test_training_orderings_mix_named_and_random_ones(family, cfg):
    """With ``train_orderings`` each image's ordering is drawn from the list ("random" a fresh
    one): a list of one named ordering trains exactly that ordering's NLL; a mixed list draws every
    entry, reproducibly from the seed; unknown names fail when the model is built."""
    x = torch.randint(0, 2, (6, D)).double()
    only_snake = make_tiny(family, dict(cfg, train_orderings=("snake",)), "raster", seed=1)
    torch.testing.assert_close(only_snake.training_loss(x), -only_snake.log_prob(x, make_ordering("snake", H, W)).mean())
    names = ("raster", "hilbert", "random")
    torch.manual_seed(4)
    perms = draw_orderings(names, 300, H, W, torch.device("cpu"))
    named = {n: make_ordering(n, H, W).perm.tolist() for n in names[:2]}
    kinds = [next((n for n, p in named.items() if p == row), "random") for row in perms.tolist()]
    assert set(kinds) == set(names) and all(sorted(row) == list(range(D)) for row in perms.tolist())
    assert 60 < kinds.count("random") < 140  # each about a third
    torch.manual_seed(4)
    assert torch.equal(draw_orderings(names, 300, H, W, torch.device("cpu")), perms)
    with pytest.raises(ValueError, match="zigzag"):
        make_tiny(family, dict(cfg, train_orderings=("raster", "zigzag")))
    with pytest.raises(ValueError, match="at least one"):
        make_tiny(family, dict(cfg, train_orderings=()))


def test_fixed_order_models_train_in_their_own_ordering():
    m = make_tiny("lstm", {"hidden": 5, "layers": 1, "embed": 4}, "snake", seed=2)
    x = torch.randint(0, 2, (4, D)).double()
    torch.testing.assert_close(m.training_loss(x), -m.log_prob(x).mean())
    assert not m.any_order and m.supports(make_ordering("raster", H, W))[0] is False


@pytest.mark.parametrize("family,cfg", AGNOSTIC, ids=IDS)
def test_inpainting_with_scattered_known_pixels_is_exact(family, cfg):
    """Known pixels scattered over the image: an order-agnostic model visits them first, so the
    probability of a completion is p(unknown | known) of the model's joint in that ordering."""
    m = make_tiny(family, cfg, "spiral-out", seed=3)
    known = np.zeros(D, bool)
    known[[1, 4, 7]] = True
    values = torch.tensor([0, 1, 0, 0, 0, 0, 0, 1], dtype=torch.float64)
    assert m.inpaint_is_exact(known)
    order = m.sampling_ordering(known)
    assert set(order.perm[:3].tolist()) == {1, 4, 7}
    imgs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=torch.float64)
    match = (imgs[:, known] == values[known]).all(1)
    joint = m.log_prob(imgs, order).exp() * match
    cond = joint / joint.sum()
    n = 4000
    out = m.inpaint(known, values, n=n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, known], values[known].expand(n, -1))
    codes = (out * (2 ** torch.arange(D - 1, -1, -1, dtype=torch.float64))).sum(1).long()
    freq = torch.bincount(codes, minlength=2**D).double() / n
    assert (freq - cond).abs().max() < 0.03  # sampling error of 4000 draws: about 0.008 at most


@pytest.mark.parametrize(
    "family,cfg",
    [
        ("transformer", {"d_model": 12, "layers": 2, "heads": 3, "height": 5, "width": 6}),
        ("lstm", {"hidden": 7, "layers": 2, "embed": 5, "order_agnostic": True, "height": 5, "width": 6}),
    ],
    ids=["transformer", "lstm"],
)
@pytest.mark.parametrize("known_first", [True, False])
@pytest.mark.parametrize("ask_known", [True, False])
def test_stepper_matches_teacher_forced_with_known_pixels(family, cfg, known_first, ask_known):
    """Known pixels are observed without their logits being asked for (``ask_known`` False): the
    stepper runs them as a chunk before the next pixel; the result must not change."""
    torch.manual_seed(0)
    m = build_model(family, cfg, make_ordering("hilbert", 5, 6)).double()
    known = np.zeros(30, bool)
    known[[3, 8, 13, 21, 29, 0, 1, 2]] = True
    order = m.sampling_ordering(known) if known_first else m.ordering
    x = torch.randint(0, 2, (3, 30)).double()
    full = m.logits(x, order)
    st = m.stepper(torch.zeros_like(x), order)
    for p in order.perm.tolist():
        if ask_known or not known[p]:
            torch.testing.assert_close(st.logits(p), full[:, p])
        st.observe(p, x[:, p])


@pytest.mark.parametrize(
    "family,cfg,oname",
    [
        ("pixelcnn", {"channels": 4, "layers": 1}, "raster"),
        ("lstm", {"hidden": 6, "embed": 4}, "snake"),
        ("transformer", {"d_model": 8, "layers": 1, "heads": 2}, "hilbert"),
        ("lmconv", {"channels": 4, "layers": 1, "order_agnostic": True, "train_orderings": ["snake", "random"]}, "spiral-in"),
    ],
)
def test_checkpoint_round_trip_is_bit_exact(tmp_path, family, cfg, oname):
    torch.manual_seed(0)
    m = build_model(family, cfg, make_ordering(oname))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"{family}.safetensors"
    save_checkpoint(path, m, {"note": "test"})
    ck = load_checkpoint(path)
    x = torch.randint(0, 2, (4, 784)).float()
    assert ck.model.family == family and ck.model.ordering == m.ordering and ck.model.config == m.config
    assert torch.equal(ck.model.log_prob(x), m.log_prob(x))
