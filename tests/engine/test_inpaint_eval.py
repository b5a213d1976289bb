"""Measured inpainting against brute-force enumeration of the conditional on tiny models."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.models import build_model
from engine.ordering import known_first, make_ordering, puts_first, scan_orderings
from engine.tasks.inpaint_eval import conditional_log_prob, evaluate_inpainting, exact_available, region_mask

from .tiny import TINY_CONFIGS, H, W, all_tiny, make_tiny

ALL = np.array(list(itertools.product([0, 1], repeat=H * W)), dtype=np.float64)


def brute_force(model, hidden: np.ndarray, ordering=None) -> np.ndarray:
    """log p(x_H | x_K) for every image, by summing the joint over all completions of x_H."""
    with torch.no_grad():
        lp = model.log_prob(torch.as_tensor(ALL), ordering).numpy()
    keys = [tuple(r) for r in ALL[:, ~hidden].astype(int)]
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out = np.empty(len(ALL))
    for idx in groups.values():
        m = np.logaddexp.reduce(lp[idx])
        out[idx] = lp[idx] - m
    return out


def test_regions_partition_sensibly():
    for name in ("top", "bottom", "left", "right", "random50"):
        assert region_mask(name, 28, 28).sum() == 392
    np.testing.assert_array_equal(region_mask("top"), ~region_mask("bottom"))
    c = region_mask("centre").reshape(28, 28)
    assert c.sum() == 196 and c[7:21, 7:21].all()
    np.testing.assert_array_equal(region_mask("random50", seed=3), region_mask("random50", seed=3))
    with pytest.raises(ValueError):
        region_mask("middle")


@pytest.mark.parametrize("label,family,cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
@pytest.mark.parametrize("region", ["bottom", "random50"])
def test_exact_methods_match_brute_force(label, family, cfg, region):
    model = make_tiny(family, cfg)
    hidden = region_mask(region, H, W, seed=1)
    if not exact_available(model, hidden):
        with pytest.raises(ValueError, match="not exact"):
            conditional_log_prob(model, ALL[:2], hidden, method="exact")
        return
    got, method, _ = conditional_log_prob(model, ALL, hidden)
    assert method == "exact"
    order = model.known_first_ordering(~hidden) if model.any_order else None
    np.testing.assert_allclose(got.numpy(), brute_force(model, hidden, order), atol=1e-9)


@pytest.mark.parametrize("method", ["importance", "smc"])
@pytest.mark.parametrize("family,cfg", [("fvsbn", {}), ("nade", {"hidden": 5}), ("pixelcnn", TINY_CONFIGS["pixelcnn"][0][1])])
def test_importance_sampling_converges_to_the_conditional(family, cfg, method):
    """Fixed raster order, top hidden: known pixels come later, so the exact path is unavailable."""
    model = make_tiny(family, cfg, std=0.5)
    hidden = region_mask("top", H, W)
    assert not exact_available(model, hidden)
    truth = brute_force(model, hidden)
    pick = np.arange(0, 256, 23)
    got, used, ess = conditional_log_prob(model, ALL[pick], hidden, method=method, samples=4000, generator=torch.Generator().manual_seed(0))
    assert used == method  # every family's cached sampler can reorder its particles
    assert ess is not None and bool((ess > 100).all())
    np.testing.assert_allclose(got.numpy(), truth[pick], atol=0.05)
    # the "ignore later known pixels" number is a different quantity, and is labelled so
    approx, m2, _ = conditional_log_prob(model, ALL[pick], hidden, method="ignore-later")
    assert m2 == "ignore-later"
    assert np.abs(approx.numpy() - truth[pick]).max() > 0.05


def test_importance_sampling_is_exact_when_known_pixels_come_first():
    model = make_tiny("made", {"hidden": (7, 6)})
    hidden = region_mask("bottom", H, W)
    exact, _, _ = conditional_log_prob(model, ALL, hidden)
    est, _, ess = conditional_log_prob(model, ALL, hidden, method="importance", samples=3)
    np.testing.assert_allclose(est.numpy(), exact.numpy(), atol=1e-9)
    np.testing.assert_allclose(ess.numpy(), 3.0)


def test_evaluate_reports_method_and_exactness():
    model = make_tiny("fvsbn", {})
    x = ALL[::5]
    r = evaluate_inpainting(model, x, region_mask("bottom", H, W))
    assert r.exact and r.method == "exact" and r.n_images == len(x) and r.hidden_pixels == 4
    np.testing.assert_allclose(r.nll, -brute_force(model, region_mask("bottom", H, W))[::5].mean(), atol=1e-9)
    r = evaluate_inpainting(model, x, region_mask("top", H, W), samples=8, batch_size=7)
    assert not r.exact and r.method == "smc" and "resampled" in r.note and r.mean_ess is not None and r.samples == 8
    r = evaluate_inpainting(model, x, region_mask("top", H, W), method="importance", samples=8, batch_size=7)
    assert not r.exact and r.method == "importance" and "biased" in r.note and r.mean_ess is not None
    agn = make_tiny("made", {"hidden": (9,), "order_agnostic": True, "num_masks": 4, "direct": True})
    r = evaluate_inpainting(agn, x, region_mask("top", H, W))
    assert r.exact and "known pixels first" in r.note


def test_cli_inpaint_eval(tmp_path, data_dir, capsys):
    from engine.checkpoint import save_checkpoint

    from .quick_models import quick_model

    ck = tmp_path / "made.safetensors"
    save_checkpoint(ck, quick_model("made"))
    assert main(["inpaint-eval", str(ck), "--region", "bottom", "--max-images", "40", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["exact"] and res["method"] == "exact" and res["n_images"] == 40 and 0 < res["nll_nats"] < 392
    assert main(["inpaint-eval", str(ck), "--region", "top", "--max-images", "4", "--samples", "4"]) == 0
    out = capsys.readouterr().out
    assert "importance sampling" in out and "not exact" in out


def test_cli_inpaint_eval_random_subset(tmp_path, data_dir, capsys):
    """The test split is sorted by class: --random-subset draws the images across it (seeded), and
    its result is the same as evaluating exactly those images."""
    from engine.checkpoint import save_checkpoint
    from engine.data import load_split
    from engine.tasks.inpaint_eval import evaluate_inpainting, region_mask

    from .quick_models import quick_model

    ck = tmp_path / "fvsbn.safetensors"
    model = quick_model("fvsbn")
    save_checkpoint(ck, model)
    argv = ["inpaint-eval", str(ck), "--region", "bottom", "--max-images", "30", "--json", "--data", str(data_dir)]
    assert main([*argv, "--random-subset", "--seed", "3"]) == 0
    rnd = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert rnd["subset"] == "random" and first["subset"] == "first" and rnd["n_images"] == 30
    x = load_split("test", data_dir)
    idx = np.sort(np.random.default_rng(3).choice(len(x), size=30, replace=False))
    assert idx.max() > 1000  # spread over the split, not its first (all-zero) digits
    hidden = region_mask("bottom", 28, 28)
    direct = evaluate_inpainting(model, x[idx], hidden, method="exact")
    assert rnd["nll_nats"] == pytest.approx(direct.nll, rel=1e-5)
    assert rnd["nll_nats"] != pytest.approx(first["nll_nats"], rel=1e-3)


@pytest.mark.parametrize("label,family,cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
def test_stepper_select_reorders_the_particles(label, family, cfg):
    """After ``select(index)``, a stepper gives the conditionals of a fresh stepper that was fed the
    reindexed histories (every family's stepper can: sequential Monte Carlo works for all)."""
    model = make_tiny(family, cfg, ordering_name="snake" if model_any(family, cfg) else "raster")
    gen = torch.Generator().manual_seed(5)
    x = (torch.rand(6, H * W, generator=gen) < 0.5).to(next(model.parameters()).dtype)
    perm = model.ordering.perm.tolist()
    cut = 3
    st = model.stepper(x.clone(), model.ordering)
    for p in perm[:cut]:
        st.logits(p) if p != perm[1] else None  # pixel 1 observed without being asked: queued paths too
        st.observe(p, x[:, p])
    index = torch.tensor([5, 5, 0, 2, 1, 1])
    st.select(index)
    y = x[index]
    ref = model.stepper(y.clone(), model.ordering)
    for p in perm[:cut]:
        ref.observe(p, y[:, p])
    for p in perm[cut:]:
        torch.testing.assert_close(st.logits(p), ref.logits(p), atol=1e-5, rtol=1e-5)
        st.observe(p, y[:, p])
        ref.observe(p, y[:, p])


def model_any(family, cfg):
    return bool(cfg.get("order_agnostic")) or family == "lmconv"


def test_smc_is_importance_sampling_when_no_hidden_pixel_follows_a_known_one():
    """Resampling only pays while hidden pixels remain: with every hidden pixel first (top half in
    raster order) SMC draws and weighs exactly as importance sampling does."""
    model = make_tiny("nade", {"hidden": 5}, std=1.2)
    hidden = region_mask("top", H, W)
    a, _, ea = conditional_log_prob(model, ALL, hidden, method="importance", samples=4, generator=torch.Generator().manual_seed(1))
    b, used, eb = conditional_log_prob(model, ALL, hidden, method="smc", samples=4, generator=torch.Generator().manual_seed(1))
    assert used == "smc"
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ea, eb)
    # interleaved hidden and known pixels: resampling happens and changes the estimate
    model = make_tiny("nade", {"hidden": 5}, std=3.0)
    hidden = np.zeros(H * W, bool)
    hidden[[0, 7]] = True
    a, _, _ = conditional_log_prob(model, ALL, hidden, method="importance", samples=4, generator=torch.Generator().manual_seed(1))
    b, _, _ = conditional_log_prob(model, ALL, hidden, method="smc", samples=4, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b)


def test_puts_first_is_every_known_pixel_before_every_other():
    rng = np.random.default_rng(0)
    for name in ("raster", "snake", "hilbert", "spiral-in"):
        o = make_ordering(name, 4, 6)
        for _ in range(50):
            known = rng.random(24) < rng.random()
            pos = o.inverse
            want = not known.any() or known.all() or pos[known].max() < pos[~known].min()
            assert puts_first(o, known) == want
        top = np.arange(24) < 12
        assert puts_first(o, top) == (name in ("raster", "snake"))


CURVES = ["spiral-in", "raster", "snake", "column", "hilbert"]


@pytest.mark.parametrize("family,cfg", [
    ("lmconv", {"channels": 2, "layers": 1, "head": 3, "order_agnostic": True, "train_orderings": CURVES}),
    ("lstm", {"hidden": 4, "embed": 3, "order_agnostic": True, "train_orderings": CURVES + ["random"]}),
    ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "order_agnostic": True, "train_orderings": CURVES}),
])
def test_order_agnostic_inpainting_uses_a_trained_ordering_with_the_known_pixels_first(family, cfg):
    torch.manual_seed(0)
    h, w = 4, 6
    m = build_model(family, dict(cfg, height=h, width=w), make_ordering("spiral-out", h, w)).double()
    assert m.trained_orderings() == [make_ordering(n, h, w) for n in CURVES]
    right, bottom = region_mask("right", h, w), region_mask("bottom", h, w)
    # the right half given the left: the column scan, not spiral-out with the left half moved first
    assert m.known_first_ordering(~right) == make_ordering("column", h, w)
    assert m.sampling_ordering(~right) == make_ordering("column", h, w)
    assert m.known_first_ordering(~bottom) == make_ordering("raster", h, w)  # the first trained one that fits
    # the ordering asked for, when it already has the known pixels first
    snake = make_ordering("snake", h, w)
    assert m.known_first_ordering(~bottom, snake) == snake
    # no trained ordering has these pixels first: the asked one, known pixels moved to the front
    odd = np.zeros(h * w, bool)
    odd[[3, 10, 17]] = True
    assert m.known_first_ordering(odd) == known_first(m.ordering, odd)
    # the measured conditional is the model's likelihood of the hidden pixels in that ordering
    x = torch.as_tensor((np.random.default_rng(1).random((5, h * w)) < 0.4).astype(np.float64))
    got, method, _ = conditional_log_prob(m, x, right)
    assert method == "exact"
    with torch.no_grad():
        want = m.log_prob_per_pixel(x, make_ordering("column", h, w))[:, torch.as_tensor(right)].sum(1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-9)
    res = evaluate_inpainting(m, x.numpy(), right)
    assert res.exact and "known pixels first, in the column ordering, one it trained on" in res.note
    assert abs(res.nll + float(want.mean())) < 1e-6


def test_random_order_models_and_scan_ensembles():
    torch.manual_seed(0)
    lstm = build_model("lstm", {"hidden": 4, "embed": 3, "order_agnostic": True, "height": H, "width": W})
    assert lstm.trained_orderings() == []  # random orderings only: the known pixels are moved first
    left = np.zeros(H * W, bool)
    left.reshape(H, W)[:, : W // 2] = True
    assert lstm.known_first_ordering(left) == known_first(lstm.ordering, left)
    # a MADE over the 16 scans trained the column scan among them: the left half comes first in it
    made = build_model("made", {"hidden": (8,), "order_agnostic": True, "order_set": "scans", "num_masks": 16,
                                "height": H, "width": W})
    assert sorted(o.spec for o in made.trained_orderings()) == sorted(o.spec for o in scan_orderings(H, W))
    got = made.known_first_ordering(left)
    assert got in made.trained_orderings() and puts_first(got, left) and got == make_ordering("column", H, W)


def test_errors_are_pixelchain_errors():
    """The command line prints these as one line (main() catches PixelchainError once)."""
    from engine.errors import PixelchainError
    from engine.tasks.inpaint_eval import region_mask

    with pytest.raises(PixelchainError, match="unknown region"):
        region_mask("middle", 28, 28)
