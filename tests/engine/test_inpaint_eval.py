"""Measured inpainting against brute-force enumeration of the conditional on tiny models."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.ordering import known_first
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
    order = known_first(model.ordering, ~hidden) if model.any_order else None
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
