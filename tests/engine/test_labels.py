"""Labels of the binarized split: the bundled file (size, checksum, refusal of a damaged copy) and a
re-check of 200 images per split against ``../shared/data/mnist``, computed here independently of
scripts/recover_labels.py: each sampled binarized image's label must be the label of the MNIST image
under which it is most likely (pixels Bernoulli(grey/255))."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.labels as labels
from engine.data import DataError, load_split
from engine.labels import LABELS_FILE, SHA256, binarized_label_splits, binarized_labels
from engine.mnist import load_file

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT.parent / "shared" / "data").resolve()
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_label_file_is_small_plain_and_verified():
    blob = LABELS_FILE.read_bytes()
    assert len(blob) == 70_000 <= 100_000
    assert hashlib.sha256(blob).hexdigest() == SHA256
    splits = binarized_label_splits()
    assert {s: len(y) for s, y in splits.items()} == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert b"".join(y.astype(np.uint8).tobytes() for y in splits.values()) == blob  # train, valid, test, one byte each
    for split, y in splits.items():
        assert y.dtype == np.int64 and 0 <= y.min() and y.max() <= 9
        assert np.array_equal(binarized_labels(split), y)
    # the binarized test split is the MNIST test set ordered by class: the same counts, in order
    assert list(np.bincount(splits["test"], minlength=10)) == TEST_COUNTS
    assert np.all(np.diff(splits["test"]) >= 0)
    # train + valid come from the 60,000 MNIST training images, one to one
    assert list(np.bincount(np.concatenate([splits["train"], splits["valid"]]), minlength=10)) == TRAIN_COUNTS


@pytest.mark.parametrize("damage", ["altered", "truncated", "missing"])
def test_damaged_label_file_is_refused(tmp_path, damage):
    blob = LABELS_FILE.read_bytes()
    path = tmp_path / "labels.bin"
    if damage == "altered":
        path.write_bytes(blob[:123] + bytes([(blob[123] + 1) % 10]) + blob[124:])
    elif damage == "truncated":
        path.write_bytes(blob[:-1])
    with pytest.raises(DataError) as e:
        binarized_labels("test", path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert ("cannot read" if damage == "missing" else "altered or truncated") in msg


def test_unknown_split_is_refused():
    with pytest.raises(DataError, match="unknown split 'training'"):
        binarized_labels("training")


def _best_match_labels(b: np.ndarray, grey: np.ndarray, grey_labels: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """The label of the most likely grey image for each binarized row (float32 log-likelihoods)."""
    p = np.clip(grey.reshape(len(grey), -1).astype(np.float64) / 255.0, eps, 1 - eps)
    log_on, log_off = torch.from_numpy(np.log(p)).float(), torch.from_numpy(np.log1p(-p)).float()
    bt = torch.from_numpy(b).float()
    ll = bt @ log_on.T + (1 - bt) @ log_off.T  # (n, M)
    return grey_labels[ll.argmax(dim=1).numpy()]


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_sample_of_200_matches_mnist(split, data_dir):
    if not (SHARED / "mnist").is_dir():
        pytest.skip("the shared MNIST folder is missing")
    source = "test" if split == "test" else "train"
    grey = load_file(f"{source}-images", SHARED)
    grey_labels = load_file(f"{source}-labels", SHARED)
    b = load_split(split, data_dir)
    rows = np.sort(np.random.default_rng(28).choice(len(b), size=200, replace=False))
    recovered = binarized_labels(split)[rows]
    assert np.array_equal(recovered, _best_match_labels(b[rows], grey, grey_labels))
    assert len(set(recovered.tolist())) == 10  # the sample covers every digit: the check is not vacuous


def test_labels_file_is_found_in_the_resources_package():
    import resources

    assert LABELS_FILE == Path(resources.__file__).resolve().parent / "labels" / "binarized_mnist_labels.bin"
    assert labels.SPLIT_SIZES == {"train": 50_000, "valid": 10_000, "test": 10_000}


def _recover_script():
    spec = importlib.util.spec_from_file_location("recover_labels_script", ROOT / "scripts" / "recover_labels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recovery_finds_each_source_and_resolves_ties():
    """scripts/recover_labels.py on made-up digits: each sample is matched to the image it was drawn
    from; an exact duplicate with the same label is a case resolved as such, one with another label is
    reported as a case whose label is in doubt."""
    script = _recover_script()
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, size=(40, 784)).astype(np.uint8)
    grey[:, :200] = 0  # a background, as in MNIST
    grey_labels = (np.arange(40) % 10).astype(np.uint8)
    grey[27] = grey[37]  # the same image twice, both 7s
    grey[39] = grey[38]  # the same image as an 8 and as a 9
    source = np.concatenate([[37, 38], rng.permutation(np.setdiff1d(np.arange(40), [27, 37, 38, 39]))[:20]])
    b = (rng.random((len(source), 784)) < grey[source] / 255.0).astype(np.uint8)
    out = script.recover(b, grey, grey_labels, eps=1e-3, ambiguous=10.0, chunk=7)
    assert np.array_equal(out["index"][2:], source[2:]) and np.all(out["margin"][2:] > 100)
    assert np.array_equal(out["labels"][2:], grey_labels[source[2:]])
    cases = {c["image"]: c for c in out["cases"]}
    assert sorted(cases) == [0, 1]
    assert cases[0]["resolution"] == "same label" and cases[0]["label"] == 7 and sorted(cases[0]["candidates"]) == [27, 37]
    assert cases[1]["resolution"].startswith("labels differ") and sorted(cases[1]["labels"]) == [8, 9]
    assert out["label_margin"][1] == 0.0 and out["label_margin"][0] > 100
    text = script.report({"test": out}, {"test": grey_labels}, 1e-3, 10.0, "0" * 64, 1.0, Path("x.bin"))
    assert "- test image 1: MNIST test images" in text and "labels differ: the best match's label taken" in text
