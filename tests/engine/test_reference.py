"""The log-likelihoods of the whole test split, computed once per checkpoint and ordering and cached
on disk (engine/reference.py): read back without model work, recomputed when the cache is altered,
keyed by the checkpoint file's content."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering
from engine.reference import cache_file, checkpoint_sha256, split_log_probs_steps
from engine.steps import drain


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Never the user's cache folder: PIXELCHAIN_CACHE points into the test's folder."""
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(tmp_path / "cache"))


def _images(n: int = 23, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 784)) < 0.3).astype(np.uint8)


def _saved(tmp_path, name: str = "m.safetensors", seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("made", {"hidden": (12,), "order_agnostic": True, "num_masks": 2})
    path = save_checkpoint(tmp_path / name, model, {})
    return load_checkpoint(path).model, path


class _Counting:
    """Counts the model's log_prob calls (its only work here)."""

    def __init__(self, model):
        self.calls = 0
        self.inner = model.log_prob

        def log_prob(*a, **k):
            self.calls += 1
            return self.inner(*a, **k)

        model.log_prob = log_prob


def test_computed_once_then_read_back_without_model_work(tmp_path):
    model, path = _saved(tmp_path)
    key = checkpoint_sha256(path)
    x = _images()
    count = _Counting(model)
    fracs, first = drain(split_log_probs_steps(model, key, images=x, batch_size=10))
    assert count.calls == 3
    assert fracs == pytest.approx([10 / 23, 20 / 23, 1.0]) and fracs == sorted(fracs)
    expected = model.log_prob(torch.as_tensor(x, dtype=torch.float32)).double().detach().numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    count.calls = 0
    fracs, again = drain(split_log_probs_steps(model, key, images=x, batch_size=10))
    assert count.calls == 0 and fracs == [1.0]
    np.testing.assert_array_equal(again, first)  # exactly the stored values
    assert cache_file(key, model.ordering, _checksum(x)).is_file()
    assert str(tmp_path / "cache") in str(cache_file(key, model.ordering, _checksum(x)))


def _checksum(x):
    from engine.data import content_checksum

    return content_checksum(x)


@pytest.mark.parametrize("damage", ["value", "truncate", "checksum", "garbage", "count", "deep", "infinite", "fifo", "huge"])
def test_an_altered_cache_is_recomputed(tmp_path, damage):
    model, path = _saved(tmp_path)
    key = checkpoint_sha256(path)
    x = _images()
    _, first = drain(split_log_probs_steps(model, key, images=x, batch_size=10))
    f = cache_file(key, model.ordering, _checksum(x))
    text = f.read_text()
    d = json.loads(text)
    if damage == "value":
        d["log_probs"][5] += 1.0
        f.write_text(json.dumps(d))
    elif damage == "truncate":
        f.write_text(text[: len(text) // 2])
    elif damage == "checksum":
        d["sha256"] = "0" * 64
        f.write_text(json.dumps(d))
    elif damage == "garbage":
        f.write_bytes(b"\xff\xfe not json")
    elif damage == "count":
        d["log_probs"] = d["log_probs"][:-1]
        d["count"] -= 1
        f.write_text(json.dumps(d))
    elif damage == "deep":
        f.write_text("[" * 10_000 + "]" * 10_000)
    elif damage == "infinite":
        d["log_probs"][0] = float("-inf")
        f.write_text(json.dumps(d))
    elif damage == "fifo":  # reading it would block forever
        f.unlink()
        os.mkfifo(f)
    elif damage == "huge":
        f.write_text(json.dumps(d) + " " * (9 << 20))
    count = _Counting(model)
    fracs, again = drain(split_log_probs_steps(model, key, images=x, batch_size=10))
    assert count.calls == 3 and fracs[-1] == 1.0
    np.testing.assert_array_equal(again, first)
    if damage == "fifo":  # the writer replaces the FIFO by the file
        assert f.is_file()
    # and the recomputed figures are cached again
    count.calls = 0
    drain(split_log_probs_steps(model, key, images=x))
    assert count.calls == 0


def test_the_key_is_the_checkpoint_files_content_and_the_ordering(tmp_path):
    a, pa = _saved(tmp_path, "a.safetensors", seed=0)
    b, pb = _saved(tmp_path, "b.safetensors", seed=1)
    pa2 = tmp_path / "a-copy.safetensors"
    pa2.write_bytes(pa.read_bytes())
    ka, kb = checkpoint_sha256(pa), checkpoint_sha256(pb)
    assert ka != kb and checkpoint_sha256(pa2) == ka  # the content, not the name
    x = _images()
    c = _checksum(x)
    assert cache_file(ka, a.ordering, c) != cache_file(kb, b.ordering, c)
    spiral = make_ordering("spiral-in")
    assert cache_file(ka, a.ordering, c) != cache_file(ka, spiral, c)
    assert cache_file(ka, a.ordering, c) != cache_file(ka, a.ordering, _checksum(_images(seed=1)))
    _, la = drain(split_log_probs_steps(a, ka, images=x))
    count = _Counting(b)
    _, lb = drain(split_log_probs_steps(b, kb, images=x))  # another checkpoint's figures are not read
    assert count.calls == 1 and not np.array_equal(la, lb)
    _, ls = drain(split_log_probs_steps(a, ka, spiral, images=x))  # nor another ordering's
    np.testing.assert_allclose(ls, a.log_prob(torch.as_tensor(x, dtype=torch.float32), spiral).double().detach().numpy(), rtol=1e-6)


def test_grey_images_are_keyed_by_their_levels_not_only_by_which_pixels_are_lit(tmp_path):
    """Two grey sets lit in the same pixels at other levels are two entries: the second is scored,
    not served the first one's figures."""
    torch.manual_seed(0)
    model = build_model("made", {"hidden": (12,), "levels": 4, "output": "categorical", "order_agnostic": True, "num_masks": 2})
    path = save_checkpoint(tmp_path / "g.safetensors", model, {})
    model, key = load_checkpoint(path).model, checkpoint_sha256(path)
    lit = _images() == 1
    dim = np.where(lit, 1, 0).astype(np.uint8)
    bright = np.where(lit, 3, 0).astype(np.uint8)
    assert _checksum(dim) != _checksum(bright)
    assert _checksum(dim) == _checksum(dim.copy())
    packed = np.packbits(_images(), axis=1).tobytes()  # binary sets keep the key of the binarized splits' CHECKSUMS
    assert _checksum(_images()) == hashlib.sha256(packed).hexdigest()
    _, ld = drain(split_log_probs_steps(model, key, images=dim))
    count = _Counting(model)
    _, lb = drain(split_log_probs_steps(model, key, images=bright))
    assert count.calls == 1
    np.testing.assert_allclose(lb, model.log_prob(torch.as_tensor(bright, dtype=torch.float32)).double().detach().numpy(), rtol=1e-6)
    assert not np.allclose(ld, lb)


def test_without_a_checkpoint_nothing_is_cached(tmp_path):
    model, _ = _saved(tmp_path)
    x = _images(5)
    drain(split_log_probs_steps(model, None, images=x))
    assert not (tmp_path / "cache").exists()
    count = _Counting(model)
    drain(split_log_probs_steps(model, None, images=x))
    assert count.calls == 1


def test_a_stopped_run_stores_nothing_and_an_unwritable_folder_is_no_error(tmp_path):
    model, path = _saved(tmp_path)
    key = checkpoint_sha256(path)
    x = _images()
    gen = split_log_probs_steps(model, key, images=x, batch_size=10)
    assert next(gen) == pytest.approx(10 / 23)
    gen.close()
    assert not cache_file(key, model.ordering, _checksum(x)).exists()
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    _, values = drain(split_log_probs_steps(model, key, images=x, folder=blocked / "sub"))
    assert values.shape == (23,)


def test_the_whole_test_split_by_default(tmp_path):
    """No subset: every one of the 10,000 test digits (a fast model)."""
    pytest.importorskip("engine.data")
    from engine.data import DataError, load_split

    try:
        x = load_split("test")
    except DataError:
        pytest.skip("no data")
    model = build_model("fvsbn")
    fracs, values = drain(split_log_probs_steps(model, "f" * 64, batch_size=2500))
    assert values.shape == (len(x),) == (10_000,)
    assert fracs == [0.25, 0.5, 0.75, 1.0]
