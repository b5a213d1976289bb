"""The sequence families (LSTM, Transformer) over K > 2 levels, beyond the checks every family gets
(tests/engine/test_levels.py): a binary model keeps its parameters, the level features of a token
tell every level apart, and a tiny model learns from real grey digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models import build_model
from engine.models.sequence import SequenceEmbedding

SHARED_MNIST = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist").resolve()

TINY = [
    ("lstm", {"hidden": 12, "layers": 1, "embed": 8}),
    ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "mlp_ratio": 2, "order_agnostic": False}),
]
IDS = [f for f, _ in TINY]


@pytest.mark.parametrize("family,cfg", TINY, ids=IDS)
def test_a_binary_model_has_the_parameters_it_always_had(family, cfg):
    """Names and shapes unchanged at K = 2, so the bundled checkpoints load as they are."""
    shapes = {k: tuple(v.shape) for k, v in build_model(family, dict(cfg, height=2, width=3)).state_dict().items()}
    assert "embed.level" not in shapes
    assert shapes["embed.value"] == (2, shapes["embed.start"][0]) and shapes["pixel_bias"] == (6,)
    out = "out" if family == "lstm" else "head"
    assert shapes[f"{out}.weight"][0] == 1


@pytest.mark.parametrize("family,cfg", TINY, ids=IDS)
@pytest.mark.parametrize("output,params", [("categorical", 16), ("logistic-mixture", 9)])
def test_a_grey_model_outputs_the_heads_numbers_with_a_bias_for_each(family, cfg, output, params):
    m = build_model(family, dict(cfg, height=2, width=3, levels=16, output=output, components=3))
    assert m.out_params == params and m.pixel_bias.shape == (6 * params,)
    x = torch.randint(0, 16, (4, 6)).float()
    assert m.logits(x).shape == (4, 6, params) and m.pixel_logit(x, 2).shape == (4, params)


@pytest.mark.parametrize("levels", [4, 8, 16, 256])
def test_the_level_features_make_the_token_of_each_level_its_own(levels):
    """Up to 10 levels the K level embeddings are free (the features and the line span K
    dimensions), beyond that a smooth curve; every level gets a different token either way, and the
    token is differentiable in the level."""
    torch.manual_seed(0)
    emb = SequenceEmbedding(2, 2, 16, std=1.0, levels=levels).double()
    v = torch.arange(levels, dtype=torch.float64, requires_grad=True)
    tokens = emb.prev(v, torch.zeros(levels, dtype=torch.long))  # (K, dim)
    assert torch.cdist(tokens, tokens).add(torch.eye(levels, dtype=torch.float64)).min() > 1e-6
    basis = torch.cat([v[:, None] / (levels - 1), torch.ones(levels, 1, dtype=torch.float64),
                       torch.sin(v[:, None] / (levels - 1) * emb.freqs.double())], 1)
    assert torch.linalg.matrix_rank(basis.detach()) == min(levels, 10)
    (g,) = torch.autograd.grad(tokens.sum(), v)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"the shared MNIST folder {SHARED_MNIST} is missing")
@pytest.mark.parametrize("family,cfg", TINY, ids=IDS)
@pytest.mark.parametrize("output", ["categorical", "logistic-mixture"])
def test_a_tiny_grey_model_learns_from_real_digits(family, cfg, output):
    """20 steps on 300 digits at 16 levels lower the NLL of a fixed batch of them in the raster
    ordering (the Transformer here is trained in that ordering: random orderings teach it less of
    it in so few steps)."""
    from engine.mnist import load_split, quantize

    k = 16
    x = torch.as_tensor(quantize(load_split("train", SHARED_MNIST)[:300], k)).float()
    torch.manual_seed(0)
    m = build_model(family, dict(cfg, levels=k, output=output, components=3))
    m.init_output_bias(torch.stack([(x == v).float().mean(0) for v in range(k)], 1))
    probe = x[:32]

    def nll() -> float:
        m.eval()
        with torch.no_grad():
            value = -m.log_prob(probe).mean().item()
        m.train()
        return value

    before = nll()
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    m.train_generator = g
    for _ in range(20):
        loss = m.training_loss(x[torch.randint(len(x), (16,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    after = nll()
    assert after < before - 0.5  # nats per image
