"""The "how digit-like" meter: background model, percentiles, cached reference, AUROC, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.tasks.score import BackgroundModel, Reference, Scorer, auroc, compute_reference, percentile_of

from .tiny import H, W, make_tiny


def test_background_model_is_a_normalised_independent_bernoulli():
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(50, H * W)) < np.linspace(0.05, 0.95, H * W)).astype(np.uint8)
    bg = BackgroundModel.fit(x, alpha=1.0)
    np.testing.assert_allclose(bg.probs, (x.sum(0) + 1) / (len(x) + 2))
    every = np.array(np.unravel_index(np.arange(2 ** (H * W)), (2,) * (H * W))).T
    assert np.exp(bg.log_prob(every)).sum() == pytest.approx(1.0, abs=1e-12)
    assert BackgroundModel.from_dict(bg.to_dict()).probs.tolist() == bg.probs.tolist()
    with pytest.raises(ValueError):
        BackgroundModel.from_dict({"probs": [0.0, 0.5]})


def test_percentiles_follow_the_reference():
    q = np.quantile(np.arange(101.0), np.linspace(0, 1, 1001))
    assert percentile_of(50.0, q) == pytest.approx(50.0)
    np.testing.assert_allclose(percentile_of(np.array([-5.0, 25.0, 500.0]), q), [0.0, 25.0, 100.0])


def test_auroc_matches_pairwise_counting():
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert auroc(pos, neg) == pytest.approx(pairs)
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0


def test_scorer_on_a_tiny_model():
    model = make_tiny("nade", {"hidden": 5})
    rng = np.random.default_rng(2)
    ref_x = (rng.uniform(size=(300, H * W)) < 0.3).astype(np.uint8)
    bg = BackgroundModel.fit(ref_x)
    ref = compute_reference(model, ref_x, bg, batch_size=64)
    assert ref.n_images == 300 and len(ref.log_prob_quantiles) == 1001
    scorer = Scorer(model, bg, ref)
    scores = scorer.score(ref_x)
    lp = model.log_prob(torch.as_tensor(ref_x, dtype=torch.float64)).detach().numpy()
    np.testing.assert_allclose([s.log_prob_nats for s in scores], lp, atol=1e-9)
    np.testing.assert_allclose([s.llr_nats for s in scores], lp - bg.log_prob(ref_x), atol=1e-9)
    # percentiles of the reference images themselves are spread uniformly over 0..100
    pc = np.array([s.percentile for s in scores])
    assert abs(np.median(pc) - 50) < 3 and pc.min() < 5 and pc.max() > 95
    assert Reference.from_dict(json.loads(json.dumps(ref.to_dict()))).llr_quantiles.tolist() == ref.llr_quantiles.tolist()
    with pytest.raises(ValueError):
        Scorer(model, BackgroundModel(np.full(3, 0.5)), ref)


def test_trained_model_ranks_digits_above_noise_and_cli(tmp_path, data_dir, capsys, monkeypatch):
    from engine.checkpoint import save_checkpoint
    from engine.data import load_split

    from .quick_models import quick_model

    model = quick_model("fvsbn")
    valid = load_split("valid")
    bg = BackgroundModel.fit(valid[:2000])  # the training split is slower to parse; any digits will do here
    monkeypatch.setattr("engine.tasks.score.load_background", lambda data_dir=None, cache=True: bg)
    scorer = Scorer.for_model(model)
    digits = scorer.score(load_split("test")[-50:])
    noise = scorer.score((np.random.default_rng(0).uniform(size=(50, 784)) < 0.3).astype(np.uint8))
    assert np.median([s.percentile for s in digits]) > 20
    assert max(s.percentile for s in noise) == 0.0
    assert auroc([s.llr_nats for s in digits], [s.llr_nats for s in noise]) > 0.99
    # the reference was cached: a second scorer reads it instead of recomputing
    import engine.tasks.score

    original = engine.tasks.score.compute_reference
    monkeypatch.setattr("engine.tasks.score.compute_reference", lambda *a, **k: pytest.fail("recomputed"))
    again = Scorer.for_model(model)
    assert again.reference.log_prob_quantiles.tolist() == scorer.reference.log_prob_quantiles.tolist()
    monkeypatch.setattr("engine.tasks.score.compute_reference", original)
    ck = tmp_path / "fvsbn.safetensors"
    save_checkpoint(ck, model)
    np.save(tmp_path / "digit.npy", load_split("test")[:1].reshape(1, 28, 28))
    assert main(["score", str(ck), str(tmp_path / "digit.npy"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"][0]["log_prob_nats"] == pytest.approx(scores_of(model, load_split("test")[:1]), rel=1e-5)
    assert main(["score", str(ck), str(tmp_path / "missing.png")]) == 2


def scores_of(model, x):
    return float(model.log_prob(torch.as_tensor(x, dtype=torch.float32)).detach()[0])


# ------------------------------------------------------------------------ verified caches
def _cached_scorer(monkeypatch, recomputed: list):
    """A tiny model's Scorer.for_model over a fake test split; ``recomputed`` counts reference computations."""
    import engine.data
    import engine.tasks.score as score

    torch.manual_seed(0)  # the same model, and so the same cache key, every call
    model = make_tiny("nade", {"hidden": 5})
    rng = np.random.default_rng(3)
    test_x = (rng.uniform(size=(200, H * W)) < 0.3).astype(np.uint8)
    bg = BackgroundModel.fit(test_x[:100])
    monkeypatch.setattr(score, "load_background", lambda data_dir=None, cache=True: bg)
    monkeypatch.setattr(engine.data, "load_split", lambda split, data_dir=None, **k: test_x)
    monkeypatch.setattr(score, "compute_reference", lambda *a, **k: recomputed.append(1) or compute_reference(*a, **k))
    return lambda: Scorer.for_model(model)


def _only_cache_file():
    from engine.data import cache_dir

    (path,) = (cache_dir() / "scores").glob("reference-*.json")
    return path


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(tmp_path / "own-cache"))


@pytest.mark.usefixtures("own_cache")
def test_an_altered_reference_cache_is_recomputed_not_trusted(monkeypatch):
    """The issue's altered digit-likeness cache turned a likelihood ratio of +115 into +1520."""
    recomputed: list = []
    fresh = _cached_scorer(monkeypatch, recomputed)()
    path = _only_cache_file()
    d = json.loads(path.read_text())
    quantiles = (d.get("content") or d)["llr_quantiles"]
    quantiles[:] = [v + 1405.0 for v in quantiles]  # still sorted, still finite: only a checksum tells
    path.write_text(json.dumps(d))
    again = _cached_scorer(monkeypatch, recomputed)()
    assert len(recomputed) == 2
    assert again.reference.llr_quantiles.tolist() == fresh.reference.llr_quantiles.tolist()
    _cached_scorer(monkeypatch, recomputed)()  # the recomputed cache is whole again: read, not recomputed
    assert len(recomputed) == 2


@pytest.mark.parametrize("content", [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe not text", b'{"version": 2', b"[]", b"",
                                     b'{"version": 2, "source": {}, "sha256": "0", "content": {}}', b"1" * (5 << 20)])
@pytest.mark.usefixtures("own_cache")
def test_a_broken_reference_cache_is_recomputed_without_a_traceback(monkeypatch, content):
    recomputed: list = []
    make = _cached_scorer(monkeypatch, recomputed)
    fresh = make()
    _only_cache_file().write_bytes(content)
    assert make().reference.log_prob_quantiles.tolist() == fresh.reference.log_prob_quantiles.tolist()
    assert len(recomputed) == 2


def test_a_cache_of_another_source_is_not_used(tmp_path):
    from engine.tasks.score import _read_json, _write_json

    path = tmp_path / "c.json"
    _write_json(path, {"x": [1.5, 2.5]}, {"model": "abc", "test": "123"})
    assert _read_json(path, {"model": "abc", "test": "123"}) == {"x": [1.5, 2.5]}
    assert _read_json(path, {"model": "abd", "test": "123"}) is None  # computed from another model
    assert _read_json(path, None) is None
    with pytest.raises(ValueError, match="finite"):
        Reference.from_dict({"log_prob_quantiles": [0.0, float("nan")], "llr_quantiles": [0.0, 1.0], "n_images": 2})


@pytest.mark.usefixtures("own_cache")
def test_an_altered_background_cache_is_recomputed(monkeypatch, tmp_path):
    import engine.data
    import engine.tasks.score as score
    from engine.data import cache_dir

    rng = np.random.default_rng(4)
    train_x = (rng.uniform(size=(100, H * W)) < 0.3).astype(np.uint8)
    monkeypatch.setattr(engine.data, "load_split", lambda split, data_dir=None, **k: train_x)
    first = score.load_background()
    (path,) = (cache_dir() / "scores").glob("background-*.json")
    d = json.loads(path.read_text())
    probs = (d.get("content") or d)["probs"]
    probs[:] = [0.999] * len(probs)
    path.write_text(json.dumps(d))
    assert score.load_background().probs.tolist() == first.probs.tolist()


def test_a_non_finite_score_is_an_error_not_a_figure(monkeypatch):
    """The issue's app read-out 'log p(x) = nan ... below every one of 10,000 test digits'."""
    from engine.tasks.score import ScoreError

    model = make_tiny("nade", {"hidden": 5})
    rng = np.random.default_rng(2)
    ref_x = (rng.uniform(size=(50, H * W)) < 0.3).astype(np.uint8)
    bg = BackgroundModel.fit(ref_x)
    scorer = Scorer(model, bg, compute_reference(model, ref_x, bg))
    real = type(model).log_prob
    monkeypatch.setattr(type(model), "log_prob", lambda self, x, o=None: real(self, x, o) * float("nan"))
    with pytest.raises(ScoreError, match=r"log p\(x\) is not finite for 3 of 3 images"):
        scorer.score(ref_x[:3])
    with pytest.raises(ScoreError, match="reference image"):
        compute_reference(model, ref_x, bg)
