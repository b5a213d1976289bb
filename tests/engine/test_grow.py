"""Growing a residual model deeper (``ARModel.grow_from``, ``pixelchain train --init-from`` with more
layers), and a PixelCNN or an LMConv wider: the grown network starts at exactly the smaller one's
conditionals, then trains its new layers and channels; other families, other sizes and shrinking
are refused with a clear reason."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import main
from engine.models import build_model
from engine.models.lmconv import LMConvConfig
from engine.models.nade import NADEConfig
from engine.models.pixelcnn import PixelCNNConfig
from engine.ordering import make_ordering

SMALL = {
    "pixelcnn": PixelCNNConfig(channels=6, layers=2, head=8),
    "lmconv": LMConvConfig(channels=6, layers=2, head=8, order_agnostic=True, train_orderings=("raster", "hilbert")),
}


def _trained_looking(family: str) -> torch.nn.Module:
    """A small model with every weight non-zero and random, as after training."""
    torch.manual_seed(1)
    m = build_model(family, SMALL[family], None)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("family", sorted(SMALL))
def test_a_grown_model_starts_at_the_smaller_ones_conditionals(family):
    src = _trained_looking(family)
    big = build_model(family, dataclasses.replace(SMALL[family], layers=5), None)
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    before = big.log_prob(x)
    big.grow_from(src)
    orderings = ["raster"] if family == "pixelcnn" else ["raster", "hilbert"]
    for name in orderings:
        o = make_ordering(name)
        torch.testing.assert_close(big.log_prob(x, o), src.log_prob(x, o), atol=1e-4, rtol=0)
    assert not torch.allclose(before, big.log_prob(x))  # the copy changed the fresh model
    # the added layers are live: one gradient step moves the conditionals
    loss = big.training_loss(x)
    loss.backward()
    grads = [p.grad for p in big.res[2].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("layers", [2, 4])
def test_a_wider_lmconv_starts_at_the_narrower_ones_conditionals(layers):
    """LMConv also grows in width (and depth at once): the new channels start closed, so the
    conditionals are the source's in every ordering, and one gradient step reaches every new weight."""
    src = _trained_looking("lmconv")
    big = build_model("lmconv", dataclasses.replace(SMALL["lmconv"], channels=10, layers=layers), None)
    big.grow_from(src)
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    for name in ["raster", "hilbert", "spiral-in"]:
        o = make_ordering(name)
        torch.testing.assert_close(big.log_prob(x, o), src.log_prob(x, o), atol=1e-4, rtol=0)
    c0, c = 6, 10

    def new_parts():  # the gradients of the new channels' weights, by the role they play
        return {
            "first filter (writes the stream)": big.first.weight.grad[c0:c],
            "first gate": big.first.weight.grad[c + c0 :],
            "conv rows (new gate units)": big.convs[0].weight.grad[c0:c],
            "conv columns (read the new stream)": big.convs[1].weight.grad[:, c0:c],
            "1x1 rows (write the stream)": big.res[0].weight.grad[c0:c],
            "1x1 columns (read the new units)": big.res[0].weight.grad[:, c0:c],
            "head columns": big.out1.weight.grad[:, c0:c],
        }

    big.training_loss(x).backward()
    # the weights that write the new channels learn at once; those reading channels that start at
    # zero, or feeding units whose readers start at zero, from the second step on
    later = {"first gate", "conv rows (new gate units)", "conv columns (read the new stream)", "head columns"}
    assert {role for role, g in new_parts().items() if g.abs().sum() == 0} == later
    with torch.no_grad():
        for p in big.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    big.training_loss(x).backward()
    for role, g in new_parts().items():
        assert g.abs().sum() > 0, role
    narrower = build_model("lmconv", dataclasses.replace(SMALL["lmconv"], channels=4), None)
    with pytest.raises(ValueError, match="not shrink"):
        narrower.grow_from(src)


@pytest.mark.parametrize("layers, classes, levels", [(2, 0, 2), (4, 0, 2), (3, 3, 4)])
def test_a_wider_pixelcnn_starts_at_the_narrower_ones_conditionals(layers, classes, levels):
    """The gated PixelCNN grows in width (and depth at once), with or without classes, binary or grey:
    the new units of both stacks start closed, so every conditional is the source's; one gradient step
    reaches the weights that write the new channels, a second every new weight."""
    extra = {"classes": classes, "levels": levels, "output": "bernoulli" if levels == 2 else "categorical"}
    torch.manual_seed(1)
    src = build_model("pixelcnn", dataclasses.replace(SMALL["pixelcnn"], **extra), None)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_(0, 0.3)
    big = build_model("pixelcnn", dataclasses.replace(SMALL["pixelcnn"], channels=10, layers=layers, **extra), None)
    big.grow_from(src)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, levels, (6, 784), generator=g).float()
    y = torch.randint(0, 3, (6,), generator=g) if classes else None
    torch.testing.assert_close(big.log_prob(x, y=y), src.log_prob(x, y=y), atol=1e-4, rtol=0)
    c0, c = 6, 10

    def new_parts():  # the gradients of the new channels' weights, by the role they play
        parts = {
            "vertical filter rows (write the new units)": big.vs[0].weight.grad[c0:c],
            "first vertical filter rows": big.v0.weight.grad[c0:c],
            "vertical gate rows": big.vs[1].weight.grad[c + c0 :],
            "vertical columns (read the new units)": big.vs[1].weight.grad[:, c0:c],
            "link columns (read the new gate halves)": big.links[0].weight.grad[:, c + c0 :],
            "first horizontal filter rows (write the stream)": big.h0.weight.grad[c0:c],
            "horizontal rows (new units)": big.hs[0].weight.grad[c0:c],
            "horizontal columns (read the new stream)": big.hs[1].weight.grad[:, c0:c],
            "1x1 rows (write the stream)": big.res[0].weight.grad[c0:c],
            "1x1 columns (read the new units)": big.res[0].weight.grad[:, c0:c],
            "head columns": big.out1.weight.grad[:, c0:c],
        }
        if classes:
            parts["class terms of the new units"] = big.class_emb.weight.grad.view(3, layers + 1, 2, 2 * c)[..., c0:c]
        return parts

    big.training_loss(x, y).backward()
    later = {"vertical gate rows", "vertical columns (read the new units)", "horizontal rows (new units)",
             "horizontal columns (read the new stream)", "head columns"}
    assert {role for role, grad in new_parts().items() if grad.abs().sum() == 0} == later
    with torch.no_grad():
        for p in big.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    big.training_loss(x, y).backward()
    for role, grad in new_parts().items():
        assert grad.abs().sum() > 0, role
    narrower = build_model("pixelcnn", dataclasses.replace(SMALL["pixelcnn"], channels=4, **extra), None)
    with pytest.raises(ValueError, match="not shrink"):
        narrower.grow_from(src)


@pytest.mark.parametrize("channels, layers", [(6, 2), (9, 3)])
def test_an_lmconv_gains_a_context_without_changing_its_conditionals(channels, layers):
    """A context (the summary of all earlier pixels) may be added to an LMConv that had none, with
    more channels and layers at once: its readout starts closed, so the conditionals are the
    source's; the readout learns at the first step, the summary's weights from the second. Then the
    context-bearing net grows wider in turn, its readout's new rows closed; a context cannot change size."""
    src = _trained_looking("lmconv")
    cfg = dataclasses.replace(SMALL["lmconv"], channels=channels, layers=layers, context=5)
    big = build_model("lmconv", cfg, None)
    big.grow_from(src)
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    for name in ["raster", "hilbert", "spiral-in"]:
        o = make_ordering(name)
        torch.testing.assert_close(big.log_prob(x, o), src.log_prob(x, o), atol=1e-4, rtol=0)
    big.training_loss(x).backward()
    assert big.ctx_out.weight.grad.abs().sum() > 0 and big.ctx_w.grad.abs().sum() == 0
    with torch.no_grad():  # a small step: the log-likelihoods stay where float32 compares them to 1e-4
        for p in big.parameters():
            p -= 1e-3 * p.grad
            p.grad = None
    big.training_loss(x).backward()
    assert big.ctx_w.grad.abs().sum() > 0 and big.ctx_v.grad.abs().sum() > 0
    # the context now contributes; a wider net still starts where this one is
    wider = build_model("lmconv", dataclasses.replace(cfg, channels=channels + 4, layers=layers + 1), None)
    wider.grow_from(big)
    assert big.ctx_out.weight.abs().sum() > 0  # the context now contributes
    torch.testing.assert_close(wider.log_prob(x, make_ordering("snake")), big.log_prob(x, make_ordering("snake")),
                               atol=1e-4, rtol=1e-6)
    with pytest.raises(ValueError, match="context of 5 units"):
        build_model("lmconv", dataclasses.replace(cfg, context=7), None).grow_from(big)


def test_a_grown_order_agnostic_model_may_train_over_other_orderings():
    src = _trained_looking("lmconv")
    cfg = dataclasses.replace(SMALL["lmconv"], layers=3, train_orderings=("raster", "raster", "snake"))
    big = build_model("lmconv", cfg, None)
    big.grow_from(src)
    x = (torch.rand(4, 784, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    torch.testing.assert_close(big.log_prob(x), src.log_prob(x), atol=1e-4, rtol=0)
    assert big.config.train_orderings == ("raster", "raster", "snake")
    assert big.trained_orderings() == [make_ordering("raster"), make_ordering("snake")]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"channels": 5}, "grow from it, not shrink"),
        ({"head": 9}, "not head"),
        ({"channels": 8, "head": 9}, "not head"),
        ({"layers": 1}, "grow from it, not shrink"),
    ],
)
def test_growth_refuses_other_sizes(change, match):
    src = _trained_looking("pixelcnn")
    other = build_model("pixelcnn", dataclasses.replace(SMALL["pixelcnn"], **change), None)
    with pytest.raises(ValueError, match=match):
        other.grow_from(src)


def test_growth_refuses_non_residual_families_and_other_families():
    nade = build_model("nade", NADEConfig(hidden=5), None)
    with pytest.raises(ValueError, match="not residual"):
        nade.grow_from(build_model("nade", NADEConfig(hidden=4), None))
    lm = build_model("lmconv", dataclasses.replace(SMALL["lmconv"], layers=3), None)
    with pytest.raises(ValueError, match="holds a pixelcnn model"):
        lm.grow_from(_trained_looking("pixelcnn"))


@pytest.mark.parametrize("family, cfg", [
    ("pixelcnn", '{"channels": 6, "layers": 4, "head": 8}'),
    ("pixelcnn", '{"channels": 9, "layers": 3, "head": 8}'),
    ("lmconv", '{"channels": 9, "layers": 2, "head": 8, "order_agnostic": true, "train_orderings": ["raster", "hilbert"]}'),
])
def test_train_init_from_a_shallower_checkpoint_grows_it(tmp_path, data_dir, family, cfg):
    """``pixelchain train --init-from`` with more --config layers (or, for LMConv, channels): with a
    learning rate too small to move the weights, the result computes the source's conditionals; the
    run records its source."""
    src_path = tmp_path / "small.safetensors"
    save_checkpoint(src_path, _trained_looking(family), meta={})
    out = tmp_path / "grown.safetensors"
    argv = ["train", "--model", family, "--config", cfg, "--init-from", str(src_path), "--lr", "1e-12", "--epochs", "1",
            "--max-train", "100", "--max-valid", "50", "--precision", "float32", "--quiet", "--threads", "1",
            "--out", str(out), "--data", str(data_dir)]
    assert main(argv) == 0
    grown, src = load_checkpoint(out), load_checkpoint(src_path)
    assert json.loads(json.dumps(grown.model.config.to_dict())) == {**src.model.config.to_dict(), **json.loads(cfg)}
    assert grown.meta["init_from"] == str(src_path)
    x = (torch.rand(4, 784, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    torch.testing.assert_close(grown.model.log_prob(x), src.model.log_prob(x), atol=1e-3, rtol=0)


def test_train_init_from_a_wider_checkpoint_says_what_differs(tmp_path, data_dir, capsys):
    src_path = tmp_path / "small.safetensors"
    save_checkpoint(src_path, _trained_looking("pixelcnn"), meta={})
    argv = ["train", "--model", "pixelcnn", "--config", '{"channels": 8, "layers": 4, "head": 9}', "--init-from", str(src_path),
            "--epochs", "1", "--max-train", "100", "--quiet", "--out", str(tmp_path / "g.safetensors"), "--data", str(data_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelchain: error: --init-from") and "not head" in err, err
