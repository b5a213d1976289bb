"""Class-conditional LMConv, LSTM and Transformer, beyond the checks every conditional family gets
(tests/engine/test_classes.py): order-agnostic training uses each image's class in the ordering drawn
for it; a conditional model loaded from an unconditional one's weights (zero class terms) computes
its conditionals and draws its samples exactly, in several orderings; the fast steppers carry the
classes through ``select``; a conditional LMConv grows deeper and wider with its class terms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.models import build_model
from engine.models.lmconv import LMConvConfig
from engine.models.train_orderings import draw_orderings
from engine.ordering import Ordering, make_ordering

from .test_levels import LEVEL_TINY

H, W, C = 2, 3, 3
D = H * W
MINE = ("lmconv", "lstm", "transformer")
HEADS = [("binary", {}, 2), ("categorical", {"output": "categorical", "levels": 4}, 4)]
CASES = [(f"{label}-{hname}", fam, dict(cfg, **hcfg), k)
         for fam in MINE for label, cfg in LEVEL_TINY[fam] for hname, hcfg, k in HEADS]
IDS = [c[0] for c in CASES]


def build(family: str, cfg: dict, ordering_name: str = "raster", seed: int = 0):
    return build_model(family, dict(cfg, height=H, width=W), make_ordering(ordering_name, H, W, seed=seed))


def randomise(m, seed: int, std: float = 0.7):
    """Every weight random (the class terms too), as after training, in float64."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.double().eval()


def images(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n, D), generator=torch.Generator().manual_seed(seed)).double()


def orderings_of(m) -> list[str]:
    return ["raster", "snake", "random"] if m.any_order else ["raster"]


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_order_agnostic_training_uses_each_images_class_in_its_ordering(label, family, cfg, k):
    m = randomise(build(family, dict(cfg, classes=C)), seed=1)
    if not m.any_order:
        pytest.skip("trained in its own ordering only: the base class's loss, -log p(x | y)")
    x, y = images(6, k, seed=2), torch.tensor([0, 1, 2, 2, 1, 0])
    m.train_generator = torch.Generator().manual_seed(4)
    loss = m.training_loss(x, y)
    perms = draw_orderings(m.config.train_orderings, len(x), H, W, x.device, torch.Generator().manual_seed(4))
    want = torch.stack([-m.log_prob(x[i : i + 1], Ordering("custom", H, W, perms[i].numpy()), y=int(y[i]))[0]
                        for i in range(len(x))]).mean()
    torch.testing.assert_close(loss, want, atol=1e-10, rtol=0)
    # the class is wired into training: other classes give another loss, and the class terms of the
    # classes in the batch (only those) get gradients
    m.train_generator = torch.Generator().manual_seed(4)
    assert abs(m.training_loss(x, (y + 1) % C).item() - loss.item()) > 1e-6
    m.train_generator = torch.Generator().manual_seed(4)
    m.training_loss(x, torch.tensor([0, 2, 2, 0, 0, 2])).backward()
    grads = [p.grad for name, p in m.named_parameters() if name.startswith("class_")]
    assert grads and all(g is not None for g in grads)
    assert all(g[[0, 2]].abs().sum() > 0 and g[1].abs().sum() == 0 for g in grads)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_zero_class_terms_compute_the_unconditional_model_exactly(label, family, cfg, k):
    """The CLI's --init-from: everything but the ``class_`` parameters loaded from an unconditional
    model. The class terms start at zero, so every class's conditionals are the unconditional ones to
    the bit (and the marginal's to rounding), and the fast sampler given classes draws the same images."""
    for oname in orderings_of(build(family, cfg)):
        plain = randomise(build(family, cfg, oname, seed=3), seed=5)
        cond = build(family, dict(cfg, classes=C), oname, seed=3).double().eval()
        keys = cond.load_state_dict(plain.state_dict(), strict=False)
        assert keys.missing_keys and all(n.startswith("class_") for n in keys.missing_keys)
        assert not keys.unexpected_keys
        x = images(5, k, seed=6)
        with torch.no_grad():
            want = plain.logits(x)
            for c in range(C):
                assert torch.equal(cond.logits(x, y=c), want), f"class {c} in {oname}"
                assert torch.equal(cond.pixel_logit(x, 4, y=c), plain.pixel_logit(x, 4))
            torch.testing.assert_close(cond.log_prob(x), plain.log_prob(x), atol=1e-10, rtol=0)
        a = cond.sample(4, y=[2, 0, 1, 2], generator=torch.Generator().manual_seed(7))
        b = plain.sample(4, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b), oname


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_stepper_select_takes_the_classes_of_the_rows(label, family, cfg, k):
    """After ``select(index)`` a conditional stepper gives the conditionals of a fresh one fed the
    reindexed histories and classes: the class terms are reindexed with the state."""
    m = randomise(build(family, dict(cfg, classes=C), "snake" if build(family, cfg).any_order else "raster", seed=2), seed=8)
    x, y = images(6, k, seed=9), torch.tensor([0, 1, 2, 0, 1, 2])
    perm = m.ordering.perm.tolist()
    cut = 3
    with torch.no_grad():
        st = m.stepper(x.clone(), m.ordering, y)
        for p in perm[:cut]:
            if p != perm[1]:  # pixel 1 observed without being asked for: the queued paths too
                st.logits(p)
            st.observe(p, x[:, p])
        index = torch.tensor([5, 5, 0, 2, 1, 4])
        st.select(index)
        xs, ys = x[index], y[index]
        ref = m._logits(xs, m.ordering, ys)
        for p in perm[cut:]:
            torch.testing.assert_close(st.logits(p), ref[:, p], atol=1e-10, rtol=0)
            st.observe(p, xs[:, p])
        # and the classes matter: the same rows with other classes have other conditionals
        assert not torch.allclose(m._logits(xs, m.ordering, (ys + 1) % C)[:, perm[cut:]], ref[:, perm[cut:]])


@pytest.mark.parametrize("channels,layers,context", [(6, 4, 0), (9, 3, 4)])
def test_a_conditional_lmconv_grows_deeper_and_wider_with_its_classes(channels, layers, context):
    """Growing (``grow_from``) keeps every class's conditionals: the class terms of the source's layers
    are copied into the gated halves of the wider ones, the new channels' and new layers' start at zero."""
    small = LMConvConfig(height=H, width=W, channels=4, layers=2, head=5, order_agnostic=True, classes=C)
    src = randomise(build_model("lmconv", small, None), seed=11, std=0.4).float()
    big = build_model("lmconv", dataclasses.replace(small, channels=channels, layers=layers, context=context), None)
    big.grow_from(src)
    x = images(5, 2, seed=12).float()
    with torch.no_grad():
        for name in ["raster", "snake", "spiral-in"]:
            o = make_ordering(name, H, W)
            for c in range(C):
                torch.testing.assert_close(big.log_prob(x, o, y=c), src.log_prob(x, o, y=c), atol=1e-5, rtol=0)
    assert big.class_layers is not None and big.class_layers[layers].weight.abs().sum() == 0  # a new layer's
    wide = big.class_layers[0].weight.view(C, 2, channels)  # (classes, filter | gate, channels)
    assert wide[:, :, 4:].abs().sum() == 0 and wide[:, :, :4].abs().sum() > 0
    np.testing.assert_array_equal(wide[:, :, :4].detach().numpy(), src.class_layers[0].weight.view(C, 2, 4).detach().numpy())


@pytest.mark.parametrize("family,cfg", [
    ("lmconv", {"channels": 4, "layers": 1, "head": 6, "order_agnostic": True, "train_orderings": ("raster", "random")}),
    ("lstm", {"hidden": 8, "layers": 1, "embed": 6, "order_agnostic": True}),
    ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "mlp_ratio": 2}),
], ids=["lmconv", "lstm", "transformer"])
def test_order_agnostic_training_on_labels_learns_the_classes(family, cfg):
    """Class c lights pixel c (the other pixels are noise): trained on labels over random orderings,
    the model's posterior from a whole image names the class, in any ordering, nearly as often as
    Bayes' rule on the true distribution does (0.915 on these images; always the likeliest class: 0.5)."""
    from engine.train import TrainConfig, train

    rng = np.random.default_rng(0)
    y = rng.choice(C, size=1200, p=[0.5, 0.3, 0.2])
    x = (rng.random((1200, D)) < 0.1).astype(np.float32)
    x[np.arange(1200), y] = 1.0
    torch.manual_seed(0)
    m = build_model(family, dict(cfg, height=H, width=W, classes=C))
    tc = TrainConfig(epochs=6, batch_size=50, lr=5e-2, device="cpu", seed=0)
    list(train(m, x[:1000], x[1000:], tc, train_y=y[:1000], valid_y=y[1000:]))
    bayes = (np.log([0.5, 0.3, 0.2]) + np.where(x[1000:, :C] == 1, 0.0, -np.inf)).argmax(1)  # the lit class likeliest a priori
    assert (bayes == y[1000:]).mean() == pytest.approx(0.915)
    with torch.no_grad():
        for name in ("raster", "spiral-in"):
            guess = m.class_log_posterior(torch.as_tensor(x[1000:]), make_ordering(name, H, W)).argmax(1).numpy()
            assert (guess == y[1000:]).mean() > 0.85, name
