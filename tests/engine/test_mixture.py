"""The mixture (an ensemble of checkpoints as one model, engine.models.mixture): its probabilities are
the mean of its members' (the log-mean-exp of their joint log-likelihoods) for every class and the
marginal; its conditionals are autoregressive and normalise; the fast sampler equals the
reference and keeps known pixels; its classifier is Bayes' rule over the members' mean p(x | y);
`pixelchain mix` writes it, a checkpoint keeps it to the last bit, and bad members or hostile
files are refused with one line."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.checkpoint import INT8, CheckpointError, load_checkpoint, save_checkpoint
from engine.classify import classify
from engine.cli.commands import main
from engine.models import FAMILIES, Mixture, build_model
from engine.models.base import log_mean_exp
from engine.ordering import make_ordering

H, W, C = 2, 2, 3
D = H * W
PRIOR = np.array([5, 3, 2])

#: members of different families; the order-agnostic ones follow any ordering
FIXED = [("made", {"hidden": (9,), "direct": True}), ("nade", {"hidden": 5}), ("pixelcnn", {"channels": 3, "layers": 2, "kernel": 3,
                                                                                           "first_kernel": 3, "head": 4})]
AGNOSTIC = [("made", {"hidden": (12,), "order_agnostic": True, "num_masks": 4}),
            ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "mlp_ratio": 2})]
HEADS = {2: {}, 4: {"output": "categorical", "levels": 4}}
CASES = [(k, classes, fixed) for k in (2, 4) for classes in (0, C) for fixed in (True, False)]
IDS = [f"K{k}-{'c' if classes else 'u'}-{'fixed' if fixed else 'agnostic'}" for k, classes, fixed in CASES]


def members(k: int, classes: int, fixed: bool, seed: int = 0) -> list:
    """Trained-looking members (random weights): the fixed-order ones in raster, the order-agnostic
    ones in a random ordering."""
    order = make_ordering("raster", H, W) if fixed else make_ordering("random", H, W, seed=seed)
    out = []
    for i, (family, cfg) in enumerate(FIXED if fixed else AGNOSTIC):
        torch.manual_seed(seed * 10 + i)
        m = build_model(family, dict(cfg, height=H, width=W, classes=classes, **HEADS[k]), order)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.8)
            if classes:
                m.set_class_prior(PRIOR)
        out.append(m.double().eval())
    return out


def make(k: int, classes: int, fixed: bool, seed: int = 0) -> tuple[Mixture, list]:
    ms = members(k, classes, fixed, seed)
    return Mixture.of(ms).double().eval(), ms


def all_images(k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(k), repeat=D)), dtype=torch.float64)


def random_images(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n, D), generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("k,classes,fixed", CASES, ids=IDS)
def test_the_mixture_is_the_mean_of_its_members_and_normalises(k, classes, fixed):
    mix, ms = make(k, classes, fixed)
    xs = all_images(k)
    with torch.no_grad():
        for y in [*range(classes), None] if classes else [None]:
            lp = mix.log_prob(xs, y=y)
            if y is None and classes:  # the marginal over classes of the mixture of p(x | y)
                per = torch.stack([log_mean_exp(torch.stack([m.log_prob(xs, mix.ordering, y=c) for m in ms]), 0)
                                   for c in range(classes)])
                want = torch.logsumexp(torch.log_softmax(mix.class_log_prior, 0)[:, None] + per, 0)
            else:
                want = log_mean_exp(torch.stack([m.log_prob(xs, mix.ordering, y=y) for m in ms]), 0)
            torch.testing.assert_close(lp, want, atol=1e-9, rtol=0)
            assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)
            # its whole conditionals normalise at every pixel
            torch.testing.assert_close(mix.level_log_probs(xs, y=y).exp().sum(-1), torch.ones(len(xs), D, dtype=torch.float64))
        # the members differ, so the mixture is not any one of them
        assert (ms[0].log_prob(xs, mix.ordering, y=0 if classes else None)
                - ms[1].log_prob(xs, mix.ordering, y=0 if classes else None)).abs().max() > 1e-3


@pytest.mark.parametrize("k,classes,fixed", CASES, ids=IDS)
def test_every_conditional_of_the_mixture_depends_only_on_earlier_pixels(k, classes, fixed):
    mix, _ = make(k, classes, fixed, seed=1)
    orders = [mix.ordering] if fixed else [mix.ordering, make_ordering("spiral-in", H, W)]
    for order in orders:
        inv = np.asarray(order.inverse)
        for y in [0, None] if classes else [None]:
            x = random_images(3, k, seed=2).requires_grad_(True)
            params = mix.logits(x, order, y=y)
            for i in range(D):
                g, = torch.autograd.grad(params[:, i].sum(), x, retain_graph=True)
                later = [j for j in range(D) if inv[j] >= inv[i]]
                assert torch.all(g[:, later] == 0), f"pixel {i}'s conditional depends on itself or a later pixel"


@pytest.mark.parametrize("k,classes,fixed", CASES, ids=IDS)
def test_fast_sampler_equals_reference_and_inpainting_keeps_known_pixels(k, classes, fixed):
    mix, _ = make(k, classes, fixed, seed=2)
    for y in ([torch.tensor([0, 2, 1, 2, 0]), None] if classes else [None]):
        a = mix.sample(5, y=y, generator=torch.Generator().manual_seed(3), fast=True)
        b = mix.sample(5, y=y, generator=torch.Generator().manual_seed(3), fast=False)
        assert torch.equal(a, b)
    known = np.array([True, False, False, True])
    values = random_images(1, k, seed=4)[0]
    out = mix.inpaint(known, values, n=6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, known], values[known].expand(6, -1))
    assert mix.inpaint_is_exact(known) == (not fixed or bool(np.all(known[np.asarray(mix.ordering.perm)][:2])))


def test_the_stepper_weighs_members_by_the_prefix_and_resamples_rows():
    mix, ms = make(4, 0, False, seed=3)
    x = random_images(3, 4, seed=5)
    order = mix.ordering
    perm = list(order.perm)
    with torch.no_grad():
        s = mix.stepper(x.clone(), order)
        for t, pixel in enumerate(perm):
            got = mix._level_log_probs(s.logits(pixel))
            torch.testing.assert_close(got, mix.level_log_probs(x, order)[:, pixel], atol=1e-9, rtol=0)
            s.observe(pixel, x[:, pixel])
            if t == 1:  # rows 2, 0, 2 go on: as a stepper that saw those images from the start
                s.select(torch.tensor([2, 0, 2]))
                x = x[[2, 0, 2]]


def test_members_must_model_the_same_images_and_follow_one_ordering():
    a = build_model("made", {"height": H, "width": W, "hidden": (5,)})
    with pytest.raises(ValueError, match="levels"):
        Mixture.of([a, build_model("made", {"height": H, "width": W, "hidden": (5,), **HEADS[4]})])
    with pytest.raises(ValueError, match="classes"):
        Mixture.of([a, build_model("made", {"height": H, "width": W, "hidden": (5,), "classes": 3})])
    with pytest.raises(ValueError, match="ordering"):
        Mixture.of([a, build_model("made", {"height": H, "width": W, "hidden": (5,)}, make_ordering("snake", H, W))])
    with pytest.raises(ValueError, match="mixture"):
        Mixture.of([Mixture.of([a, a]), a])
    with pytest.raises(ValueError, match="Bernoulli or categorical"):
        Mixture.of([build_model("nade", {"height": H, "width": W, "levels": 4, "output": "logistic-mixture"})] * 2)
    with pytest.raises(ValueError, match="not trained"):
        Mixture.of([a, a]).training_loss(torch.zeros(1, D))
    assert "mixture" not in FAMILIES  # nothing offers to train one


def test_the_classifier_of_a_mixture_is_bayes_rule_over_the_mean_of_its_members():
    mix, ms = make(2, C, False, seed=4)
    x = random_images(40, 2, seed=6)
    y = torch.randint(0, C, (40,), generator=torch.Generator().manual_seed(1))
    r = classify(mix, x, y, chunk=7)
    with torch.no_grad():
        per = torch.stack([log_mean_exp(torch.stack([m.log_prob(x, mix.ordering, y=c) for m in ms]), 0) for c in range(C)])
    joint = mix.class_log_prior[:, None] + per
    np.testing.assert_allclose(r.log_posterior, torch.log_softmax(joint, 0).T.numpy(), atol=1e-6)
    np.testing.assert_array_equal(r.predictions, joint.argmax(0).numpy())


def _save_member(m, path, dataset="binarized-mnist"):
    save_checkpoint(path, m.float(), {"dataset": dataset, "name": path.stem})
    return path


def test_mix_command_writes_an_ensemble_that_round_trips_to_the_last_bit(tmp_path, capsys):
    ms = members(2, C, False, seed=5)
    paths = [_save_member(m, tmp_path / f"m{i}.safetensors") for i, m in enumerate(ms)]
    out = tmp_path / "ens.safetensors"
    assert main(["mix", *map(str, paths), "--out", str(out), "--name", "pair"]) == 0
    assert "an ensemble of 2 models" in capsys.readouterr().out
    ck = load_checkpoint(out)
    assert ck.model.family == "mixture" and ck.name == "pair" and ck.meta["dataset"] == "binarized-mnist"
    assert [m["name"] for m in ck.meta["mixture"]["members"]] == ["m0", "m1"]
    x = random_images(6, 2, seed=7).float()
    with torch.no_grad():
        want = log_mean_exp(torch.stack([load_checkpoint(p).model.log_prob(x, y=1) for p in paths]), 0)
        torch.testing.assert_close(ck.model.log_prob(x, y=1), want, atol=1e-5, rtol=0)
    for i, p in enumerate(paths):  # every member's weights to the last bit
        for k, v in load_checkpoint(p).model.state_dict().items():
            assert torch.equal(ck.model.state_dict()[f"members.{i}.{k}"], v)
    again = tmp_path / "again.safetensors"
    save_checkpoint(again, ck.model, ck.meta)
    for k, v in load_checkpoint(again).model.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k])
    small = tmp_path / "int8.safetensors"  # the bundled form: int8 weight matrices
    save_checkpoint(small, ck.model, ck.meta, dtype=INT8)
    assert load_checkpoint(small).model.family == "mixture"


def test_mix_command_refuses_bad_members_with_one_line(tmp_path, capsys):
    a = _save_member(build_model("made", {"height": H, "width": W, "hidden": (5,)}), tmp_path / "a.safetensors")
    grey = _save_member(build_model("made", {"height": H, "width": W, "hidden": (5,), **HEADS[4]}), tmp_path / "g.safetensors",
                        "mnist")
    b2 = _save_member(build_model("made", {"height": H, "width": W, "hidden": (5,), "levels": 2}), tmp_path / "b2.safetensors",
                      "mnist")
    cases = [([a], "2 to"), ([a, grey], "same data"), ([a, b2], "same data"), ([a, a], "one of the members")]
    for args, text in cases:
        out = a if text == "one of the members" else tmp_path / "out.safetensors"
        assert main(["mix", *map(str, args), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err
    ens = tmp_path / "ens.safetensors"
    assert main(["mix", str(a), str(a), "--out", str(ens)]) == 0
    assert main(["mix", str(ens), str(a), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "itself an ensemble" in capsys.readouterr().err


def _rewrite(path, out, edit):
    """A copy of the checkpoint at ``path`` with its pixelchain metadata changed by ``edit``."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    info = json.loads(md["pixelchain"])
    edit(info)
    save_file(load_file(str(path)), str(out), metadata=dict(md, pixelchain=json.dumps(info)))
    return out


def test_hostile_ensemble_checkpoints_are_refused(tmp_path):
    a = build_model("made", {"height": H, "width": W, "hidden": (5,)})
    good = tmp_path / "ens.safetensors"
    save_checkpoint(good, Mixture.of([a, a]))

    def nested(info):
        info["config"]["members"][0] = {"family": "mixture", "config": copy.deepcopy(info["config"])}

    def huge(info):
        info["config"]["members"][1]["config"]["hidden"] = [1 << 30]

    def other_size(info):
        info["config"]["members"][1]["config"]["height"] = 100_000

    def not_object(info):
        info["config"]["members"][1] = "made"

    for edit, text in [(nested, "member"), (huge, "far larger"), (other_size, "height"), (not_object, "member 1")]:
        with pytest.raises(CheckpointError, match=text):
            load_checkpoint(_rewrite(good, tmp_path / f"{edit.__name__}.safetensors", edit))


@pytest.mark.parametrize("k,classes", [(2, 0), (4, C)], ids=["binary", "grey-classes"])
def test_member_weights_are_each_members_posterior_given_the_earlier_pixels(k, classes):
    mix, ms = make(k, classes, False, seed=6)
    x = random_images(2, k, seed=8)
    order = mix.ordering
    perm = list(order.perm)
    with torch.no_grad():
        for y in ([1, None] if classes else [None]):
            post = mix.member_posterior(x, y=y)  # (M, B, D)
            torch.testing.assert_close(post.sum(0).double(), torch.ones(2, D, dtype=torch.float64), atol=1e-6, rtol=0)
            for t, pixel in enumerate(perm):
                before = perm[:t]
                if y is not None or not classes:  # p(m | x_<i) by Bayes' rule over the members' prefix likelihoods
                    lp = torch.stack([m.log_prob_per_pixel(x, order, y)[:, before].sum(-1) for m in ms])
                    want = torch.softmax(lp, 0)
                    # and the weights mix the members' conditionals into the mixture's
                    mixed = sum(w[:, None] * m.level_log_probs(x, order, y)[:, pixel].exp() for w, m in zip(want, ms, strict=True))
                    torch.testing.assert_close(mixed, mix.level_log_probs(x, y=y)[:, pixel].exp(), atol=1e-9, rtol=0)
                else:  # under the marginal: the joint posterior over (class, member), summed over the classes
                    prior = torch.log_softmax(mix.class_log_prior, 0)
                    lp = torch.stack([torch.stack([prior[c] + m.log_prob_per_pixel(x, order, c)[:, before].sum(-1)
                                                   for c in range(classes)]) for m in ms])  # (M, C, B)
                    want = torch.softmax(lp.reshape(-1, 2), 0).reshape(lp.shape).sum(1)
                torch.testing.assert_close(post[:, :, pixel].double(), want, atol=1e-6, rtol=0)


def test_the_figures_of_an_ensemble_carry_its_members_weights():
    from engine.figures import pixel_figures

    mix, ms = make(2, 0, True, seed=7)
    image = random_images(1, 2, seed=9)[0].numpy()
    figs = pixel_figures(mix.float(), image)
    assert figs.member_labels == ["1 · MADE", "2 · NADE", "3 · PIXELCNN"]
    first = int(mix.ordering.perm[0])
    assert [w for _, w in figs.member_weights(first)] == pytest.approx([1 / 3] * 3)  # nothing seen yet: the prior
    np.testing.assert_allclose(figs.members.sum(0), 1.0, atol=1e-6)
    assert pixel_figures(ms[0].float(), image).member_weights(first) == []


def test_a_voting_ensemble_classifies_by_the_mean_of_its_members_posteriors():
    bayes, ms = make(2, C, False, seed=8)
    vote = Mixture.of(ms, classifier="vote").double().eval()
    x = random_images(30, 2, seed=10)
    y = torch.randint(0, C, (30,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        posts = torch.stack([m.class_log_posterior(x, vote.ordering) for m in ms]).exp()  # (M, B, C)
        want = posts.mean(0)
        torch.testing.assert_close(vote.classifier_log_posterior(x).exp(), want, atol=1e-9, rtol=0)
        for upto in (0, 2, D):  # from a prefix too (the app's bar chart)
            pre = torch.stack([m.class_log_posterior(x, vote.ordering, upto) for m in ms]).exp().mean(0)
            torch.testing.assert_close(vote.classifier_log_posterior(x, upto=upto).exp(), pre, atol=1e-9, rtol=0)
        # the density is the mixture's either way; only the posterior differs
        torch.testing.assert_close(vote.log_prob(x, y=1), bayes.log_prob(x, y=1))
        torch.testing.assert_close(bayes.classifier_log_posterior(x), bayes.class_log_posterior(x))
    r, rb = classify(vote, x, y, chunk=7), classify(bayes, x, y, chunk=7)
    np.testing.assert_allclose(np.exp(r.log_posterior), want.numpy(), atol=1e-9)
    np.testing.assert_array_equal(r.predictions, want.argmax(1).numpy())
    assert r.nll_nats == pytest.approx(rb.nll_nats, abs=1e-9)  # the marginal NLL is the mixture's
    np.testing.assert_allclose(np.exp(rb.log_posterior), bayes.class_log_posterior(x).detach().exp().numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="classifier"):
        Mixture.of(ms, classifier="average")


def test_the_class_figures_of_a_voting_ensemble_show_the_vote_and_say_so():
    from engine.class_figures import class_pass

    _, ms = make(2, C, False, seed=9)
    vote = Mixture.of(ms, classifier="vote").double().eval()
    x = random_images(1, 2, seed=11)
    _, figs = class_pass(vote, x, vote.ordering, upto=3)
    with torch.no_grad():
        want = vote.classifier_log_posterior(x, upto=3)[0]
    np.testing.assert_allclose(figs.log_post, want.numpy(), atol=1e-9)
    assert figs.vote and "the mean of the members' posteriors" in figs.note
    assert not class_pass(Mixture.of(ms).double(), x, vote.ordering, upto=3)[1].vote


def test_mix_command_writes_a_voting_ensemble(tmp_path):
    ms = members(2, C, False, seed=10)
    paths = [_save_member(m, tmp_path / f"v{i}.safetensors") for i, m in enumerate(ms)]
    out = tmp_path / "vote.safetensors"
    assert main(["mix", *map(str, paths), "--out", str(out), "--classifier", "vote"]) == 0
    assert load_checkpoint(out).model.votes


def test_a_stroke_on_a_voting_ensemble_runs_each_member_once_and_never_reuses_another_images_pass():
    """The app's figures of a drawing (the mixed conditionals under every class, the vote, the members'
    weights) come from one pass of each member over the classes; the kept pass serves only the same
    image in the same ordering."""
    from engine.figures import pixel_figures

    ms = [m.float() for m in members(4, C, False, seed=12)]  # float32, as the app runs
    vote = Mixture.of(ms, classifier="vote").eval()
    calls = []
    for m in vote.models:
        inner = m._logits
        m._logits = lambda x, o, y=None, _inner=inner, _m=m: calls.append(_m) or _inner(x, o, y)  # type: ignore[method-assign]
    a, b = random_images(2, 4, seed=13).float()
    order = vote.ordering
    for y in (None, 2):
        calls.clear()
        figs = pixel_figures(vote, a.numpy(), order, y)
        assert sorted(map(id, calls)) == sorted(map(id, vote.models))  # one pass each
        calls.clear()
        with torch.no_grad():
            fresh = Mixture.of(ms, classifier="vote").eval()  # nothing kept
            upto = figs.classes.upto
            want_post = fresh.classifier_log_posterior(a[None], order, upto)[0]
            want_w = fresh.member_posterior(a[None], order, y)[:, 0]
        np.testing.assert_allclose(figs.classes.log_post, want_post.numpy(), atol=1e-5)
        np.testing.assert_allclose(figs.members, want_w.numpy(), atol=1e-6)
    # another image, or the same one in another ordering, is computed afresh
    with torch.no_grad():
        for x, o in ((b, order), (a, make_ordering("random", H, W, seed=77))):
            vote.member_posterior(a[None], order)  # the kept pass is a's in ``order``
            got = vote.member_posterior(x[None], o)
            fresh = Mixture.of(ms, classifier="vote").eval()
            torch.testing.assert_close(got, fresh.member_posterior(x[None], o), atol=1e-5, rtol=0)
            torch.testing.assert_close(vote.classifier_log_posterior(x[None], o, 3),
                                       fresh.classifier_log_posterior(x[None], o, 3), atol=1e-5, rtol=0)


def test_the_kept_pass_is_dropped_when_the_members_weights_change():
    ms = [m.float() for m in members(2, C, True, seed=14)]
    vote = Mixture.of(ms, classifier="vote").eval()
    x = random_images(1, 2, seed=15).float()
    with torch.no_grad():
        before = vote.member_posterior(x, vote.ordering)
        assert vote._kept_for(x, vote.ordering) is not None
        other = Mixture.of([m.float() for m in members(2, C, True, seed=16)], classifier="vote")
        vote.load_state_dict(other.state_dict())  # new weights, written in place
        assert vote._kept_for(x, vote.ordering) is None
        after = vote.member_posterior(x, vote.ordering)
        torch.testing.assert_close(after, other.eval().member_posterior(x, vote.ordering), atol=1e-6, rtol=0)
        assert not torch.allclose(before, after)
        vote.member_posterior(x, vote.ordering)
        vote.double()  # another dtype: other tensors
        assert vote._kept_for(x.double(), vote.ordering) is None
