"""log p of one image under an ensemble of orderings (the app's ensemble read-out)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from engine.figures import EnsembleFigures, ensemble_figures_steps, ensemble_kind, ensemble_size
from engine.models import UnsupportedOrdering
from engine.ordering import make_ordering
from engine.steps import drain

from .tiny import TINY_CONFIGS, make_tiny


def _cfg(label: str) -> tuple[str, dict]:
    for fam, items in TINY_CONFIGS.items():
        for lab, cfg in items:
            if lab == label:
                return fam, cfg
    raise KeyError(label)


@pytest.mark.parametrize("label", ["made-scans", "made-agnostic", "transformer", "lstm-agnostic"])
@torch.no_grad()
def test_ensemble_figures_are_the_log_mean_exp_of_the_members(label):
    fam, cfg = _cfg(label)
    m = make_tiny(fam, cfg)
    image = np.array([1, 0, 0, 1, 1, 1, 0, 0], np.uint8)
    n = 5
    fracs, ens = drain(ensemble_figures_steps(m, image, n))
    assert fracs == [pytest.approx((k + 1) / n) for k in range(n)]
    assert isinstance(ens, EnsembleFigures) and len(ens.members) == n
    x = torch.as_tensor(image, dtype=torch.float64)[None]
    assert ens.log_p == pytest.approx(float(m.ensemble_log_prob(x, n)[0]), abs=1e-9)
    logps = [lp for _, lp in ens.members]
    assert logps[0] == pytest.approx(float(m.log_prob(x)[0]), abs=1e-9)  # member 0: the model's own ordering
    assert np.mean(logps) - 1e-9 <= ens.log_p <= max(logps) + 1e-9  # Jensen; a mean is at most its largest term
    assert ens.best[1] == max(logps) and ens.worst[1] == min(logps)
    # each member's log p is the model's in that member's ordering
    for k, (lab, lp) in enumerate(ens.members):
        order, _ = m.member(k)
        assert lab.startswith(order.label)
        if fam != "made":  # MADE members also differ in connectivity
            assert lp == pytest.approx(float(m.log_prob(x, order)[0]), abs=1e-9)


def test_scans_members_are_the_line_scans_and_masks():
    fam, cfg = _cfg("made-scans")
    m = make_tiny(fam, cfg)
    _, ens = drain(ensemble_figures_steps(m, np.zeros(8, np.uint8), 6))
    labels = [lab for lab, _ in ens.members]
    assert labels[0].startswith(m.ordering.label) and all("· mask" in lab for lab in labels)
    assert len(set(labels)) == 6


def test_ensemble_of_an_ensemble_sums_to_one():
    """The mixture is a distribution: exp(ensemble log p) over all 2^8 images sums to 1."""
    fam, cfg = _cfg("made-scans")
    m = make_tiny(fam, cfg)
    total = 0.0
    for bits in itertools.product([0, 1], repeat=8):
        _, ens = drain(ensemble_figures_steps(m, np.array(bits, np.uint8), 4))
        total += math.exp(ens.log_p)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_ensemble_size_follows_the_record_then_the_masks():
    fixed = make_tiny("made", {"hidden": (7, 6)})
    assert ensemble_size(fixed, {"metrics": {"test_nll_ensemble32": 90.0}}) == 0  # no ensemble of a fixed order
    scans = make_tiny(*_cfg("made-scans"))
    assert ensemble_size(scans, {}) == 6  # its cycled masks
    assert ensemble_size(scans, {"metrics": {"test_nll_ensemble4": 1.0, "test_nll_ensemble16": 1.0, "test_nll": 2.0}}) == 16
    assert ensemble_size(scans, {"metrics": {"test_nll_ensemble99999": 1.0}}) == 6  # a hostile record is ignored
    assert ensemble_size(scans, {"metrics": "not a dict"}) == 6
    assert ensemble_size(make_tiny(*_cfg("transformer")), None) == 8


def test_a_connectivity_agnostic_made_has_an_ensemble_of_its_masks_in_its_one_ordering():
    m = make_tiny("made", {"hidden": (7,), "num_masks": 5, "direct": True})
    assert not m.any_order and ensemble_kind(m) == "masks" and ensemble_size(m, {}) == 5
    assert ensemble_size(m, {"metrics": {"test_nll_ensemble3": 90.0}}) == 3
    assert ensemble_kind(make_tiny("made", {"hidden": (7,)})) == ""
    assert ensemble_kind(make_tiny(*_cfg("made-scans"))) == "orderings"
    _, ens = drain(ensemble_figures_steps(m, np.ones(8, np.uint8), 5))
    labels = [lab for lab, _ in ens.members]
    assert all(lab.startswith(m.ordering.label) for lab in labels) and len(set(labels)) == 5
    lps = [lp for _, lp in ens.members]
    assert len(set(np.round(lps, 9))) > 1  # the masks differ
    assert ens.log_p == pytest.approx(float(torch.logsumexp(torch.tensor(lps, dtype=torch.float64), 0)) - math.log(5))
    total = 0.0  # the mixture of masks is a distribution over the 2^8 images
    for bits in itertools.product([0, 1], repeat=8):
        total += math.exp(drain(ensemble_figures_steps(m, np.array(bits, np.uint8), 5))[1].log_p)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_fixed_order_models_have_no_other_members():
    m = make_tiny("fvsbn", {})
    assert m.member(0) == (m.ordering, 0)
    with pytest.raises(UnsupportedOrdering):
        m.member(1)
    t = make_tiny(*_cfg("transformer"))
    assert t.member(3)[0] == make_ordering("random", 2, 4, seed=3)
    with pytest.raises(ValueError):
        drain(ensemble_figures_steps(t, np.zeros(8, np.uint8), 0))


@torch.no_grad()
def test_a_member_ordering_uses_the_connectivity_it_was_trained_with():
    """An order-agnostic MADE learned each of its orderings with one connectivity pattern: asked for
    that ordering (as the app and ``eval --ordering`` do), it uses that pattern, also after
    ``set_ordering``; pattern 0 in another member's ordering was never trained."""
    m = make_tiny(*_cfg("made-scans"))
    x = torch.as_tensor(np.random.default_rng(0).integers(0, 2, (5, 8)), dtype=torch.float64)
    members = [m.member_log_prob(x, k) for k in range(6)]
    for k in range(6):
        order, conn = m.member(k)
        assert conn == k and m.connectivity_for(order) == k
        torch.testing.assert_close(m.log_prob(x, order), members[k])
    other = m.member(2)[0]
    pattern0 = m._forward(x, m._masks(other, 0))
    assert not torch.allclose(m.logits(x, other), pattern0)
    m.set_ordering(other)
    torch.testing.assert_close(m.log_prob(x), members[2])
    assert m.member(0) == (other, 2)
    torch.testing.assert_close(m.member_log_prob(x, 1), members[1])  # the pairs stay as trained
    # an ordering no member had: pattern 0
    assert m.connectivity_for(make_ordering("spiral-in", 2, 4)) == 0


@torch.no_grad()
def test_member_biases_belong_to_their_member():
    m = make_tiny(*_cfg("made-member-bias"))
    x = torch.as_tensor(np.random.default_rng(1).integers(0, 2, (4, 8)), dtype=torch.float64)
    before = [m.member_log_prob(x, k) for k in range(4)]
    for k in range(4):
        torch.testing.assert_close(m.log_prob(x, m.member(k)[0]), before[k])
    for mb in m.member_biases:
        mb[2].zero_()
    after = [m.member_log_prob(x, k) for k in range(4)]
    assert not torch.allclose(after[2], before[2])
    for k in (0, 1, 3):
        torch.testing.assert_close(after[k], before[k])
    with pytest.raises(ValueError, match="member_bias"):
        make_tiny("made", {"hidden": (4,), "order_agnostic": True, "num_masks": 0, "member_bias": True})
