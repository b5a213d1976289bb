"""Continuing and forking a sampling run of a grey model (engine.sampling at K > 2 levels): the
continuation draws levels with the model's head, exactly as the uninterrupted run does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.sampling import ForkPoint, continue_fork, continue_run, generator_at

from .test_levels import CASES, IDS, D, K, make

SEED, BATCH = 5, 3


def _finish(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


@pytest.mark.parametrize("label,family,cfg", CASES, ids=IDS)
def test_a_grey_run_continued_or_forked_is_the_run_itself(label, family, cfg):
    model = make(family, cfg, seed=31)
    full = model.sample(BATCH, generator=torch.Generator().manual_seed(SEED)).numpy()
    assert set(np.unique(full)) <= set(range(K)) and len(set(np.unique(full))) > 1
    order = model.sampling_ordering(None, None)
    k = 2
    decided = np.zeros(D, bool)
    decided[order.perm[:k]] = True
    x = np.where(decided, full, 0.0)
    out = continue_run(model, x, decided, order, generator=generator_at(SEED, k, BATCH)).numpy()
    np.testing.assert_array_equal(out, full, err_msg=label)
    # a fork of row 1 with a drawn pixel set to another level: row 0 is the run's image, row 1 keeps the edit
    point = ForkPoint(prefix=x[1].astype(np.float32), decided=decided, ordering=order, draws=k, batch=BATCH,
                      seed=SEED, temperature=1.0, row=1)
    edited = point.prefix.copy()
    p = int(order.perm[0])
    edited[p] = (edited[p] + 1) % K
    pair = _finish(continue_fork(model, point, edited))
    np.testing.assert_array_equal(pair[0], full[1])
    assert pair[1][p] == edited[p] and set(np.unique(pair[1])) <= set(range(K))
    # the forked row is the inpainting of the pending pixels with the run's own random numbers
    ref = model.inpaint(decided, edited, n=BATCH, ordering=order, generator=generator_at(SEED, k, BATCH)).numpy()[1]
    np.testing.assert_array_equal(pair[1], ref)
