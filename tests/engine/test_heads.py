"""Output heads: every head's K probabilities sum to one, the cheap log p(x) agrees with the full
table, the sampler draws each level with its probability, temperature acts as p ** (1 / T)."""

import math

import pytest
import torch

from engine.models.heads import BernoulliHead, CategoricalHead, LogisticMixtureHead, make_head, scale_levels

HEADS = [
    lambda: BernoulliHead(),
    lambda: CategoricalHead(4),
    lambda: CategoricalHead(256),
    lambda: LogisticMixtureHead(4, 3),
    lambda: LogisticMixtureHead(256, 5),
]


def _params(head, shape=(3, 7), scale=3.0):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*shape, head.params, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("make", HEADS)
def test_levels_sum_to_one_and_cheap_log_prob_matches_the_table(make):
    head = make()
    params = _params(head)
    lp = head.log_probs(params)
    assert lp.shape == (3, 7, head.levels)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 7, dtype=torch.float64), atol=1e-10)
    x = torch.randint(0, head.levels, (3, 7), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(head.log_prob_of(params, x), lp.gather(-1, x[..., None]).squeeze(-1), atol=1e-9)


def test_mixture_is_stable_in_the_tails_and_for_narrow_components():
    head = LogisticMixtureHead(256, 1)
    # a component far outside [-1, 1] and one much narrower than a level
    params = torch.tensor([[0.0, 40.0, 0.0], [0.0, -40.0, 0.0], [0.0, 0.0, -50.0]], dtype=torch.float32)
    lp = head.log_probs(params)
    assert torch.isfinite(lp).all() or (lp[torch.isinf(lp)] < 0).all()
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert lp[0].argmax() == 255 and lp[1].argmax() == 0
    params.requires_grad_(True)
    head.log_prob_of(params, torch.tensor([3, 250, 128])).sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all()


def test_a_mixture_component_puts_its_mass_on_its_mean():
    head = LogisticMixtureHead(8, 1)
    level = 5
    centre = 2 * level / 7 - 1
    p = head.log_probs(torch.tensor([0.0, centre, -4.0])).exp()
    assert p.argmax() == level and p[level] > 0.9


@pytest.mark.parametrize("make", HEADS[1:4])
def test_sampling_draws_each_level_with_its_probability(make):
    head = make()
    params = _params(head, shape=(1,), scale=1.0).float()
    n = 200_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(2))
    draws = head.sample(params.expand(n, head.params), u)
    freq = torch.bincount(draws, minlength=head.levels).double() / n
    p = head.log_probs(params.double())[0].exp()
    assert (freq - p).abs().max() < 5 * math.sqrt(0.25 / n)


def test_bernoulli_sampling_keeps_the_binary_contract():
    head = BernoulliHead()
    logits = torch.tensor([[-1.0], [0.5], [3.0]])
    u = torch.tensor([0.2, 0.7, 0.9])
    assert head.sample(logits, u, 0.8).tolist() == (u < torch.sigmoid(logits[:, 0] / 0.8)).long().tolist()


@pytest.mark.parametrize("make", HEADS)
def test_temperature_is_a_power_of_the_distribution(make):
    head = make()
    params = _params(head, shape=(2,))
    p = head.log_probs(params).exp()
    t = 0.7
    want = p ** (1 / t)
    want = want / want.sum(-1, keepdim=True)
    assert torch.allclose(head.tempered(params, t).double(), want, atol=1e-6)


def test_mean_entropy_and_input_scaling():
    head = CategoricalHead(4)
    params = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    assert head.mean(params).item() == pytest.approx(0.2 + 0.6 + 1.2)
    assert head.entropy(params).item() == pytest.approx(-sum(q * math.log(q) for q in (0.1, 0.2, 0.3, 0.4)))
    assert scale_levels(torch.tensor([0.0, 3.0]), 4).tolist() == [0.0, 1.0]
    x = torch.tensor([0.0, 1.0])
    assert scale_levels(x, 2) is x


def test_make_head_refuses_what_does_not_exist():
    assert make_head("", 2).kind == "bernoulli"
    assert make_head("categorical", 16).params == 16
    assert make_head("logistic-mixture", 256, 10).params == 30
    for kind, levels in (("categorical", 3), ("softmax", 4), ("bernoulli", 4)):
        with pytest.raises(ValueError):
            make_head(kind, levels)
