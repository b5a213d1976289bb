"""Continuing and forking a sampling run (engine.sampling) for every family's tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.sampling import ForkPoint, continue_fork, continue_run, continue_steps, generator_at

from .tiny import all_tiny, make_tiny

TINY = all_tiny()
SEED = 11
BATCH = 3
D = 8


def _run_until(model, k: int, *, known=None, values=None, ordering=None):
    """Run a sampler and stop after ``k`` generated pixels: (images then, sampling ordering, the
    generator as it stood, the run's final images when left alone)."""
    gen = torch.Generator().manual_seed(SEED)
    full = model.sample(BATCH, known=known, values=values, ordering=ordering, generator=gen).numpy()
    gen = torch.Generator().manual_seed(SEED)
    steps = model.sample_steps(BATCH, known=known, values=values, ordering=ordering, generator=gen)
    for st in steps:
        if st.index == k - 1:
            x = st.x.clone().numpy()
            break
    state = gen.get_state()
    steps.close()
    order = model.sampling_ordering(None if known is None else np.asarray(known), ordering)
    return x, order, state, full


def _decided(order, k: int, known=None) -> np.ndarray:
    dec = np.zeros(D, bool) if known is None else np.asarray(known, bool).copy()
    pending = order.perm[~dec[order.perm]]
    dec[pending[:k]] = True
    return dec


@pytest.mark.parametrize("label,family,cfg", TINY, ids=[t[0] for t in TINY])
def test_continuing_from_a_fork_point_gives_the_unforked_run(label, family, cfg):
    model = make_tiny(family, cfg, "raster", seed=21)
    for k in (1, 3, 6):
        x, order, state, full = _run_until(model, k)
        decided = _decided(order, k)
        gen = torch.Generator()
        gen.set_state(state)
        out = continue_run(model, x, decided, order, generator=gen)
        np.testing.assert_array_equal(out.numpy(), full, err_msg=f"{label}: continued from step {k}")
        # the generator rebuilt from the seed is the one the run left behind
        replayed = continue_run(model, x, decided, order, generator=generator_at(SEED, k, BATCH))
        np.testing.assert_array_equal(replayed.numpy(), full)
        assert torch.equal(generator_at(SEED, k, BATCH).get_state(), state)


@pytest.mark.parametrize("label,family,cfg", TINY, ids=[t[0] for t in TINY])
def test_continuing_an_inpainting_run(label, family, cfg):
    model = make_tiny(family, cfg, "raster", seed=22)
    known = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
    values = np.array([1, 0, 0, 0, 0, 1, 0, 0], np.float64)
    x, order, _state, full = _run_until(model, 2, known=known, values=values)
    out = continue_run(model, x, _decided(order, 2, known), order, generator=generator_at(SEED, 2, BATCH))
    np.testing.assert_array_equal(out.numpy(), full)
    np.testing.assert_array_equal(out.numpy()[:, known], np.broadcast_to(values[known], (BATCH, known.sum())))


@pytest.mark.parametrize("label,family,cfg", TINY, ids=[t[0] for t in TINY])
def test_a_fork_with_an_edited_pixel_and_another_temperature_is_a_valid_run(label, family, cfg):
    model = make_tiny(family, cfg, "raster", seed=23)
    k = 4
    x, order, _state, full = _run_until(model, k)
    decided = _decided(order, k)
    point = ForkPoint(prefix=x[1].astype(np.float32), decided=decided, ordering=order, draws=k, batch=BATCH,
                      seed=SEED, temperature=1.0, row=1)
    drawn = order.perm[:k]
    pending = order.perm[k:]
    edited = point.prefix.copy()
    edited[drawn[1]] = 1 - edited[drawn[1]]  # a drawn pixel changed
    edited[pending[-1]] = 1.0  # a pending pixel set by hand
    steps = continue_fork(model, point, edited, temperature=0.6)
    seen = []
    try:
        while True:
            st = next(steps)
            seen.append(st.pixel)
    except StopIteration as stop:
        out = stop.value
    assert out.shape == (2, D) and set(np.unique(out)) <= {0.0, 1.0}
    assert seen == pending.tolist()  # every pending pixel once, in the run's ordering
    # nothing decided changes, and the hand-set pixel keeps its value
    np.testing.assert_array_equal(out[0][decided], point.prefix[decided])
    np.testing.assert_array_equal(out[1][decided], edited[decided])
    assert out[1][pending[-1]] == 1.0
    # each row is exactly an inpainting run of the pending pixels with the run's own random numbers
    for r, img in enumerate((point.prefix, edited)):
        ref = model.inpaint(decided, img, n=BATCH, ordering=order, temperature=0.6,
                            generator=generator_at(SEED, k, BATCH)).numpy()[1]
        if r == 1:  # the hand-set pixel comes last: inpainting draws it, the fork keeps it
            ref[pending[-1]] = 1.0
        np.testing.assert_array_equal(out[r], ref)
    # at the run's temperature and without an edit, row 0 is the run's own image
    same = continue_fork(model, point, point.prefix)
    try:
        while True:
            next(same)
    except StopIteration as stop:
        np.testing.assert_array_equal(stop.value[0], full[1])
        np.testing.assert_array_equal(stop.value[1], full[1])


def test_bad_arguments_are_refused():
    model = make_tiny("fvsbn", {}, "raster")
    x = np.zeros((1, D))
    with pytest.raises(ValueError, match="temperature"):
        next(continue_steps(model, x, np.zeros(D, bool), model.ordering, generator=torch.Generator(), temperature=0))
    with pytest.raises(ValueError, match="known mask"):
        next(continue_steps(model, x, np.zeros(3, bool), model.ordering, generator=torch.Generator()))
    with pytest.raises(ValueError, match="rows"):
        next(continue_steps(model, x, np.zeros(D, bool), model.ordering, generator=torch.Generator(), rows=[5], batch=2))
    with pytest.raises(ValueError):
        generator_at(0, -1, 2)
