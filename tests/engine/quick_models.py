"""Full-size (28x28) models trained for one short epoch (on part of the validation split), shared by the compression, scoring and
inpainting tests (trained once per test session, in memory)."""

from __future__ import annotations

import functools

import torch

from engine.data import load_split
from engine.models import build_model
from engine.train import Finished, TrainConfig, train


@functools.lru_cache(maxsize=None)
def quick_model(family: str, max_train: int = 1000):
    cfg = {"made": {"hidden": (100,)}}.get(family, {})
    torch.manual_seed(0)
    model = build_model(family, cfg)
    tc = TrainConfig(epochs=1, batch_size=100, lr=3e-3, device="cpu")
    valid = load_split("valid")  # 5x quicker to parse than the training split; the test split stays unseen
    for ev in train(model, valid[:max_train], valid[max_train : max_train + 200], tc):
        if isinstance(ev, Finished):
            assert ev.reason == "completed", ev.message
    return model.eval()
