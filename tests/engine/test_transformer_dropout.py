"""The Transformer's dropout draws its masks from the training run's own generator
(``ARModel.train_generator``): a run with dropout repeats from its seed while other threads reseed
the global generator, and a resume from a state written within an epoch is exact. The explicit
attention that dropout needs computes what the fused kernel does."""

from __future__ import annotations

import threading

import pytest
import torch

import engine.train as trainmod
from engine.checkpoint import load_checkpoint
from engine.models import build_model
from engine.models.transformer import Block
from engine.ordering import make_ordering
from engine.train import BatchEnd, Finished, resume_path, train

from .test_train import TRAIN_X, VALID_X, cfg
from .tiny import H, W

SPEC = {"d_model": 8, "layers": 2, "heads": 2, "mlp_ratio": 2, "dropout": 0.1, "height": H, "width": W}


def dropout_transformer(seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model("transformer", dict(SPEC, **extra), make_ordering("raster", H, W))


def test_the_training_loss_with_dropout_follows_the_run_generator_not_the_global_one():
    m = dropout_transformer(order_agnostic=False).train()  # no orderings drawn: only dropout is random
    x = torch.as_tensor(TRAIN_X[:20]).float()
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        m.train_generator = torch.Generator().manual_seed(7)
        losses.append(m.training_loss(x).item())
    m.train_generator = torch.Generator().manual_seed(8)
    other = m.training_loss(x).item()
    m.train_generator = None
    m.eval()
    clean = m.training_loss(x).item()
    assert losses[0] == losses[1]
    assert other != losses[0] and clean not in (other, losses[0])  # the masks do change the loss


def test_explicit_attention_computes_what_the_fused_kernel_does():
    """With a rate so small that every unit is kept, the training path (explicit attention and
    masks from the generator) equals the evaluation path (fused attention)."""
    torch.manual_seed(0)
    blk = Block(8, 2, 2, 1e-12).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    fused = blk.eval()(x)
    explicit = blk.train()(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(explicit, fused)


def test_a_dropout_transformer_repeats_from_its_seed_while_another_thread_reseeds_the_global_generator():
    c = cfg(epochs=2, batch_size=20)
    train_x, valid_x = TRAIN_X[:100], VALID_X[:20]  # few batches: the meddling thread slows the run
    ref = dropout_transformer()
    list(train(ref, train_x, valid_x, c))
    stop = threading.Event()

    def meddle():
        while not stop.is_set():
            torch.manual_seed(12345)
            torch.rand(7)

    got = dropout_transformer()  # built first: the meddling thread would race its initial weights
    other = threading.Thread(target=meddle)
    other.start()
    try:
        result: list = []
        runner = threading.Thread(target=lambda: result.extend(train(got, train_x, valid_x, c)))
        runner.start()
        runner.join()
    finally:
        stop.set()
        other.join()
    assert result[-1].reason == "completed" and got.train_generator is None
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k


@pytest.mark.parametrize("order_agnostic", [True, False], ids=["agnostic", "fixed-order"])
def test_a_dropout_transformer_killed_within_an_epoch_resumes_exactly(tmp_path, monkeypatch, order_agnostic):
    """``state_minutes``: the resumable state written within an epoch holds the run's generator,
    and with it the dropout masks still to come, so the resumed run ends where an uninterrupted
    one does."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainmod.time, "perf_counter", lambda: clock["now"])

    def timed(m):
        real = m.training_loss

        def loss(x, y=None):  # train() passes the labels (None for an unconditional model)
            clock["now"] += 10.0
            return real(x, y)

        monkeypatch.setattr(m, "training_loss", loss)
        return m

    c = cfg(epochs=3, lr_min_factor=0.1, state_minutes=0.5)  # a state every third batch
    cut = (2, 4)
    full_out, cut_out = tmp_path / "full.safetensors", tmp_path / "cut.safetensors"
    full = timed(dropout_transformer(order_agnostic=order_agnostic))
    ref = list(train(full, TRAIN_X, VALID_X, c, out=full_out))
    gen = train(timed(dropout_transformer(order_agnostic=order_agnostic)), TRAIN_X, VALID_X, c, out=cut_out)
    for ev in gen:
        if isinstance(ev, BatchEnd) and (ev.epoch, ev.batch) == cut:
            break
    gen.close()  # as by a kill after the state written at that batch
    state = load_checkpoint(resume_path(cut_out)).meta
    assert state["partial"]["epoch"] == 2 and state["partial"]["batch"] == 3
    torch.manual_seed(4321)  # the global generator elsewhere than in the uninterrupted run
    resumed = timed(dropout_transformer(seed=99, order_agnostic=order_agnostic))  # weights must come from the file
    events = list(train(resumed, TRAIN_X, VALID_X, c, out=cut_out, resume=True))
    ref_batches = [e for e in ref if isinstance(e, BatchEnd)]
    got = [e for e in events if isinstance(e, BatchEnd)]
    assert (got[0].epoch, got[0].batch) == (2, 4)
    assert [(e.epoch, e.batch) for e in ref_batches[-len(got):]] == [(e.epoch, e.batch) for e in got]
    assert [e.loss for e in ref_batches[-len(got):]] == pytest.approx([e.loss for e in got], rel=1e-6, abs=1e-6)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason == "completed"
    for a, b in zip(ref[-1].history, fin.history, strict=True):
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-6, abs=1e-6)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
