"""Training generator: progress events, stopping, best checkpoint, exact resume, and faults
(NaN/inf loss, CUDA out-of-memory, full disk) -- on tiny 2x4 models and synthetic data."""

from __future__ import annotations

import errno
import math
import os

import numpy as np
import pytest
import torch

import engine.checkpoint as ckmod
import engine.train as trainmod
from engine.checkpoint import CheckpointError, load_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering
from engine.train import BatchEnd, EpochEnd, Finished, TrainConfig, TrainingError, resume_path, train

from .tiny import H, W

RNG = np.random.default_rng(0)
_P = RNG.random(H * W) * 0.8 + 0.1
TRAIN_X = (RNG.random((300, H * W)) < _P).astype(np.uint8)
TRAIN_X[:, 1] = TRAIN_X[:, 0]  # some dependence to learn
VALID_X = (RNG.random((60, H * W)) < _P).astype(np.uint8)
VALID_X[:, 1] = VALID_X[:, 0]

FAMILIES = {
    "made-agnostic": ("made", {"hidden": (9,), "order_agnostic": True, "num_masks": 4, "direct": True}),
    "nade": ("nade", {"hidden": 5}),
    "fvsbn": ("fvsbn", {}),
}


def model(label: str = "nade", seed: int = 0):
    fam, cfg = FAMILIES[label]
    torch.manual_seed(seed)
    return build_model(fam, dict(cfg, height=H, width=W), make_ordering("raster", H, W))


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=50, lr=0.02, seed=4, device="cpu", eval_batch_size=25)
    base.update(kw)
    return TrainConfig(**base)


def test_events_and_files(tmp_path):
    out = tmp_path / "m.safetensors"
    events = list(train(model(), TRAIN_X, VALID_X, cfg(), out=out, meta={"note": "hi"}))
    batches = [e for e in events if isinstance(e, BatchEnd)]
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert len(batches) == 3 * 6 and [e.epoch for e in epochs] == [1, 2, 3]
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed"
    assert all(math.isfinite(b.loss) and b.eta >= 0 for b in batches)
    assert batches[-1].eta == 0 and [b.batch for b in batches[:6]] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1].valid_nll < epochs[0].valid_nll + 1.0
    fin = events[-1]
    assert fin.best_path == out and len(fin.history) == 3
    assert fin.best_valid_nll == min(h["valid_nll"] for h in fin.history)
    ck = load_checkpoint(out)
    assert ck.meta["note"] == "hi" and ck.meta["train_config"]["batch_size"] == 50
    assert load_checkpoint(resume_path(out)).meta["epoch"] == 3


def test_closing_the_generator_stops_at_once(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    m = model()
    calls = []
    real = m.training_loss
    monkeypatch.setattr(m, "training_loss", lambda x, y=None: calls.append(1) or real(x, y))
    gen = train(m, TRAIN_X, VALID_X, cfg(), out=out)
    for ev in gen:
        if isinstance(ev, BatchEnd) and ev.batch == 3:
            break
    gen.close()
    n = len(calls)
    assert n == 3
    with pytest.raises(StopIteration):
        next(gen)
    assert len(calls) == n and not out.exists() and not list(tmp_path.iterdir())


def fixed_validation_scores(monkeypatch, scores):
    """Make each epoch's validation return the next of ``scores``."""

    def evaluate_steps(m, x, batch_size=1000, ensemble=1, target_seconds=None, y=None):
        yield len(x)
        return next(scores), 0.1

    monkeypatch.setattr(trainmod, "evaluate_steps", evaluate_steps)


def test_best_on_validation_is_kept(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    scores = iter([5.0, 3.0, 4.0])
    fixed_validation_scores(monkeypatch, scores)
    snapshots = {}
    m = model()
    for ev in train(m, TRAIN_X, VALID_X, cfg(), out=out):
        if isinstance(ev, EpochEnd):
            snapshots[ev.epoch] = {k: v.clone() for k, v in m.state_dict().items()}
            assert ev.improved == (ev.epoch in (1, 2)) and ev.best_valid_nll == min(5.0, 3.0 if ev.epoch > 1 else 5.0)
    best = load_checkpoint(out)
    assert best.meta["epoch"] == 2 and best.meta["metrics"]["valid_nll"] == 3.0
    for k, v in best.model.state_dict().items():
        assert torch.equal(v, snapshots[2][k])
        assert torch.equal(load_checkpoint(resume_path(out)).model.state_dict()[k], snapshots[3][k])


@pytest.mark.parametrize("label,extra", [
    ("made-agnostic", {}), ("nade", {"shift": 1}), ("fvsbn", {"ema": 0.9, "l1": 1e-3}),
    ("nade", {"warmup": 8}),  # resumed in the middle of the ramp (steps 6-7 of 8): it goes on from there
])
def test_resume_after_an_interruption_repeats_an_uninterrupted_run(tmp_path, label, extra):
    c = cfg(epochs=3, lr_min_factor=0.1, **extra)
    full_out, cut_out = tmp_path / "full.safetensors", tmp_path / "cut.safetensors"
    full = model(label)
    ref = list(train(full, TRAIN_X, VALID_X, c, out=full_out))[-1]
    # the same run, stopped in the middle of epoch 2 (as by a kill: the files hold epoch 1)
    gen = train(model(label), TRAIN_X, VALID_X, c, out=cut_out)
    for ev in gen:
        if isinstance(ev, BatchEnd) and ev.epoch == 2 and ev.batch == 2:
            break
    gen.close()
    assert load_checkpoint(resume_path(cut_out)).meta["epoch"] == 1
    resumed = model(label, seed=99)  # other initial weights: everything must come from the file
    events = list(train(resumed, TRAIN_X, VALID_X, c, out=cut_out, resume=True))
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [2, 3]
    fin = events[-1]
    assert len(fin.history) == 3
    for a, b in zip(ref.history, fin.history, strict=True):
        assert a["epoch"] == b["epoch"]
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-6, abs=1e-6)
        assert a["train_nll"] == pytest.approx(b["train_nll"], rel=1e-6, abs=1e-6)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    assert load_checkpoint(cut_out).meta["epoch"] == load_checkpoint(full_out).meta["epoch"]


@pytest.mark.parametrize("label,extra,cut", [
    ("made-agnostic", {}, (2, 3)),  # the model's own randomness (its orderings) must go on where it was
    ("fvsbn", {"ema": 0.9}, (1, 4)),  # before any validation: no history, no best checkpoint yet
    # the schedule fitted to 3 of 20 epochs is kept to the end of the epoch (the limit then counts the
    # resumed run's own time, so the rest of the run differs from the uninterrupted one)
    ("nade", {"epochs": 20, "fit_schedule": True, "max_minutes": 3.5}, (2, 5)),
])
def test_a_run_killed_within_an_epoch_resumes_from_the_batch_it_reached(tmp_path, monkeypatch, label, extra, cut):
    """``state_minutes``: the resumable state is also written within an epoch; a resume from it
    finishes that epoch and the run exactly as an uninterrupted one (a session's end kills runs)."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainmod.time, "perf_counter", lambda: clock["now"])

    def timed(m):
        real = m.training_loss

        def loss(x, y=None):
            clock["now"] += 10.0
            return real(x, y)

        monkeypatch.setattr(m, "training_loss", loss)
        return m

    c = cfg(**{"epochs": 3, "lr_min_factor": 0.1, "state_minutes": 0.5, **extra})  # a state every third batch
    full_out, cut_out = tmp_path / "full.safetensors", tmp_path / "cut.safetensors"
    full = timed(model(label))
    ref = list(train(full, TRAIN_X, VALID_X, c, out=full_out))
    gen = train(timed(model(label)), TRAIN_X, VALID_X, c, out=cut_out)
    for ev in gen:
        if isinstance(ev, BatchEnd) and (ev.epoch, ev.batch) == cut:
            break
    gen.close()  # as by a kill after the state written at that batch
    state = load_checkpoint(resume_path(cut_out)).meta
    assert state["epoch"] == cut[0] - 1 and state["partial"]["epoch"] == cut[0] and state["partial"]["batch"] == 3 * (cut[1] // 3)
    resumed = timed(model(label, seed=99))  # other initial weights: everything must come from the file
    events = list(train(resumed, TRAIN_X, VALID_X, c, out=cut_out, resume=True))
    batches = [(e.epoch, e.batch) for e in events if isinstance(e, BatchEnd)]
    assert batches[0] == (cut[0], state["partial"]["batch"] + 1)
    if not c.fit_schedule:  # the estimate counts only the batches left: none at the end
        assert [e for e in events if isinstance(e, BatchEnd)][-1].eta == 0
    ref_batches = [e for e in ref if isinstance(e, BatchEnd)]
    got = [e for e in events if isinstance(e, BatchEnd)]
    if c.fit_schedule:  # the rest of the cut epoch, at the learning rate of the fitted schedule
        assert ref_batches[-1].epochs == 3 and got[-1].epochs > 3
        got = [e for e in got if e.epoch == cut[0]]
        ref_batches = [e for e in ref_batches if e.epoch <= cut[0]]
        assert got and got[-1].epochs == 3
        assert [e.loss for e in ref_batches[-len(got):]] == pytest.approx([e.loss for e in got], rel=1e-6, abs=1e-6)
        return
    # the same losses batch for batch, at the same learning-rate schedule
    assert [(e.epoch, e.batch, e.epochs) for e in ref_batches[-len(got):]] == [(e.epoch, e.batch, e.epochs) for e in got]
    assert [e.loss for e in ref_batches[-len(got):]] == pytest.approx([e.loss for e in got], rel=1e-6, abs=1e-6)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason == "completed" and len(fin.history) == 3
    for a, b in zip(ref[-1].history, fin.history, strict=True):
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-6, abs=1e-6)
        assert a["train_nll"] == pytest.approx(b["train_nll"], rel=1e-6, abs=1e-6)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    best_full, best_cut = load_checkpoint(full_out), load_checkpoint(cut_out)
    assert best_cut.meta["epoch"] == best_full.meta["epoch"] and "partial" not in load_checkpoint(resume_path(cut_out)).meta


def test_a_state_within_an_epoch_refuses_another_batch_size(tmp_path):
    out = tmp_path / "m.safetensors"
    gen = train(model(), TRAIN_X, VALID_X, cfg(batch_size=10, state_minutes=1e-9), out=out)
    for ev in gen:
        if isinstance(ev, BatchEnd) and ev.batch == 20:
            break
    gen.close()
    with pytest.raises(TrainingError, match="batch size"):
        list(train(model(), TRAIN_X, VALID_X, cfg(batch_size=50), out=out, resume=True))
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(TrainingError, match="state_minutes"):
            next(train(model(), TRAIN_X, VALID_X, cfg(state_minutes=bad), out=out))


def test_resume_errors(tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingError, match="cannot resume"):
        list(train(model(), TRAIN_X, VALID_X, cfg(), out=out, resume=True))
    list(train(model(), TRAIN_X, VALID_X, cfg(epochs=1), out=out))
    with pytest.raises(TrainingError, match="different model"):
        list(train(model("fvsbn"), TRAIN_X, VALID_X, cfg(), out=out, resume=True))
    with pytest.raises(TrainingError, match="does not exist"):
        next(train(model(), TRAIN_X, VALID_X, cfg(), out=tmp_path / "missing" / "m.safetensors"))


def test_patience_counts_across_a_resume(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    scores = iter([3.0, 4.0, 5.0, 6.0])
    fixed_validation_scores(monkeypatch, scores)
    gen = train(model(), TRAIN_X, VALID_X, cfg(epochs=6, patience=2), out=out)
    for ev in gen:
        if isinstance(ev, EpochEnd) and ev.epoch == 2:
            break
    gen.close()
    fin = list(train(model(), TRAIN_X, VALID_X, cfg(epochs=6, patience=2), out=out, resume=True))[-1]
    assert fin.reason == "early-stopped" and fin.epochs_run == 3


def test_a_time_limit_stops_between_epochs_and_resume_goes_on(tmp_path, monkeypatch):
    """With ``max_minutes`` a run stops after the last epoch that fits (judged by the epochs so
    far), keeps the best checkpoint and the resumable state, and ``resume`` continues it."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainmod.time, "perf_counter", lambda: clock["now"])
    out = tmp_path / "m.safetensors"
    batches = -(-len(TRAIN_X) // 50)

    def timed_model():
        m = model()
        real = m.training_loss

        def loss(x, y=None):
            clock["now"] += 10.0  # every batch takes 10 s of this fake clock
            return real(x, y)

        monkeypatch.setattr(m, "training_loss", loss)
        return m

    limit = 2.5 * batches * 10.0 / 60.0  # two and a half epochs
    c = cfg(epochs=5, max_minutes=limit)
    events = list(train(timed_model(), TRAIN_X, VALID_X, c, out=out))
    fin = events[-1]
    assert fin.reason == "time-limit" and fin.epochs_run == 2 and "--resume" in fin.message
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [1, 2]
    assert load_checkpoint(resume_path(out)).meta["epoch"] == 2 and fin.best_path == out
    fin = list(train(timed_model(), TRAIN_X, VALID_X, c, out=out, resume=True))[-1]
    assert fin.reason == "time-limit" and fin.epochs_run == 4  # the limit counts this run's time only
    fin = list(train(timed_model(), TRAIN_X, VALID_X, c, out=out, resume=True))[-1]
    assert fin.reason == "completed" and len(fin.history) == 5  # the last epoch is never cut
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(TrainingError, match="max_minutes"):
            next(train(model(), TRAIN_X, VALID_X, cfg(max_minutes=bad), out=tmp_path / "x.safetensors"))


def _fake_clock(monkeypatch, seconds_per_batch: float = 10.0):
    """A clock that advances ``seconds_per_batch`` per training batch, and a model builder using it."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainmod.time, "perf_counter", lambda: clock["now"])

    def timed_model():
        m = model()
        real = m.training_loss

        def loss(x, y=None):
            clock["now"] += seconds_per_batch
            return real(x, y)

        monkeypatch.setattr(m, "training_loss", loss)
        return m

    return timed_model


def _last_lr(out) -> float:
    return float(load_checkpoint(resume_path(out)).meta["optimizer"]["param_groups"][0]["lr"])


def test_a_fitted_schedule_decays_to_its_floor_within_the_time_limit(tmp_path, monkeypatch):
    """``fit_schedule``: the cosine schedule ends at the last epoch that fits the limit, so the run
    stops at the lowest learning rate instead of being cut at a high one."""
    timed_model = _fake_clock(monkeypatch)
    batches = -(-len(TRAIN_X) // 50)
    limit = 4.5 * batches * 10.0 / 60.0  # four and a half epochs of 20 asked for
    fitted, cut = tmp_path / "fitted.safetensors", tmp_path / "cut.safetensors"
    c = cfg(epochs=20, lr=0.02, lr_min_factor=0.1, max_minutes=limit)
    events = list(train(timed_model(), TRAIN_X, VALID_X, TrainConfig(**{**c.__dict__, "fit_schedule": True}), out=fitted))
    fin = events[-1]
    assert fin.reason == "time-limit" and fin.epochs_run == 4 and "fitted" in fin.message
    # every event reports the schedule's end; after the first epoch it is the fitted one
    assert [e.epochs for e in events if isinstance(e, EpochEnd)] == [4, 4, 4, 4]
    assert _last_lr(fitted) == pytest.approx(0.02 * 0.1)
    assert load_checkpoint(resume_path(fitted)).meta["schedule_epochs"] == 4  # what --epochs repeats it with
    fin = list(train(timed_model(), TRAIN_X, VALID_X, c, out=cut))[-1]
    assert fin.reason == "time-limit" and fin.epochs_run == 4
    assert _last_lr(cut) > 0.9 * 0.02  # without fitting: cut early in a 20-epoch schedule
    with pytest.raises(TrainingError, match="max_minutes"):
        next(train(model(), TRAIN_X, VALID_X, cfg(fit_schedule=True), out=tmp_path / "x.safetensors"))


def test_warmup_ramps_the_learning_rate_over_the_runs_first_minibatches(monkeypatch):
    """``warmup``: minibatch s of the run (from 0) steps at the schedule's rate times (s + 1) / N until
    s = N - 1, at the schedule's own rate after, across epochs."""
    seen = []
    real = trainmod._Run._step

    def spy(self, xb, yb, epoch, b):
        seen.append(self.opt.param_groups[0]["lr"])
        return real(self, xb, yb, epoch, b)

    monkeypatch.setattr(trainmod._Run, "_step", spy)
    batches = -(-len(TRAIN_X) // 50)
    list(train(model(), TRAIN_X, VALID_X, cfg(epochs=3, lr=0.02, lr_min_factor=0.1, warmup=8)))
    per_epoch = [0.02, 0.02 * (0.1 + 0.9 * 0.5), 0.02 * 0.1]  # the cosine over three epochs
    want = [per_epoch[s // batches] * min(1.0, (s + 1) / 8) for s in range(3 * batches)]
    assert batches == 6 and seen == pytest.approx(want, rel=1e-12)
    seen.clear()
    list(train(model(), TRAIN_X, VALID_X, cfg(epochs=2, lr=0.02)))
    assert seen == [0.02] * (2 * batches)  # no warm-up by default


@pytest.mark.parametrize("every, saved_after", [(0, [None, None, 3]), (2, [None, 2, 3]), (1, [1, 2, 3])])
def test_state_every_saves_the_resumable_state_every_n_epochs_and_at_the_end(tmp_path, every, saved_after):
    """``state_every``: the resumable state (and, above 1 or 0, the best checkpoint held in memory)
    is written every N epochs and when the run stops."""
    out = tmp_path / "m.safetensors"
    seen = []
    for e in train(model(), TRAIN_X, VALID_X, cfg(epochs=3, state_every=every), out=out):
        if isinstance(e, EpochEnd):
            rp = resume_path(out)
            seen.append(load_checkpoint(rp).meta["epoch"] if rp.exists() else None)
            assert out.exists() == (seen[-1] is not None)  # the best is written with the state
    assert seen == saved_after
    # the best checkpoint held back until the state is saved is the one written at once otherwise
    ref = tmp_path / "ref.safetensors"
    list(train(model(), TRAIN_X, VALID_X, cfg(epochs=3, state_every=1), out=ref))
    a, b = load_checkpoint(out), load_checkpoint(ref)
    assert a.meta["metrics"] == b.meta["metrics"] and a.meta["epoch"] == b.meta["epoch"]
    assert [h["epoch"] for h in a.meta["history"]] == [h["epoch"] for h in b.meta["history"]]
    for k, v in b.model.state_dict().items():
        assert torch.equal(a.model.state_dict()[k], v), k
    fin = list(train(model(), TRAIN_X, VALID_X, cfg(epochs=4, state_every=every), out=out, resume=True))[-1]
    assert fin.reason == "completed" and len(fin.history) == 4  # resumes from the state kept at the end
    with pytest.raises(TrainingError, match="state_every"):
        next(train(model(), TRAIN_X, VALID_X, cfg(state_every=-1), out=tmp_path / "x.safetensors"))


def test_a_diverged_run_writes_the_best_checkpoint_it_held_back(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    m = model()
    real, calls = m.training_loss, {"n": 0}
    batches = -(-len(TRAIN_X) // 50)

    def loss(x, y=None):
        calls["n"] += 1
        return real(x, y) * (float("nan") if calls["n"] == batches + 2 else 1.0)  # epoch 2, batch 2

    monkeypatch.setattr(m, "training_loss", loss)
    fin = list(train(m, TRAIN_X, VALID_X, cfg(state_every=0), out=out))[-1]
    assert fin.reason == "diverged" and fin.best_path == out and str(out) in fin.message
    assert load_checkpoint(out).meta["epoch"] == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, bad):
    out = tmp_path / "m.safetensors"
    m = model()
    real = m.training_loss
    state = {"epoch": 0, "batch": 0}

    def loss(x, y=None):
        state["batch"] += 1
        v = real(x, y)
        return v * bad if state["epoch"] == 2 and state["batch"] == 3 else v

    monkeypatch.setattr(m, "training_loss", loss)
    saved = None
    events = []
    for ev in train(m, TRAIN_X, VALID_X, cfg(), out=out):
        events.append(ev)
        if isinstance(ev, EpochEnd):
            saved = out.read_bytes()
            state["epoch"], state["batch"] = ev.epoch + 1, 0
            weights = {k: v.clone() for k, v in m.state_dict().items()}
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason == "diverged"
    assert ("nan" if bad != bad else "inf") in fin.message and "epoch 2, batch 3" in fin.message
    assert str(out) in fin.message and "lower learning rate" in fin.message
    assert fin.best_path == out and fin.epochs_run == 1
    assert out.read_bytes() == saved  # the last good checkpoint, untouched
    assert load_checkpoint(out).meta["epoch"] == 1
    assert not any(isinstance(e, EpochEnd) and e.epoch == 2 for e in events)
    for k, v in m.state_dict().items():  # stopped before an optimizer step: no weight has NaN
        assert torch.isfinite(v).all(), k
    assert weights  # (captured after epoch 1)


@pytest.mark.parametrize("where", ["loss", "backward", "validation"])
def test_cuda_out_of_memory_names_the_batch_size(tmp_path, monkeypatch, where):
    out = tmp_path / "m.safetensors"
    m = model()
    real = m.training_loss
    count = {"n": 0}
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    class Exploding(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            return v.clone()

        @staticmethod
        def backward(ctx, g):
            raise oom

    def loss(x, y=None):
        count["n"] += 1
        if count["n"] == 8:  # epoch 2, batch 2
            if where == "loss":
                raise oom
            if where == "backward":
                return Exploding.apply(real(x, y))
        return real(x, y)

    monkeypatch.setattr(m, "training_loss", loss)
    if where == "validation":
        real_steps = trainmod.evaluate_steps
        calls = {"n": 0}

        def evaluate_steps(*a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise oom
            return (yield from real_steps(*a, **k))

        monkeypatch.setattr(trainmod, "evaluate_steps", evaluate_steps)
    before = None
    with pytest.raises(TrainingError) as info:
        for ev in train(m, TRAIN_X, VALID_X, cfg(), out=out):
            if isinstance(ev, EpochEnd):
                before = out.read_bytes()
    msg = str(info.value)
    if where == "validation":
        assert "validation of 25 images" in msg and "eval_batch_size" in msg and "(e.g. 12)" in msg
    else:
        assert "training batch of 50 images (epoch 2, batch 2)" in msg and "--batch-size (e.g. 25)" in msg
    assert "ran out of memory" in msg and "--device cpu" in msg
    assert out.read_bytes() == before


def test_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    before = None
    real_fsync = os.fsync
    with pytest.raises(CheckpointError, match="No space left on device.*previous file is unchanged"):
        for ev in train(model(), TRAIN_X, VALID_X, cfg(), out=out):
            if isinstance(ev, EpochEnd) and ev.epoch == 1:
                before = out.read_bytes()

                def full(fd):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                monkeypatch.setattr(ckmod.os, "fsync", full)
    monkeypatch.setattr(ckmod.os, "fsync", real_fsync)
    assert out.read_bytes() == before and load_checkpoint(out).meta["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_configs(tmp_path):
    with pytest.raises(TrainingError, match="at least one"):
        next(train(model(), TRAIN_X[:0], VALID_X, cfg()))
    with pytest.raises(TrainingError, match="at least 1"):
        next(train(model(), TRAIN_X, VALID_X, cfg(batch_size=0)))
    with pytest.raises(TrainingError, match="CUDA"):
        if torch.cuda.is_available():
            raise TrainingError("CUDA present: nothing to check")
        next(train(model(), TRAIN_X, VALID_X, cfg(device="cuda")))


@pytest.mark.parametrize(
    "damage",
    [
        {"epoch": None},
        {"epoch": "three"},
        {"optimizer": None},
        {"optimizer": {"param_groups": "x"}},
        {"history": [{"epoch": 1}]},
        {"history": 5},
    ],
    ids=["no-epoch", "epoch-not-a-number", "no-optimizer", "bad-param-groups", "history-without-nll", "history-not-a-list"],
)
def test_resume_from_a_damaged_training_state(tmp_path, damage):
    out = tmp_path / "m.safetensors"
    list(train(model(), TRAIN_X, VALID_X, cfg(epochs=1), out=out))
    rp = resume_path(out)
    ck = load_checkpoint(rp)
    meta = {k: v for k, v in ck.meta.items() if k not in damage or damage[k] is not None}
    meta.update({k: v for k, v in damage.items() if v is not None})
    ckmod.save_checkpoint(rp, ck.model, meta, extra=ck.extra)
    with pytest.raises(TrainingError, match=f"cannot resume: {rp}"):
        list(train(model(), TRAIN_X, VALID_X, cfg(epochs=2), out=out, resume=True))


def test_checkpoint_properties_survive_odd_metadata(tmp_path):
    out = tmp_path / "m.safetensors"
    ckmod.save_checkpoint(out, model(), {"name": {"not": "a string"}, "metrics": [1, 2]})
    ck = load_checkpoint(out)
    assert ck.name == "m" and ck.test_nll is None
    ckmod.save_checkpoint(out, model(), {"name": "mine", "metrics": {"test_nll": True}})
    ck = load_checkpoint(out)
    assert ck.name == "mine" and ck.test_nll is None


def test_validation_yields_between_chunks_so_a_stop_is_prompt():
    """The validation pass is cut into chunks of about 0.2 s and the run can be closed between them."""
    import time

    from engine.models import build_model
    from engine.train import EpochEnd, TrainConfig, Validating, evaluate, evaluate_steps, train

    torch.manual_seed(0)
    model = build_model("made", {"hidden": (64,)})
    x = np.random.default_rng(0).integers(0, 2, (600, 784)).astype(np.uint8)
    gen = train(model, x[:200], x[200:], TrainConfig(epochs=2, batch_size=50, eval_batch_size=400))
    seen = []
    for ev in gen:
        if isinstance(ev, Validating):
            seen.append(ev.done)
            if len(seen) == 2:
                t = time.perf_counter()
                gen.close()
                assert time.perf_counter() - t < 1.0
                break
        assert not isinstance(ev, EpochEnd), "the run should have been stopped during validation"
    assert len(seen) == 2 and seen[0] < seen[1] <= 400
    # the chunked evaluation returns exactly what the plain one does
    steps = evaluate_steps(model, x[:300], 1000, target_seconds=0.01)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            chunked = done.value
            break
    assert chunked[0] == pytest.approx(evaluate(model, x[:300])[0], rel=1e-6)


def test_weight_average_is_what_is_validated_and_kept(tmp_path):
    """With ``ema``, the best checkpoint holds the moving average of the weights (as validated),
    the training goes on from the raw weights, and the average differs from both ends of the run."""
    out = tmp_path / "m.safetensors"
    m = model("fvsbn")
    raw_start = {k: v.clone() for k, v in m.state_dict().items()}
    seen = []
    orig = trainmod.evaluate_steps

    def spy(mdl, *a, **kw):
        seen.append(mdl.weight.detach().clone())
        return orig(mdl, *a, **kw)

    trainmod.evaluate_steps = spy
    try:
        fin = list(train(m, TRAIN_X, VALID_X, cfg(epochs=2, ema=0.95), out=out))[-1]
    finally:
        trainmod.evaluate_steps = orig
    assert fin.reason == "completed" and len(seen) == 2
    kept = load_checkpoint(out).model.weight.detach()
    best_epoch = min(fin.history, key=lambda h: h["valid_nll"])["epoch"]
    torch.testing.assert_close(kept, seen[best_epoch - 1])  # the validated weights are the saved ones
    assert not torch.allclose(seen[-1], m.weight.detach())  # the model itself keeps the raw weights
    assert not torch.allclose(seen[-1], raw_start["weight"])
    resume = load_checkpoint(resume_path(out))
    assert any(k.startswith("ema.") for k in resume.extra)
    torch.testing.assert_close(resume.model.weight.detach(), m.weight.detach())


def test_l1_penalty_shrinks_the_weights_but_not_the_reported_nll():
    def run(label, l1, lr):
        m = model(label)
        fin = list(train(m, TRAIN_X, VALID_X, cfg(epochs=2, l1=l1, lr=lr)))[-1]
        return m, fin.history[-1]["train_nll"]

    m0, _ = run("fvsbn", 0.0, 0.01)
    m1, _ = run("fvsbn", 0.02, 0.01)
    assert (m1.weight * m1.mask).abs().sum() < 0.6 * (m0.weight * m0.mask).abs().sum()
    # the reported training NLL is the data term only: with weights that barely move, it is the
    # model's NLL on the training images, not that plus the (here large) penalty
    m2, reported = run("nade", 1.0, 1e-9)
    penalty = sum(p.abs().sum().item() for p in m2.parameters() if p.dim() >= 2)
    assert penalty > 0.5
    assert reported == pytest.approx(trainmod.evaluate(m2, TRAIN_X)[0], abs=1e-3)


def test_bad_ema_or_l1_is_refused():
    for kw in ({"ema": 1.0}, {"ema": -0.1}, {"l1": -1.0}):
        with pytest.raises(TrainingError, match="ema|l1"):
            next(train(model(), TRAIN_X, VALID_X, cfg(**kw)))


def test_amp_on_the_cpu_trains_in_bf16_and_validates_in_float32(tmp_path):
    m = model("made-agnostic")
    seen: list[tuple[str, bool]] = []
    inner_loss, inner_log_prob = m.training_loss, m.member_log_prob

    def spy_loss(x, y=None):
        seen.append(("train", torch.is_autocast_enabled("cpu")))
        return inner_loss(x, y)

    def spy_log_prob(*a, **k):
        if not torch.is_grad_enabled():  # validation (training calls it too, with gradients)
            seen.append(("valid", torch.is_autocast_enabled("cpu")))
        return inner_log_prob(*a, **k)

    m.training_loss, m.member_log_prob = spy_loss, spy_log_prob
    out = tmp_path / "amp.safetensors"
    events = list(train(m, TRAIN_X, VALID_X, cfg(amp=True, epochs=2), out=out))
    fin = events[-1]
    assert fin.reason == "completed" and math.isfinite(fin.best_valid_nll)
    assert {on for kind, on in seen if kind == "train"} == {True}
    assert {on for kind, on in seen if kind == "valid"} == {False}
    assert ("valid", False) in seen
    ck = load_checkpoint(out)
    assert all(p.dtype == torch.float32 for p in ck.model.parameters())


def test_bf16_is_native_reads_the_cpu_flags(monkeypatch):
    from engine import train as tr

    cpu = torch.device("cpu")
    assert tr.bf16_is_native(cpu, {"sse2", "avx2", "fma"}) is False
    assert tr.bf16_is_native(cpu, {"avx2", "avx512f", "avx512_bf16"}) is True
    assert tr.bf16_is_native(cpu, {"amx_tile", "amx_bf16"}) is True
    assert tr.bf16_is_native(cpu, {"fp", "asimd", "bf16"}) is True  # aarch64 "Features"
    monkeypatch.setattr(tr, "_cpu_flags", lambda: None)  # not Linux, or /proc unreadable
    assert tr.bf16_is_native(cpu) is None and tr.amp_warning(cpu) is None
    assert tr.bf16_is_native(torch.device("meta")) is None
    warning = tr.amp_warning(cpu, {"avx2"})
    assert "no bf16 instructions" in warning and "slower" in warning
    assert tr.amp_warning(cpu, {"avx512_bf16"}) is None
    assert tr.bf16_hardware(cpu, {"avx512_bf16", "amx_tile", "amx_bf16"}) == "AMX"
    assert tr.bf16_hardware(cpu, {"avx512f", "avx512_bf16"}) == "AVX-512 BF16"
    assert tr.bf16_hardware(cpu, {"asimd", "bf16"}) == "BF16"
    assert tr.bf16_hardware(cpu, {"avx2"}) is None and tr.bf16_hardware(cpu) is None  # flags unreadable


def test_cpu_flags_parse_proc_cpuinfo(monkeypatch, tmp_path):
    from engine import train as tr

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\nflags\t\t: fpu avx512_bf16\n")
    real_path = tr.Path
    monkeypatch.setattr(tr, "Path", lambda p: info if p == "/proc/cpuinfo" else real_path(p))
    assert tr._cpu_flags() == {"fpu", "sse2", "avx2", "avx512_bf16"}
    info.write_text("")
    assert tr._cpu_flags() is None


def _stop_at(gen, when) -> None:
    """Drive ``gen`` to the first event ``when`` accepts, then close it (the app's Stop, Ctrl-C)."""
    for ev in gen:
        if when(ev):
            break
    gen.close()


@pytest.mark.parametrize("every", [0, 2])
@pytest.mark.parametrize("where", ["batch", "validation", "epoch-end"])
def test_a_stopped_run_writes_the_best_it_held_back_and_a_state_it_resumes_exactly_from(tmp_path, every, where):
    """``state_every`` 0 or above 1: a stop writes the best checkpoint held in memory and the
    resumable state (within an epoch: the batch reached), and the resume repeats an uninterrupted run."""
    from engine.train import Validating

    c = cfg(epochs=3, lr_min_factor=0.1, state_every=every)
    full_out, cut_out = tmp_path / "full.safetensors", tmp_path / "cut.safetensors"
    full = model("made-agnostic")
    ref = list(train(full, TRAIN_X, VALID_X, c, out=full_out))[-1]
    when = {
        "batch": lambda ev: isinstance(ev, BatchEnd) and (ev.epoch, ev.batch) == (2, 3),
        "validation": lambda ev: isinstance(ev, Validating) and ev.epoch == 2,
        "epoch-end": lambda ev: isinstance(ev, EpochEnd) and ev.epoch == 1,
    }[where]
    _stop_at(train(model("made-agnostic"), TRAIN_X, VALID_X, c, out=cut_out), when)
    assert load_checkpoint(cut_out).meta["epoch"] == 1  # the best of epoch 1, held back until now
    state = load_checkpoint(resume_path(cut_out)).meta
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state.get("partial", {}).get("batch") == {"batch": 3, "validation": 6, "epoch-end": None}[where]
    resumed = model("made-agnostic", seed=99)
    fin = list(train(resumed, TRAIN_X, VALID_X, c, out=cut_out, resume=True))[-1]
    assert fin.reason == "completed" and [h["epoch"] for h in fin.history] == [1, 2, 3]
    for a, b in zip(ref.history, fin.history, strict=True):
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-6, abs=1e-6)
        assert a["train_nll"] == pytest.approx(b["train_nll"], rel=1e-6, abs=1e-6)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    assert load_checkpoint(cut_out).meta["epoch"] == load_checkpoint(full_out).meta["epoch"]


def test_a_stop_before_the_first_epoch_ends_or_after_an_error_writes_no_state(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    _stop_at(train(model(), TRAIN_X, VALID_X, cfg(state_every=0), out=out), lambda ev: isinstance(ev, BatchEnd) and ev.batch == 3)
    assert not list(tmp_path.iterdir())  # nothing done worth keeping yet
    # an error after epoch 1: the best held back is written, the state is left as it was (none)
    real = trainmod.evaluate_steps
    calls = {"n": 0}

    def evaluate_steps(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("the validation data went away")
        return (yield from real(*a, **k))

    monkeypatch.setattr(trainmod, "evaluate_steps", evaluate_steps)
    with pytest.raises(OSError, match="went away"):
        list(train(model(), TRAIN_X, VALID_X, cfg(state_every=0), out=out))
    assert load_checkpoint(out).meta["epoch"] == 1 and not resume_path(out).exists()


def test_a_run_repeats_from_its_seed_while_another_thread_reseeds_the_global_generator():
    """The run draws its orderings and masks from its own generator: another thread drawing from
    and reseeding the global one (the app's workers) changes nothing."""
    import threading

    def agnostic():
        torch.manual_seed(0)
        spec = {"hidden": (9,), "order_agnostic": True, "num_masks": 0, "dropout": 0.2, "height": H, "width": W}
        return build_model("made", spec, make_ordering("raster", H, W))

    c = cfg(epochs=3, batch_size=20)
    ref = agnostic()
    list(train(ref, TRAIN_X, VALID_X, c))
    stop = threading.Event()

    def meddle():
        while not stop.is_set():
            torch.manual_seed(12345)
            torch.rand(7)

    got = agnostic()  # built before the meddling starts: its initial weights come from the global generator
    other = threading.Thread(target=meddle)
    other.start()
    try:
        result: list = []
        runner = threading.Thread(target=lambda: result.extend(train(got, TRAIN_X, VALID_X, c)))
        runner.start()
        runner.join()
    finally:
        stop.set()
        other.join()
    assert result[-1].reason == "completed" and got.train_generator is None
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k


@pytest.mark.parametrize("field,value,match", [
    ("grad_clip", 0.0, "grad_clip"), ("grad_clip", -1.0, "grad_clip"), ("grad_clip", float("nan"), "grad_clip"),
    ("lr_min_factor", 0.0, "lr_min_factor"), ("lr_min_factor", -5.0, "lr_min_factor"), ("lr_min_factor", 1.5, "lr_min_factor"),
    ("max_train", -5, "max_train"), ("max_valid", -1, "max_valid"), ("patience", -1, "patience"),
    ("batch_size", -3, "batch size"), ("eval_batch_size", 0, "eval_batch_size"), ("eval_batch_size", -1, "eval_batch_size"),
    ("lr", float("inf"), "learning rate"), ("lr", float("nan"), "learning rate"), ("weight_decay", -0.1, "weight_decay"),
    ("shift", -1, "shift"), ("shift", 9, "shift"), ("warmup", -1, "warmup"),
])
def test_nonsense_values_are_refused_up_front(tmp_path, field, value, match):
    c = cfg(**{field: value})
    with pytest.raises(TrainingError, match=match) as info:
        c.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(TrainingError, match=match):
        next(train(model(), TRAIN_X, VALID_X, c, out=tmp_path / "m.safetensors"))
    assert not list(tmp_path.iterdir())


def test_nonsense_values_are_refused_by_the_cli_before_the_data_is_read(tmp_path, capsys):
    from engine.cli import main

    for option in (["--eval-batch-size", "0"], ["--grad-clip", "-1"], ["--lr-min-factor", "-5"], ["--max-train", "-5"]):
        args = ["train", "--model", "fvsbn", "--data", str(tmp_path / "no-data-here"), "--out", str(tmp_path / "m.safetensors")]
        code = main([*args, *option])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and option[0].strip("-").replace("-", "_") in err, err


def test_a_resume_at_an_absurd_learning_rate_stops_as_diverged_and_keeps_the_last_good_files(tmp_path):
    """``--resume --lr 1e10``: the loss goes far beyond what a uniform model pays; the run stops with
    one line and the resumable state and the best checkpoint stay as they were."""
    out = tmp_path / "m.safetensors"
    list(train(model(), TRAIN_X, VALID_X, cfg(epochs=2), out=out))
    state, best = resume_path(out).read_bytes(), out.read_bytes()
    with pytest.raises(TrainingError, match="diverged") as info:
        list(train(model(), TRAIN_X, VALID_X, cfg(epochs=5, lr=1e10), out=out, resume=True))
    msg = str(info.value)
    assert "\n" not in msg and "uniform" in msg and "epoch 3" in msg and "resumable state of epoch 2" in msg
    assert resume_path(out).read_bytes() == state and out.read_bytes() == best
    fin = list(train(model(), TRAIN_X, VALID_X, cfg(epochs=3), out=out, resume=True))[-1]  # the state still resumes
    assert fin.reason == "completed" and len(fin.history) == 3


@pytest.mark.parametrize("every", [1, 0])
def test_a_validation_nll_far_above_the_best_for_epochs_stops_and_keeps_the_last_good_state(tmp_path, monkeypatch, every):
    out = tmp_path / "m.safetensors"
    # epoch 2 far above the best but back at epoch 3: not divergence; from epoch 4 it stays far above
    fixed_validation_scores(monkeypatch, iter([3.0, 40.0, 3.2, 2.9, 50.0, float("nan"), 1e9, 1.0]))
    states = []
    with pytest.raises(TrainingError, match="diverged") as info:
        for ev in train(model(), TRAIN_X, VALID_X, cfg(epochs=8, state_every=every), out=out):
            if isinstance(ev, EpochEnd):
                rp = resume_path(out)
                states.append(load_checkpoint(rp).meta["epoch"] if rp.exists() else None)
    assert "\n" not in str(info.value) and "for 3 epochs" in str(info.value) and "epoch 7" in str(info.value)
    # a suspect epoch (2, 5, 6) never overwrites the state; the stop writes no diverged weights either
    assert states == ([1, 1, 3, 4, 4, 4] if every == 1 else [None] * 6)
    assert load_checkpoint(out).meta["epoch"] == 4  # the best, written at the stop when held back
    assert (load_checkpoint(resume_path(out)).meta["epoch"] if resume_path(out).exists() else None) == (4 if every == 1 else None)


def test_build_seeded_gives_the_seeds_weights_while_another_thread_builds_and_leaves_the_global_generator():
    """The app builds a training run's model on one worker thread while another may build a default
    model: each gets the initial weights of its own seed, and the global generator is left as it was."""
    import threading

    from engine.models import build_seeded

    spec = {"hidden": 7, "height": H, "width": W}
    want = build_seeded("nade", spec, seed=3).state_dict()
    stop = threading.Event()

    def other_builds():
        while not stop.is_set():
            build_seeded("nade", spec, seed=99)

    other = threading.Thread(target=other_builds)
    other.start()
    try:
        got = [build_seeded("nade", spec, seed=3).state_dict() for _ in range(20)]
    finally:
        stop.set()
        other.join()
    for g in got:
        for k, v in want.items():
            assert torch.equal(v, g[k]), k
    torch.manual_seed(5)
    expect = torch.rand(3)
    torch.manual_seed(5)
    build_seeded("nade", spec, seed=1)
    assert torch.equal(torch.rand(3), expect)


def _shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_random_shift_moves_each_image_by_its_own_offset_within_the_limit():
    h, w, most = 5, 6, 2
    x = torch.as_tensor(RNG.integers(1, 4, (400, h * w)), dtype=torch.float32)  # no zeros: every move shows
    out = trainmod.random_shift(x, most, h, w, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for a, b in zip(x.numpy().reshape(-1, h, w), out.numpy().reshape(-1, h, w), strict=True):
        hits = [(dy, dx) for dy in range(-most, most + 1) for dx in range(-most, most + 1) if np.array_equal(_shifted(a, dy, dx), b)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == (2 * most + 1) ** 2  # every offset in reach is drawn, none beyond
    again = trainmod.random_shift(x, most, h, w, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert torch.equal(trainmod.random_shift(x, 0, h, w), x)
    with pytest.raises(TrainingError, match="5x5"):
        trainmod.random_shift(x, 1, 5, 5)


def test_training_with_shift_sees_moved_images_and_validates_on_the_unmoved_ones(monkeypatch):
    for shift in (0, 1):
        m = model("nade")
        seen: list[torch.Tensor] = []
        real = m.training_loss

        def loss(x, y=None, real=real, seen=seen):
            seen.append(x.clone())
            return real(x, y)

        monkeypatch.setattr(m, "training_loss", loss)
        list(train(m, TRAIN_X, VALID_X, cfg(epochs=1, shift=shift), out=None))
        rows = {tuple(r) for r in TRAIN_X.tolist()}
        trained = torch.cat(seen).to(torch.uint8).tolist()
        assert len(trained) == len(TRAIN_X)
        strangers = sum(tuple(r) not in rows for r in trained)
        assert (strangers > 50) if shift else (strangers == 0)


def _tiny_pixelcnn(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("pixelcnn", {"channels": 4, "layers": 2, "head": 8, "height": H, "width": W},
                       make_ordering("raster", H, W))


def test_channels_last_trains_the_same_model_and_resumes(tmp_path):
    """--channels-last is a layout only: the same run in either layout gives the same weights and
    figures (float32 rounding), the files hold ordinary tensors, and a channels-last run resumes
    with its optimiser's moments in the parameters' layout."""
    c = cfg(epochs=3, lr=0.01, lr_min_factor=0.1, ema=0.9)
    plain, nhwc = _tiny_pixelcnn(), _tiny_pixelcnn()
    ref = list(train(plain, TRAIN_X, VALID_X, c, out=tmp_path / "a.safetensors"))[-1]
    conv = next(p for p in nhwc.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1)
    gen = train(nhwc, TRAIN_X, VALID_X, cfg(epochs=3, lr=0.01, lr_min_factor=0.1, ema=0.9, channels_last=True),
                out=tmp_path / "b.safetensors")
    for ev in gen:  # stopped in the middle of epoch 2, as by a kill
        if isinstance(ev, BatchEnd) and ev.epoch == 2 and ev.batch == 3:
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
            break
    gen.close()
    resumed = _tiny_pixelcnn(seed=5)
    events = list(train(resumed, TRAIN_X, VALID_X, cfg(epochs=3, lr=0.01, lr_min_factor=0.1, ema=0.9, channels_last=True),
                        out=tmp_path / "b.safetensors", resume=True))
    fin = events[-1]
    assert fin.reason == "completed" and [e.epoch for e in events if isinstance(e, EpochEnd)] == [2, 3]
    for a, b in zip(ref.history, fin.history, strict=True):
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-4)
    for k, v in plain.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-4), k
    ck = load_checkpoint(tmp_path / "b.safetensors")
    assert ck.meta["train_config"]["channels_last"] is True
    assert all(t.is_contiguous() for t in ck.model.state_dict().values())
