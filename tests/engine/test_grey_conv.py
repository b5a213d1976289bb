"""The two convolutional families over K > 2 levels, beyond the checks every family gets
(tests/engine/test_levels.py, on a 2x2 grid where no crop of the fast samplers cuts anything): the
steppers on images large enough that they do, the networks reading levels scaled to [0, 1] (image
channel and LMConv's context alike), growing a grey model and refusing one of other levels or head,
and a few training steps on real grey digits."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models import build_model
from engine.models.layers import output_head
from engine.models.lmconv import LMConvConfig
from engine.models.pixelcnn import PixelCNNConfig
from engine.ordering import make_ordering

H, W, K = 7, 9, 16
HEADS = [{"output": "categorical"}, {"output": "logistic-mixture", "components": 3}]
HEAD_IDS = ["categorical", "mixture"]
MNIST = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist").resolve()


def randomised(m: torch.nn.Module, std: float = 0.5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.double().eval()


def images(n: int, levels: int = K, seed: int = 0, d: int = H * W) -> torch.Tensor:
    return torch.randint(0, levels, (n, d), generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
@pytest.mark.parametrize("first_kernel", [3, 5])
def test_pixelcnn_stepper_matches_teacher_forcing_where_its_crops_cut(head, first_kernel):
    m = randomised(build_model("pixelcnn", dict(channels=4, layers=2, kernel=3, first_kernel=first_kernel, head=5,
                                                height=H, width=W, levels=K, **head)))
    assert m.reach_rows < H - 1 and m.reach_cols < W - 1
    x = images(3)
    with torch.no_grad():
        full = m.logits(x)
        assert full.shape == (3, H * W, m.out_params)
        st = m.stepper(torch.zeros_like(x), m.ordering)
        for p in range(H * W):
            torch.testing.assert_close(st.logits(p), full[:, p])
            st.observe(p, x[:, p])


@pytest.mark.parametrize("head", HEADS, ids=HEAD_IDS)
@pytest.mark.parametrize("context", [0, 4])
def test_lmconv_cached_stepper_matches_teacher_forcing(head, context):
    m = randomised(build_model("lmconv", dict(channels=4, layers=3, kernel=3, first_kernel=3, head=5, context=context,
                                              order_agnostic=True, height=H, width=W, levels=K, **head)))
    x = images(3, seed=1)
    for oname in ("random", "hilbert"):
        o = make_ordering(oname, H, W, seed=3)
        with torch.no_grad():
            full = m.logits(x, o)
            st = m.stepper(torch.zeros_like(x), o)
            for p in o.perm.tolist():
                torch.testing.assert_close(st.logits(p), full[:, p])
                st.observe(p, x[:, p])


def _features(m: torch.nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """The residual stream the output head reads (what the network computed from the image)."""
    module = importlib.import_module(type(m).__module__)
    got: list[torch.Tensor] = []

    def recording(out1, out2, h, binary):
        got.append(h)
        return output_head(out1, out2, h, binary)

    with monkeypatch.context() as mp, torch.no_grad():
        mp.setattr(module, "output_head", recording)
        m.logits(x)
    assert len(got) == 1
    return got[0]


@pytest.mark.parametrize("family,cfg", [
    ("pixelcnn", {"channels": 4, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 5}),
    ("lmconv", {"channels": 4, "layers": 2, "kernel": 3, "first_kernel": 3, "head": 5, "context": 4}),
], ids=["pixelcnn", "lmconv-context"])
def test_the_network_reads_levels_scaled_to_the_unit_interval(family, cfg, monkeypatch):
    """A grey model given levels 0 and K-1 computes what the binary model with the same weights
    computes from 0 and 1: the image channel and the context both see x / (K - 1)."""
    binary = randomised(build_model(family, dict(cfg, height=H, width=W)))
    grey = build_model(family, dict(cfg, height=H, width=W, levels=256, output="categorical")).double().eval()
    mine = grey.state_dict()
    with torch.no_grad():
        for name, t in binary.state_dict().items():
            if not name.startswith(("out2.", "pixel_bias")):
                mine[name].copy_(t)
    x = images(4, levels=2, seed=2)
    torch.testing.assert_close(_features(grey, x * 255, monkeypatch), _features(binary, x, monkeypatch), rtol=1e-12, atol=1e-12)


GROW = [
    ("pixelcnn", PixelCNNConfig(height=H, width=W, channels=4, layers=1, head=5, levels=K, output="logistic-mixture",
                                components=3), {"layers": 3}),
    ("lmconv", LMConvConfig(height=H, width=W, channels=4, layers=1, head=5, levels=K, output="categorical",
                            order_agnostic=True, train_orderings=("raster", "random")), {"layers": 2, "channels": 6, "context": 3}),
]


@pytest.mark.parametrize("family,cfg,change", GROW, ids=[g[0] for g in GROW])
def test_a_grey_model_grows_deeper_and_wider_from_one_of_its_levels_and_head(family, cfg, change):
    src = randomised(build_model(family, cfg), std=0.3)
    big = build_model(family, dataclasses.replace(cfg, **change)).double()
    big.grow_from(src)
    x = images(5, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(big.log_prob(x), src.log_prob(x))


@pytest.mark.parametrize("family,cfg,change", GROW, ids=[g[0] for g in GROW])
@pytest.mark.parametrize("other,says", [
    ({"levels": 256}, "256 levels"),
    ({"output": "categorical", "levels": 16}, "16 levels with a categorical head"),
    ({"output": "logistic-mixture", "components": 7}, "of 7 components"),
    ({"levels": 2, "output": "bernoulli"}, "2 levels with a bernoulli head"),
])
def test_growing_from_other_levels_or_another_head_is_refused(family, cfg, change, other, says):
    src = build_model(family, dataclasses.replace(cfg, **other))
    if (src.config.levels, src.config.output, src.config.components) == (cfg.levels, cfg.output, cfg.components):
        pytest.skip("the same pixels as the model's own")
    big = build_model(family, dataclasses.replace(cfg, **change))
    with pytest.raises(ValueError, match="a model can only grow from one with the same levels and head") as info:
        big.grow_from(src)
    assert says in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"the shared MNIST folder {MNIST} is missing")
@pytest.mark.parametrize("family,cfg", [
    ("pixelcnn", {"channels": 6, "layers": 1, "head": 12, "output": "categorical"}),
    ("pixelcnn", {"channels": 6, "layers": 1, "head": 12, "output": "logistic-mixture", "components": 3}),
    ("lmconv", {"channels": 6, "layers": 1, "head": 12, "context": 8, "order_agnostic": True, "output": "logistic-mixture",
                "components": 3}),
], ids=["pixelcnn-categorical", "pixelcnn-mixture", "lmconv-agnostic-context-mixture"])
def test_training_on_real_grey_digits_lowers_the_loss(family, cfg):
    from engine.mnist import load_split, quantize

    torch.manual_seed(0)
    x = torch.from_numpy(quantize(load_split("valid", MNIST.parent, download=False)[:200], K).astype(np.float32))
    m = build_model(family, dict(cfg, levels=K))
    m.init_output_bias(torch.stack([(x == v).float().mean(0) for v in range(K)], 1))
    m.train_generator = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    with torch.no_grad():
        start = m.training_loss(x).item()
    for i in range(20):
        batch = x[(i * 20) % 200:][:20]
        loss = m.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = m.training_loss(x).item()
    assert np.isfinite(end) and end < 0.95 * start, (start, end)  # (the softmax starts at the marginals already)


@pytest.mark.parametrize("family,output", [("pixelcnn", "categorical"), ("lmconv", "logistic-mixture")])
def test_the_deep_training_bench_times_grey_models(family, output):
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "bench" / "deep_training_step.py"), "--family", family, "--sizes", "0", "--threads", "1",
           "--steps", "1", "--warmup", "0", "--batch", "2", "--levels", "16", "--output", output, "--components", "4", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    head = "categorical" if output == "categorical" else "logistic-mixture x4"
    assert rows and all(r["levels"] == 16 and r["head"] == head and r["error"] is None and r["images_per_s"] > 0 for r in rows)
    spec = importlib.util.spec_from_file_location("deep_training_step", root / "bench" / "deep_training_step.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    grey = build_model(family, dict(bench.SIZES[family][0][1], levels=16, output=output, components=4))
    assert {r["params"] for r in rows} == {grey.num_parameters()}  # the grey model was timed, not the binary one
