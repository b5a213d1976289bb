"""GPU paths: a training step (float32 and bf16 autocast), sampling, and checkpoint round-trips
between the GPU and the CPU. Skipped, with the reason, on machines without CUDA."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering
from engine.train import EpochEnd, Finished, TrainConfig, evaluate, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU paths cannot be tested on this machine")

SMALL = {
    "nade": {"hidden": 32},
    "made": {"hidden": (64,), "order_agnostic": True, "num_masks": 0},
    "pixelcnn": {"channels": 8, "layers": 2, "head": 16},
    "lmconv": {"channels": 8, "layers": 2, "head": 16, "order_agnostic": True},
    "lstm": {"hidden": 32, "embed": 16, "order_agnostic": True},
    "transformer": {"d_model": 32, "layers": 2, "heads": 2},
}
FAMS = sorted(SMALL)


def _model(family: str, device: str = "cuda"):
    torch.manual_seed(0)
    oname = "raster" if family == "pixelcnn" else "snake"
    return build_model(family, SMALL[family], make_ordering(oname)).to(device)


def _data(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 784)) < 0.2).astype(np.uint8)


@pytest.mark.parametrize("family", FAMS)
def test_gpu_matches_cpu_conditionals(family):
    m = _model(family)
    x = torch.as_tensor(_data(4), dtype=torch.float32)
    gpu = m.log_prob(x.cuda()).cpu()
    cpu = m.cpu().log_prob(x)
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("amp", [False, True])
def test_training_on_gpu(tmp_path, family, amp):
    m = _model(family, "cpu")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(epochs=1, batch_size=20, device="cuda", amp=amp, max_train=60, max_valid=20)
    events = list(train(m, _data(60), _data(20, 1), cfg, out=out))
    end = [e for e in events if isinstance(e, EpochEnd)][0]
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed"
    assert np.isfinite(end.valid_nll) and m.device.type == "cuda"
    assert any(not torch.equal(v.cpu(), before[k]) for k, v in m.state_dict().items() if v.is_floating_point())
    # the reported NLL is float32 even when the steps used bf16
    again, _ = evaluate(m, _data(20, 1))
    assert again == pytest.approx(end.valid_nll, rel=1e-5)


@pytest.mark.parametrize("family", FAMS)
def test_sampling_on_gpu_fast_equals_reference(family):
    m = _model(family).double()
    a = m.sample(8, generator=torch.Generator().manual_seed(1), fast=True)
    assert a.device.type == "cuda" and set(a.unique().tolist()) <= {0.0, 1.0}
    # the reference is slow at 784 pixels: compare the first 60 generated pixels
    fast = [s.value.clone() for s in islice(m.sample_steps(8, generator=torch.Generator().manual_seed(1)), 60)]
    ref = [s.value.clone() for s in islice(m.sample_steps(8, generator=torch.Generator().manual_seed(1), fast=False), 60)]
    assert len(fast) == 60 and all(torch.equal(f, r) for f, r in zip(fast, ref, strict=True))
    known = np.zeros(784, bool)
    known[:300] = True
    values = torch.as_tensor(_data(1)[0], dtype=torch.float64)
    out = m.inpaint(known, values, n=3, generator=torch.Generator().manual_seed(2))
    kn = torch.as_tensor(known)
    assert torch.equal(out.cpu()[:, kn], values[kn].expand(3, -1))


@pytest.mark.parametrize("family", FAMS)
def test_checkpoint_round_trip_between_gpu_and_cpu(tmp_path, family):
    m = _model(family)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    x = torch.as_tensor(_data(3), dtype=torch.float32)
    path = tmp_path / "gpu.safetensors"
    save_checkpoint(path, m, {})
    on_cpu = load_checkpoint(path, device="cpu").model
    assert on_cpu.device.type == "cpu"
    for k, v in m.state_dict().items():
        assert torch.equal(on_cpu.state_dict()[k], v.cpu()), k
    path2 = tmp_path / "cpu.safetensors"
    save_checkpoint(path2, on_cpu, {})
    back = load_checkpoint(path2, device="cuda").model
    assert back.device.type == "cuda"
    assert torch.equal(back.log_prob(x.cuda()), m.log_prob(x.cuda()))
