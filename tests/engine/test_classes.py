"""Class-conditional models (issue 28): every family that takes a class gives p(x | y) with the
autoregressive property and exact normalisation for every class; the marginal sum_y p(y) p(x | y)
is itself an autoregressive model whose conditionals normalise; Bayes' rule gives p(y | x) and
p(y | a prefix of the ordering); the fast sampler equals the reference given a class and under the
marginal; a checkpoint keeps the classes and the prior; a conditional model started from an
unconditional one's weights computes its conditionals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models import FAMILIES, build_model, family_class
from engine.ordering import make_ordering

from .test_levels import LEVEL_TINY

H, W, C = 2, 2, 3
D = H * W
PRIOR = np.array([5, 3, 2])

HEADS = [("binary", {}, 2), ("categorical", {"output": "categorical", "levels": 4}, 4)]
CONDITIONAL = [f for f in FAMILIES if family_class(f).takes_classes]
CASES = [(f"{label}-{hname}", fam, dict(cfg, classes=C, **hcfg), k)
         for fam, items in LEVEL_TINY.items() if fam in CONDITIONAL
         for label, cfg in items for hname, hcfg, k in HEADS]
IDS = [c[0] for c in CASES]


def make(family: str, cfg: dict, ordering_name: str = "raster", seed: int = 0):
    torch.manual_seed(seed)
    o = make_ordering(ordering_name, H, W, seed=seed)
    if not family_class(family).builds_in(o)[0]:
        pytest.skip(f"{family} is tied to its own ordering")
    m = build_model(family, dict(cfg, height=H, width=W), o)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.7)
        m.set_class_prior(PRIOR)
    return m.double().eval()


def all_images(k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(k), repeat=D)), dtype=torch.float64)


def random_images(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n, D), generator=torch.Generator().manual_seed(seed)).double()


def test_every_family_takes_a_class():
    assert set(CONDITIONAL) == set(FAMILIES)


def test_a_deeper_conditional_pixelcnn_grown_from_a_shallower_one_keeps_every_class():
    base = dict(LEVEL_TINY["pixelcnn"][0][1], height=H, width=W, classes=C)
    small = make("pixelcnn", base, seed=9).float()
    big = build_model("pixelcnn", dict(base, layers=base["layers"] + 2))
    big.grow_from(small)
    big.class_log_prior.copy_(small.class_log_prior)
    x = random_images(5, 2).float()
    with torch.no_grad():
        for y in range(C):
            torch.testing.assert_close(big.log_prob(x, y=y), small.log_prob(x, y=y))


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
@pytest.mark.parametrize("oname", ["raster", "random"])
def test_autoregressive_property_for_every_class_and_the_marginal(label, family, cfg, k, oname):
    m = make(family, cfg, oname, seed=1)
    inv = np.asarray(m.ordering.inverse)
    for y in [*range(C), None]:
        x = random_images(3, k).requires_grad_(True)
        params = m.logits(x, y=y)
        for i in range(D):
            g, = torch.autograd.grad(params[:, i].sum(), x, retain_graph=True)
            later = [j for j in range(D) if inv[j] >= inv[i]]
            assert torch.all(g[:, later] == 0), f"class {y}: pixel {i}'s conditional depends on itself or a later pixel"


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_every_class_and_the_marginal_normalise(label, family, cfg, k):
    m = make(family, cfg, "random" if m_any(family, cfg) else "raster", seed=2)
    xs = all_images(k)
    with torch.no_grad():
        per_class = torch.stack([m.log_prob(xs, y=y) for y in range(C)])  # (C, K^D)
        marginal = m.log_prob(xs)
    for y in range(C):
        assert torch.logsumexp(per_class[y], 0).item() == pytest.approx(0.0, abs=1e-9)
    assert torch.logsumexp(marginal, 0).item() == pytest.approx(0.0, abs=1e-9)
    prior = torch.as_tensor(np.log(PRIOR + 1.0) - np.log((PRIOR + 1.0).sum()))
    torch.testing.assert_close(m.class_log_prior, prior, atol=1e-6, rtol=0)  # the training frequencies, add-one smoothed
    log_prior = torch.log_softmax(m.class_log_prior, 0)
    torch.testing.assert_close(marginal, torch.logsumexp(log_prior[:, None] + per_class, 0), atol=1e-9, rtol=0)
    # the classes are wired in: they give different distributions
    assert (per_class[0] - per_class[1]).abs().max() > 1e-3


def m_any(family: str, cfg: dict) -> bool:
    return bool(cfg.get("order_agnostic", getattr(family_class(family).config_class(), "order_agnostic", False)))


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_posterior_is_bayes_rule_over_any_prefix(label, family, cfg, k):
    m = make(family, cfg, seed=3)
    x = random_images(5, k, seed=1)
    with torch.no_grad():
        lp = m.class_log_probs(x)  # (C, B, D)
        post = m.class_log_posterior(x)
        joint = m.class_log_prior[:, None] + torch.stack([m.log_prob(x, y=y) for y in range(C)])
        torch.testing.assert_close(post, torch.log_softmax(joint, 0).T, atol=1e-9, rtol=0)
        torch.testing.assert_close(lp.sum(-1), joint - m.class_log_prior[:, None], atol=1e-9, rtol=0)
        perm = list(m.ordering.perm)
        for t in range(D + 1):
            want = torch.log_softmax(m.class_log_prior[:, None] + lp[:, :, perm[:t]].sum(-1), 0).T
            torch.testing.assert_close(m.class_log_posterior(x, upto=t), want, atol=1e-9, rtol=0)
        # the posterior from a prefix does not depend on the pixels after it
        x2 = x.clone()
        x2[:, perm[2:]] = (k - 1) - x2[:, perm[2:]]
        torch.testing.assert_close(m.class_log_posterior(x2, upto=2), m.class_log_posterior(x, upto=2))


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_fast_sampler_equals_reference_given_a_class_and_under_the_marginal(label, family, cfg, k):
    m = make(family, cfg, seed=4)
    for y in (torch.tensor([0, 2, 1, 2]), None):
        a = m.sample(4, y=y, generator=torch.Generator().manual_seed(7), fast=True)
        b = m.sample(4, y=y, generator=torch.Generator().manual_seed(7), fast=False)
        assert torch.equal(a, b)
    steps = list(m.sample_steps(6, generator=torch.Generator().manual_seed(1)))
    assert steps[-1].y is not None and steps[-1].y.shape == (6,)
    assert int(steps[-1].y.min()) >= 0 and int(steps[-1].y.max()) < C


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_inpainting_keeps_known_pixels_for_a_class(label, family, cfg, k):
    m = make(family, cfg, seed=5)
    known = np.array([True, False, True, False])
    values = random_images(1, k, seed=3)[0]
    for y in (1, None):
        out = m.inpaint(known, values, n=5, y=y, generator=torch.Generator().manual_seed(2))
        assert torch.equal(out[:, known], values[known].expand(5, -1))


def test_classes_drawn_without_known_pixels_follow_the_prior():
    m = make("pixelcnn", dict(LEVEL_TINY["pixelcnn"][0][1], classes=C), seed=6)
    y = m.sample_steps(3000, generator=torch.Generator().manual_seed(0))
    first = next(y)
    assert first.y is not None
    freq = np.bincount(first.y.numpy(), minlength=C) / 3000
    np.testing.assert_allclose(freq, (PRIOR + 1) / (PRIOR + 1).sum(), atol=0.03)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_checkpoint_round_trip_keeps_classes_and_prior(label, family, cfg, k, tmp_path):
    m = make(family, cfg, seed=7).float()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, m)
    back = load_checkpoint(path).model
    assert back.classes == C
    assert torch.equal(back.class_log_prior, m.class_log_prior)
    x = random_images(4, k).float()
    assert torch.equal(back.log_prob(x, y=2), m.log_prob(x, y=2))


def test_zero_class_terms_compute_the_unconditional_model():
    cfg = dict(LEVEL_TINY["pixelcnn"][0][1], height=H, width=W)
    torch.manual_seed(0)
    plain = build_model("pixelcnn", cfg)
    cond = build_model("pixelcnn", dict(cfg, classes=C))
    missing = cond.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("class_") for k in missing)
    x = random_images(4, 2).float()
    with torch.no_grad():
        for y in range(C):
            torch.testing.assert_close(cond.log_prob(x, y=y), plain.log_prob(x))
        torch.testing.assert_close(cond.log_prob(x), plain.log_prob(x))


def test_bad_classes_are_refused():
    cfg = dict(LEVEL_TINY["pixelcnn"][0][1], height=H, width=W)
    with pytest.raises(ValueError, match="Bernoulli or categorical"):
        build_model("pixelcnn", dict(cfg, classes=C, levels=4, output="logistic-mixture"))
    with pytest.raises(ValueError, match="classes must be"):
        build_model("pixelcnn", dict(cfg, classes=1))
    m = build_model("pixelcnn", dict(cfg, classes=C))
    x = random_images(2, 2).float()
    with pytest.raises(ValueError, match="a class must be in 0..2"):
        m.log_prob(x, y=3)
    with pytest.raises(ValueError, match="2 images"):
        m.log_prob(x, y=[0, 1, 2])
    with pytest.raises(ValueError, match="not conditioned"):
        build_model("pixelcnn", cfg).log_prob(x, y=0)


def test_training_on_labels_sets_the_prior_and_learns_the_classes(tmp_path):
    from engine.train import EpochEnd, TrainConfig, TrainingError, train

    rng = np.random.default_rng(0)
    y = rng.choice(C, size=600, p=[0.5, 0.3, 0.2])
    x = (rng.random((600, D)) < 0.1).astype(np.float32)
    x[np.arange(600), y] = 1.0  # class c lights pixel c
    cfg = dict(LEVEL_TINY["pixelcnn"][0][1], height=H, width=W, classes=C)
    m = build_model("pixelcnn", cfg)
    tc = TrainConfig(epochs=6, batch_size=50, lr=5e-2, device="cpu")
    with pytest.raises(TrainingError, match="labels"):
        next(iter(train(m, x[:500], x[500:], tc)))
    events = list(train(m, x[:500], x[500:], tc, out=tmp_path / "m.safetensors", train_y=y[:500], valid_y=y[500:]))
    ends = [e for e in events if isinstance(e, EpochEnd)]
    assert ends[-1].valid_nll < ends[0].valid_nll
    np.testing.assert_allclose(m.class_log_prior.exp().numpy(), (np.bincount(y[:500], minlength=C) + 1) / 503, atol=1e-6)
    back = load_checkpoint(tmp_path / "m.safetensors").model
    with torch.no_grad():
        guess = back.class_log_posterior(torch.as_tensor(x[500:])).argmax(1).numpy()
    assert (guess == y[500:]).mean() > 0.9


def test_hybrid_loss_is_the_generative_loss_plus_the_weighted_classifier_cross_entropy():
    from engine.train import TrainConfig, TrainingError, hybrid_loss, train

    m = make("pixelcnn", dict(LEVEL_TINY["pixelcnn"][0][1], classes=C), seed=8)
    x, y = random_images(6, 2, seed=4), torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        gen = -m.log_prob(x, y=y)
        ce = -m.class_log_posterior(x)[torch.arange(6), y]
        want = (gen + 2.5 * ce).mean()
    torch.testing.assert_close(hybrid_loss(m, 2.5, x, y), want)
    # the classifier term on the first 2 images only: every image's generative term, 2 images' cross-entropy
    with torch.no_grad():
        part = gen.mean() + 2.5 * ce[:2].mean()
    torch.testing.assert_close(hybrid_loss(m, 2.5, x, y, class_batch=2), part)
    torch.testing.assert_close(hybrid_loss(m, 2.5, x, y, class_batch=50), want)
    with pytest.raises(TrainingError, match="class-weight"):
        TrainConfig(class_weight=-1).validate()
    with pytest.raises(TrainingError, match="class-batch"):
        TrainConfig(class_batch=-3).validate()
    plain = build_model("pixelcnn", dict(LEVEL_TINY["pixelcnn"][0][1], height=H, width=W))
    xs = np.zeros((4, D), np.float32)
    with pytest.raises(TrainingError, match="no classes"):
        next(iter(train(plain, xs, xs, TrainConfig(class_weight=1.0))))


def test_hybrid_training_of_a_made_drops_units_only_while_a_run_holds_its_generator():
    m = build_model("made", dict(height=H, width=W, hidden=(16,), dropout=0.5, classes=C))
    x, y = random_images(4, 2, seed=5).float(), torch.tensor([0, 1, 2, 0])
    plain = m.logits(x, y=y)
    m.train_generator = torch.Generator().manual_seed(0)
    m.train()
    dropped = m._logits(x, m.ordering, y)
    assert not torch.equal(dropped, plain)
    m.eval()
    assert torch.equal(m._logits(x, m.ordering, y), plain)


def test_hybrid_training_counts_a_uniform_classifier_in_the_divergence_bound():
    import math

    from engine.train import TrainConfig, _Run

    m = build_model("pixelcnn", dict(LEVEL_TINY["pixelcnn"][0][1], height=H, width=W, classes=C))
    xs, ys = np.zeros((4, D), np.float32), np.array([0, 1, 2, 0])
    plain = _Run(m, xs, xs, TrainConfig(), None, ys, ys)
    hybrid = _Run(m, xs, xs, TrainConfig(class_weight=50.0), None, ys, ys)
    assert hybrid.uniform_nll == pytest.approx(plain.uniform_nll + 50.0 * math.log(C))


def _lit_pixels(n: int = 600):
    """Images of a 2x2 grid where class c lights pixel c, and their labels."""
    rng = np.random.default_rng(0)
    y = rng.choice(C, size=n, p=[0.5, 0.3, 0.2])
    x = (rng.random((n, D)) < 0.1).astype(np.float32)
    x[np.arange(n), y] = 1.0
    return x, y


def test_select_accuracy_keeps_the_epoch_that_classifies_best_and_records_its_accuracy(tmp_path):
    from engine.classify import classify
    from engine.train import EpochEnd, TrainConfig, train

    x, y = _lit_pixels()
    m = build_model("made", dict(height=H, width=W, hidden=(16,), classes=C))
    out = tmp_path / "m.safetensors"
    tc = TrainConfig(epochs=4, batch_size=50, lr=2e-2, device="cpu", select="accuracy", eval_batch_size=30)
    ends = [e for e in train(m, x[:500], x[500:], tc, out=out, train_y=y[:500], valid_y=y[500:]) if isinstance(e, EpochEnd)]
    assert all(e.valid_accuracy is not None for e in ends)
    ck = load_checkpoint(out)
    kept = ck.meta["epoch"]
    accs = [e.valid_accuracy for e in ends]
    assert accs[kept - 1] == max(accs) and ends[-1].best_valid_accuracy == max(accs)
    again = classify(ck.model, x[500:], y[500:])  # what was recorded is the kept weights' accuracy and NLL
    assert again.accuracy == pytest.approx(ck.meta["metrics"]["valid_accuracy"]) == pytest.approx(max(accs))
    assert again.cond_nll_nats == pytest.approx(ck.meta["metrics"]["valid_nll"], rel=1e-5)


def test_select_accuracy_keeps_a_worse_nll_for_a_better_classifier_and_breaks_ties_by_nll(tmp_path, monkeypatch):
    from engine.train import EpochEnd, TrainConfig, _Run, train

    script = iter([(10.0, 0.5), (9.0, 0.4), (11.0, 0.7), (12.0, 0.6), (10.5, 0.7), (8.0, 0.65)])

    def scripted(self, epoch, schedule):
        return next(script)
        yield  # a generator, as the real pass is

    monkeypatch.setattr(_Run, "_valid_accuracy", scripted)
    x, y = _lit_pixels(200)
    out = tmp_path / "m.safetensors"
    tc = TrainConfig(epochs=4, batch_size=50, device="cpu", select="accuracy")
    make_model = lambda: build_model("made", dict(height=H, width=W, hidden=(8,), classes=C))  # noqa: E731
    ends = [e for e in train(make_model(), x[:150], x[150:], tc, out=out, train_y=y[:150], valid_y=y[150:])
            if isinstance(e, EpochEnd)]
    assert [e.improved for e in ends] == [True, False, True, False]
    assert load_checkpoint(out).meta["epoch"] == 3 and ends[-1].best_valid_nll == 11.0
    # resumed, the best is read back from the history with the same rule: 0.7 at 10.5 nats beats 0.7 at 11
    tc.epochs = 6
    ends = [e for e in train(make_model(), x[:150], x[150:], tc, out=out, resume=True, train_y=y[:150], valid_y=y[150:])
            if isinstance(e, EpochEnd)]
    assert [e.improved for e in ends] == [True, False]
    assert load_checkpoint(out).meta["epoch"] == 5 and ends[-1].best_valid_accuracy == 0.7


def test_select_accuracy_needs_a_conditional_model():
    from engine.train import TrainConfig, TrainingError, train

    plain = build_model("made", dict(height=H, width=W, hidden=(8,)))
    xs = np.zeros((4, D), np.float32)
    with pytest.raises(TrainingError, match="no classes"):
        next(iter(train(plain, xs, xs, TrainConfig(select="accuracy", device="cpu"))))
    with pytest.raises(TrainingError, match="nll or accuracy"):
        TrainConfig(select="loss").validate()
