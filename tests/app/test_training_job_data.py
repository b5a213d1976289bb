"""The Train tab's job trains on the data of the model's levels and, for a class-conditional
model, on the labels: a grey conditional recipe trains on the grey digits with their names."""

from __future__ import annotations

from app.jobs import training_job
from app.worker import Job
from engine.checkpoint import load_checkpoint
from engine.ordering import make_ordering
from engine.train import Finished, TrainConfig


def test_a_grey_conditional_recipe_trains_on_the_grey_digits_and_their_labels(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("PIXELCHAIN_DATA", str(shared_data))
    cfg = {"channels": 2, "layers": 1, "head": 4, "levels": 4, "output": "categorical", "classes": 10}
    tc = TrainConfig(epochs=1, batch_size=50, max_train=100, max_valid=50, device="cpu")
    out = tmp_path / "g.safetensors"
    job = Job(1, training_job, (), {})
    gen = training_job(job, "pixelcnn", cfg, make_ordering("raster", 28, 28).to_dict(), tc, out, measure_test=False)
    events = list(gen)
    assert any(isinstance(e, Finished) and e.reason == "completed" for e in events)
    ck = load_checkpoint(out)
    assert ck.meta["dataset"] == "mnist" and ck.model.levels == 4 and ck.model.classes == 10
    # the prior is the first 100 training labels' frequencies, not uniform
    assert float(ck.model.class_log_prior.exp().std()) > 0.001
    assert "--classes 10" in ck.meta["command"] and "--dataset mnist" in ck.meta["command"]
