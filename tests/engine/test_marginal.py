"""Engine code that drives a stepper itself, for class-conditional models: the marginal's stepper
(engine.marginal) against the teacher-forced marginal; continuing and forking a sampling run of a
conditional model (engine.sampling); importance-sampled inpainting and entropy coding under the
marginal; the influence map's reference under a class and the marginal.

Every family that takes a class is covered (the tiny 2x2 cases of test_classes, binary and 4-level
categorical), with random weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.figures import pixel_influence_steps
from engine.marginal import MarginalStepper, stepper_for
from engine.sampling import ForkPoint, continue_fork, continue_run, generator_at
from engine.tasks.compress import Codec, decompress
from engine.tasks.inpaint_eval import conditional_log_prob

from .test_classes import CASES, IDS, D, all_images, make, random_images

C = 3
SEED, BATCH = 5, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny passes: one torch thread is fastest for them, and leaves the other core alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _stepper_params(stepper, x: torch.Tensor, ordering) -> torch.Tensor:
    """Every pixel's head numbers from a stepper fed ``x`` in ``ordering``: (B, D[, K])."""
    out = [None] * D
    for pixel in ordering.perm.tolist():
        out[pixel] = stepper.logits(pixel).clone()
        stepper.observe(pixel, x[:, pixel])
    return torch.stack(out, 1)


def _levels(model, params: torch.Tensor) -> torch.Tensor:
    return model._level_log_probs(params)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_the_marginal_stepper_gives_the_marginal_conditionals(label, family, cfg, k):
    m = make(family, cfg, "raster", seed=3)
    x = random_images(5, k, seed=1)
    want = _levels(m, m.logits(x))  # teacher-forced marginal, (B, D, K)
    got = _levels(m, _stepper_params(stepper_for(m, x.clone(), m.ordering), x, m.ordering))
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    # given a class, stepper_for is the family's own stepper of p(x | y)
    y = torch.tensor([0, 1, 2, 1, 0])
    got_y = _levels(m, _stepper_params(stepper_for(m, x.clone(), m.ordering, y), x, m.ordering))
    torch.testing.assert_close(got_y, _levels(m, m.logits(x, y=y)), atol=1e-9, rtol=0)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_the_marginal_stepper_selects_rows(label, family, cfg, k):
    m = make(family, cfg, "raster", seed=4)
    x = random_images(4, k, seed=2)
    st = MarginalStepper(m, x.clone(), m.ordering)
    perm = m.ordering.perm.tolist()
    for pixel in perm[:2]:
        st.logits(pixel)
        st.observe(pixel, x[:, pixel])
    index = torch.tensor([3, 3, 0])
    try:
        st.select(index)
    except NotImplementedError:
        pytest.skip(f"{family}'s stepper cannot reorder rows")
    xs = x[index]
    for pixel in perm[2:]:  # the selected rows' conditionals go on from their own pixels and posteriors
        torch.testing.assert_close(_levels(m, st.logits(pixel)), _levels(m, m.logits(xs)[:, pixel]), atol=1e-9, rtol=0)
        st.observe(pixel, xs[:, pixel])


def test_stepper_for_refuses_a_class_for_an_unconditional_model():
    from .test_levels import make as make_plain

    m = make_plain("fvsbn", {"levels": 4, "output": "categorical"})
    with pytest.raises(ValueError, match="not conditioned"):
        stepper_for(m, torch.zeros(1, D, dtype=torch.float64), m.ordering, torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="class-conditional"):
        MarginalStepper(m, torch.zeros(1, D, dtype=torch.float64), m.ordering)


def _run(m, k: int, y=None):
    """A run of BATCH images stopped after ``k`` generated pixels: (images then, generator state,
    final images, the classes the run used)."""
    gen = torch.Generator().manual_seed(SEED)
    full = m.sample(BATCH, generator=gen, y=y).numpy()
    gen = torch.Generator().manual_seed(SEED)
    steps = m.sample_steps(BATCH, generator=gen, y=y)
    for st in steps:
        if st.index == k - 1:
            x, classes = st.x.clone().numpy(), st.y.clone()
            break
    state = gen.get_state()
    steps.close()
    return x, state, full, classes


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_continuing_a_conditional_run_with_its_classes_gives_the_run(label, family, cfg, k):
    m = make(family, cfg, "raster", seed=5)
    order = m.ordering
    for given in (None, 2):  # classes drawn by the run, and one class given
        for steps in (1, 3):
            x, state, full, classes = _run(m, steps, y=given)
            decided = np.zeros(D, bool)
            decided[order.perm[:steps]] = True
            gen = torch.Generator()
            gen.set_state(state)
            out = continue_run(m, x, decided, order, generator=gen, y=classes)
            np.testing.assert_array_equal(out.numpy(), full, err_msg=f"{label}: classes {given}, from step {steps}")
            # the seed alone rebuilds the generator, the class draw replayed where the run made it
            replayed = generator_at(SEED, steps, BATCH, classes=C if given is None else 0)
            assert torch.equal(replayed.get_state(), state)
            np.testing.assert_array_equal(continue_run(m, x, decided, order, generator=replayed, y=classes).numpy(), full)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_a_fork_of_a_conditional_run_continues_its_image(label, family, cfg, k):
    m = make(family, cfg, "raster", seed=6)
    x, _state, full, classes = _run(m, 2)
    decided = np.zeros(D, bool)
    decided[m.ordering.perm[:2]] = True
    row = 1
    point = ForkPoint(prefix=x[row].astype(np.float32), decided=decided, ordering=m.ordering, draws=2, batch=BATCH, seed=SEED,
                      temperature=1.0, row=row, y=int(classes[row]), class_draw=C)
    edited = point.prefix.copy()
    steps = continue_fork(m, point, edited)
    try:
        while True:
            st = next(steps)
            assert st.y is not None and st.y.tolist() == [int(classes[row])] * 2
    except StopIteration as stop:
        both = stop.value
    np.testing.assert_array_equal(both[0], full[row])
    np.testing.assert_array_equal(both[1], full[row])  # nothing edited: the same random numbers, the same image


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_continuing_without_classes_draws_from_the_marginal(label, family, cfg, k):
    """No classes: each pending pixel from the marginal's conditional, one uniform per image per
    pixel, as the unconditional sampler draws (the same numbers a manual loop gives)."""
    m = make(family, cfg, "raster", seed=7)
    x = random_images(BATCH, k, seed=3)
    decided = np.zeros(D, bool)
    decided[m.ordering.perm[:1]] = True
    out = continue_run(m, x, decided, m.ordering, generator=torch.Generator().manual_seed(1)).double()
    gen = torch.Generator().manual_seed(1)
    want = x.clone()
    want[:, ~torch.as_tensor(decided)] = 0
    for pixel in m.ordering.perm[1:].tolist():
        params = m.logits(want)[:, pixel]
        u = torch.rand(BATCH, generator=gen)
        want[:, pixel] = m.dist_head.sample(params, u).double() if k > 2 else (u < torch.sigmoid(params)).double()
    np.testing.assert_array_equal(out.numpy(), want.numpy())


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_importance_sampled_inpainting_of_the_marginal(label, family, cfg, k):
    """log p(x_H | x_K) of the marginal: the estimate with many samples meets the exact sum over
    the hidden pixel's values."""
    m = make(family, cfg, "raster", seed=8)
    hidden = np.zeros(D, bool)
    hidden[m.ordering.perm[0]] = True  # the first pixel hidden: the rest come after it, so no exact method
    x = random_images(2, k, seed=4)
    est, _method, _ess = conditional_log_prob(m, x, hidden, method="importance", samples=3000,
                                              generator=torch.Generator().manual_seed(0))
    alts = x.repeat_interleave(k, 0)
    alts[:, m.ordering.perm[0]] = torch.arange(k, dtype=x.dtype).repeat(2)
    log_known = torch.logsumexp(m.log_prob(alts).view(2, k), 1)
    exact = m.log_prob(x) - log_known
    torch.testing.assert_close(est.double(), exact, atol=0.08, rtol=0)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_entropy_coding_under_the_marginal(label, family, cfg, k):
    m = make(family, cfg, "raster", seed=9)
    x = all_images(k)[:: max(1, k ** D // 40)].numpy().astype(np.uint8).reshape(-1, 2, 2)
    codec = Codec(m, chunk_size=16)
    data, ideal = codec.encode_detailed(x)
    np.testing.assert_array_equal(decompress(m, data), x)
    exact_bits = -m.log_prob(torch.as_tensor(x.reshape(len(x), -1), dtype=torch.float64)).detach().numpy() / math.log(2)
    np.testing.assert_allclose(ideal, exact_bits, atol=0.01)  # -log2 p(x) of the marginal (quantised probabilities)


@pytest.mark.parametrize("label,family,cfg,k", CASES, ids=IDS)
def test_the_influence_reference_under_a_class_and_the_marginal(label, family, cfg, k):
    m = make(family, cfg, "raster", seed=10)
    x = random_images(1, k, seed=5).numpy()
    pixel = int(m.ordering.perm[-1])
    for y in (None, 1):
        fast = _drain(pixel_influence_steps(m, x, pixel, fast=True, y=y))
        ref = _drain(pixel_influence_steps(m, x, pixel, fast=False, y=y))
        np.testing.assert_allclose(ref.delta, fast.delta, atol=1e-9)
        assert ref.p == pytest.approx(float(m.conditionals(x, y=y).detach()[0, pixel]), abs=1e-12)
        flipped = x.copy()
        j = int(m.ordering.perm[0])
        flipped[0, j] = (k - 1) - flipped[0, j]
        want = float(m.conditionals(x, y=y).detach()[0, pixel] - m.conditionals(flipped, y=y).detach()[0, pixel])
        assert ref.delta.reshape(-1)[j] == pytest.approx(want, abs=1e-12)


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
