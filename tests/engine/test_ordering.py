"""Orderings: property tests (hypothesis) for every named ordering, explicit permutations and
known-first reordering, plus the geometry of the path-like orderings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ordering import (
    ORDERING_DESCRIPTIONS,
    ORDERING_NAMES,
    Ordering,
    OrderingError,
    _hilbert,
    _hilbert_by_walking,
    known_first,
    make_ordering,
    parse_ordering,
    scan_orderings,
)

sizes = st.tuples(st.integers(1, 12), st.integers(1, 12))
names = st.sampled_from(ORDERING_NAMES)
seeds = st.integers(0, 2**40)


def _steps(o: Ordering) -> np.ndarray:
    """Manhattan length of every move of the path (step t -> step t+1)."""
    r, c = np.divmod(o.perm, o.width)
    return np.abs(np.diff(r)) + np.abs(np.diff(c))


@settings(max_examples=150, deadline=None)
@given(name=names, hw=sizes, seed=seeds)
def test_every_ordering_is_a_permutation_with_its_inverse(name, hw, seed):
    h, w = hw
    o = make_ordering(name, h, w, seed=seed)
    n = h * w
    assert sorted(o.perm.tolist()) == list(range(n))
    assert np.array_equal(o.inverse[o.perm], np.arange(n))
    assert np.array_equal(o.perm[o.inverse], np.arange(n))
    grid = o.step_grid()
    assert grid.shape == (h, w) and np.array_equal(grid.reshape(-1), o.inverse)
    p = int(o.perm[n // 2])
    assert np.array_equal(o.predecessors(p), o.perm[: n // 2])
    assert not o.perm.flags.writeable and not o.inverse.flags.writeable
    assert name in ORDERING_DESCRIPTIONS


@settings(max_examples=150, deadline=None)
@given(name=names, hw=sizes, seed=seeds)
def test_json_round_trip_and_spec(name, hw, seed):
    h, w = hw
    o = make_ordering(name, h, w, seed=seed)
    back = Ordering.from_json(json.dumps(json.loads(o.to_json())))
    assert back == o and hash(back) == hash(o)
    assert back.name == o.name and back.label == o.label
    # named orderings are stored compactly (no full permutation)
    assert "perm" not in o.to_dict()
    assert parse_ordering(o.spec, h, w) == o
    assert parse_ordering(o.to_json(), h, w) == o


@settings(max_examples=100, deadline=None)
@given(hw=sizes, data=st.data())
def test_explicit_permutation_round_trips(hw, data):
    h, w = hw
    perm = data.draw(st.permutations(list(range(h * w))))
    o = Ordering("explicit", h, w, np.array(perm))
    d = json.loads(o.to_json())
    assert d["perm"] == list(perm)
    assert Ordering.from_json(o.to_json()) == o


def test_hand_made_ordering_under_a_builder_name_keeps_its_permutation():
    perm = np.arange(12)[::-1].copy()
    for name in ("raster", "random"):
        o = Ordering(name, 3, 4, perm)
        assert Ordering.from_dict(o.to_dict()) == o


@settings(max_examples=150, deadline=None)
@given(name=names, hw=sizes, seed=seeds, data=st.data())
def test_known_first_keeps_both_groups_in_order(name, hw, seed, data):
    h, w = hw
    o = make_ordering(name, h, w, seed=seed)
    known = np.array(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w)))
    k = known_first(o, known)
    nk = int(known.sum())
    assert set(k.perm[:nk].tolist()) == set(np.flatnonzero(known).tolist())
    # each group in the order of the original ordering
    assert np.all(np.diff(o.inverse[k.perm[:nk]]) > 0)
    assert np.all(np.diff(o.inverse[k.perm[nk:]]) > 0)
    assert Ordering.from_json(k.to_json()) == k
    with pytest.raises(OrderingError, match="known mask"):
        known_first(o, np.ones(h * w + 1, bool))


@pytest.mark.parametrize(
    "perm, message",
    [
        ([0, 1, 2, 2], "not a permutation"),
        ([0, 1, 2], "needs 4 entries"),
        ([0, 1, 2, 4], r"lie in \[0, 3\]"),
        ([0, 1, 2, -1], r"lie in \[0, 3\]"),
        ([0.0, 1.5, 2.0, 3.0], "whole numbers"),
        ([0, 1, 2, float("nan")], "whole numbers"),
        (["a", "b", "c", "d"], "whole numbers"),
        ([[0, 1], [2, 3]], "needs 4 entries"),
    ],
)
def test_bad_explicit_permutations_are_clear_errors(perm, message):
    with pytest.raises(OrderingError, match=message):
        Ordering("explicit", 2, 2, np.array(perm))


@pytest.mark.parametrize(
    "text, message",
    [
        ("zigzag", "unknown ordering 'zigzag'; choose one of"),
        ("random:x", "seed must be an integer"),
        ("random:-2", "non-negative"),
        ("raster:3", "takes no argument"),
        ("{not json", "not valid JSON"),
        ('{"name": "raster"}', "lacks a valid name/height/width"),
        ('{"name": "explicit", "height": 2, "width": 2, "perm": [0, "x", 1, 2]}', "list of integers"),
        ('{"name": "raster", "height": 100000, "width": 100000}', "a 100000x100000 image; the images here are 2x2"),
        ('{"name": ["raster"], "height": 2, "width": 2}', "must be a string"),
        ('{"name": "random", "height": 2, "width": 2, "seed": [1]}', "seed must be an integer"),
    ],
)
def test_bad_specs_are_clear_errors(text, message):
    with pytest.raises(OrderingError, match=message):
        parse_ordering(text, 2, 2)


def test_a_json_ordering_of_any_size_is_bounded():
    with pytest.raises(OrderingError, match="larger than an ordering may be"):
        Ordering.from_json('{"name": "raster", "height": 100000, "width": 100000}')


def test_json_that_is_not_an_object():
    with pytest.raises(OrderingError, match="JSON object"):
        Ordering.from_json("[1, 2]")


def test_bad_sizes():
    with pytest.raises(OrderingError, match="positive"):
        make_ordering("raster", 0, 3)


@pytest.mark.parametrize("name", ["snake", "column-snake", "spiral-in", "spiral-out"])
@pytest.mark.parametrize("hw", [(28, 28), (5, 7), (1, 6), (6, 1), (4, 4)])
def test_path_orderings_always_move_to_a_neighbour(name, hw):
    o = make_ordering(name, *hw)
    assert np.all(_steps(o) == 1)


def test_spirals_start_at_the_border_and_the_centre():
    o_in, o_out = make_ordering("spiral-in"), make_ordering("spiral-out")
    assert o_in.perm[0] == 0  # top-left corner
    r, c = divmod(int(o_out.perm[0]), 28)
    assert 12 <= r <= 15 and 12 <= c <= 15  # the centre
    assert np.array_equal(o_out.perm, o_in.perm[::-1])


def test_hilbert_is_local_on_28x28():
    o = make_ordering("hilbert")
    steps = _steps(o)
    jumps = int((steps != 1).sum())
    # The 32x32 curve is cropped to 28x28: it leaves the image 5 times and comes back.
    print(f"hilbert 28x28: {jumps} of {len(steps)} moves are not to a neighbouring pixel")
    assert jumps == 5
    # on a power-of-two square it is a true Hilbert curve: every move is to a neighbour
    assert np.all(_steps(make_ordering("hilbert", 16, 16)) == 1)
    # and it is local: any 4x4 aligned block is visited in 16 consecutive steps
    o16 = make_ordering("hilbert", 16, 16)
    blocks = (o16.perm // 16 // 4) * 4 + (o16.perm % 16) // 4
    assert all(len(set(blocks[i : i + 16].tolist())) == 1 for i in range(0, 256, 16))


def test_diagonal_and_column():
    o = make_ordering("diagonal", 3, 3)
    r, c = np.divmod(o.perm, 3)
    assert np.all(np.diff(r + c) >= 0)
    assert make_ordering("column", 2, 3).perm.tolist() == [0, 3, 1, 4, 2, 5]


def test_random_is_rebuilt_from_its_seed():
    a, b = make_ordering("random", seed=7), make_ordering("random", seed=7)
    assert a == b and a != make_ordering("random", seed=8)
    assert a.label == "random (seed 7)" and a.spec == "random:7"


@pytest.mark.parametrize("hw", [(28, 28), (5, 7), (1, 6)])
def test_random_rows_walk_whole_rows_from_the_top_in_a_seeded_direction(hw):
    h, w = hw
    o = parse_ordering("random-rows:11", h, w)
    assert o == make_ordering("random-rows", h, w, seed=11) and o.spec == "random-rows:11"
    assert o.label == "random-rows (seed 11)" and "perm" not in o.to_dict()
    assert Ordering.from_json(o.to_json()) == o
    r, c = np.divmod(o.perm, w)
    assert np.array_equal(r, np.repeat(np.arange(h), w))  # row after row, top to bottom
    steps = np.diff(c.reshape(h, w), axis=1)
    assert np.all((steps == 1).all(axis=1) | (steps == -1).all(axis=1)) if w > 1 else True
    # the seed draws the directions: among a few seeds, rows go both ways and orderings differ
    many = [make_ordering("random-rows", 28, 28, seed=s) for s in range(8)]
    assert len(set(many)) == 8
    firsts = {int(x.perm[0]) for x in many}
    assert firsts == {0, 27}
    with pytest.raises(OrderingError, match="non-negative"):
        parse_ordering("random-rows:-1")


@pytest.mark.parametrize("hw", [(28, 28), (5, 7), (4, 3)])
def test_scan_orderings_are_sixteen_line_scans_from_the_corners(hw):
    h, w = hw
    scans = scan_orderings(h, w)
    assert len(scans) == 16 and len(set(scans)) == 16
    assert scans[0] == make_ordering("raster", h, w)
    for name in ("column", "snake", "column-snake"):
        assert make_ordering(name, h, w) in scans
    corners = {0, w - 1, (h - 1) * w, h * w - 1}
    for o in scans:
        assert int(o.perm[0]) in corners, o.name
        r, c = np.divmod(o.perm, w)
        by_rows = o.name.split("/")[0] in ("raster", "snake")
        line, pos, length = (r, c, w) if by_rows else (c, r, h)
        # the image is walked one whole line (row or column) at a time
        lines = line.reshape(-1, length)
        assert np.all(lines == lines[:, :1]) and len(set(lines[:, 0].tolist())) == lines.shape[0]
        assert np.all(np.abs(np.diff(pos.reshape(-1, length), axis=1)) == 1)
        if "snake" in o.name:
            assert np.all(_steps(o) == 1)
        # JSON keeps it exactly
        assert Ordering.from_json(o.to_json()) == o


def test_corner_variants_of_the_scans_are_named_orderings():
    o = parse_ordering("snake/turn")
    assert o.name == "snake/turn" and "perm" not in o.to_dict()  # rebuilt from its name
    assert Ordering.from_json(o.to_json()) == o
    assert o == parse_ordering("snake/turn", 28, 28) and o in scan_orderings()
    # half a turn of the snake: the bottom-right pixel comes first
    assert int(o.perm[0]) == 28 * 28 - 1
    m = parse_ordering("column/mirror", 3, 4)
    assert m.perm[:3].tolist() == [3, 7, 11]  # the rightmost column, top to bottom
    for bad in ("hilbert/turn", "raster/spin", "raster/"):
        with pytest.raises(OrderingError, match="unknown ordering"):
            parse_ordering(bad)


@pytest.mark.parametrize("hw", [(28, 28), (1, 1), (1, 2), (5, 7), (16, 16), (31, 9), (3, 64), (64, 3), (100, 100)])
def test_hilbert_computed_per_pixel_equals_the_walk_of_the_whole_curve(hw):
    """The per-pixel Hilbert order is the very permutation checkpoints were trained with."""
    assert np.array_equal(_hilbert(*hw), _hilbert_by_walking(*hw))


def test_an_absurd_strip_is_bounded_work():
    """hilbert on 1 x 2**20 walked 2**40 curve steps (killed after minutes); per pixel it is 2**20."""
    import time

    t0 = time.perf_counter()
    o = make_ordering("hilbert", 1, 1 << 20)
    assert np.array_equal(o.perm, np.arange(1 << 20)) and time.perf_counter() - t0 < 30
    with pytest.raises(OrderingError, match="larger than an ordering may be"):
        make_ordering("hilbert", 1, (1 << 20) + 1)


@pytest.mark.parametrize("desc", [
    {"name": "hilbert", "height": 1, "width": 1 << 20},
    {"name": "hilbert", "height": 1 << 30, "width": 1 << 30},
    {"name": "raster", "height": 27, "width": 29},
    {"name": "explicit", "height": 1, "width": 784, "perm": list(range(784))},
])
def test_a_json_ordering_of_another_image_size_is_refused_before_it_is_built(desc, monkeypatch):
    import engine.ordering as om

    def built(*a, **k):
        raise AssertionError("the ordering was built")

    monkeypatch.setitem(om._BUILDERS, "hilbert", built)
    monkeypatch.setitem(om._BUILDERS, "raster", built)
    with pytest.raises(OrderingError, match="the images here are 28x28"):
        parse_ordering(json.dumps(desc), 28, 28)
    with pytest.raises(OrderingError, match="the images here are 28x28"):
        Ordering.from_json(json.dumps(desc), 28, 28)


def test_deeply_nested_json_ordering_is_an_ordering_error():
    with pytest.raises(OrderingError, match="nests deeper than"):
        parse_ordering('{"name": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(OrderingError, match="nests deeper than"):
        Ordering.from_json("[" * 100000)
