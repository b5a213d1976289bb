"""engine.datasets: both data sets behind one name, the folders each loader accepts, the record a
checkpoint keeps of its data set; the K-level marginals training starts from; grey PNG grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine import data as binarized
from engine import mnist
from engine.data import DataError, find_data_dir
from engine.datasets import DATASETS, check_dataset, data_record, dataset_of, describe, load_dataset, load_labels
from engine.images import save_grid, save_png
from engine.labels import binarized_labels
from engine.models import build_model
from engine.train import TrainConfig, TrainingError, marginals, train


# ------------------------------------------------------------------------------------ folders
def test_a_folder_of_both_data_sets_serves_the_binarized_loader(shared_data, data_dir, monkeypatch):
    assert find_data_dir(shared_data) == (shared_data / "binarized_mnist", False)
    assert find_data_dir(data_dir) == (data_dir, False)  # a folder of the binarized files alone keeps working
    monkeypatch.setenv("PIXELCHAIN_DATA", str(shared_data))
    assert find_data_dir() == (shared_data / "binarized_mnist", False)
    np.testing.assert_array_equal(binarized.load_split("valid"), binarized.load_split("valid", data_dir))


def test_the_binarized_folder_is_used_only_where_it_holds_the_files(tmp_path):
    (tmp_path / "binarized_mnist").mkdir()
    assert find_data_dir(tmp_path)[0] == tmp_path  # an empty binarized_mnist/: the error names the folder given
    with pytest.raises(DataError, match=str(tmp_path)):
        binarized.load_split("valid", tmp_path)
    (tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat").write_text("0 " * 784 + "\n")
    assert find_data_dir(tmp_path)[0] == tmp_path / "binarized_mnist"
    (tmp_path / "binarized_mnist_test.amat").write_text("0 " * 784 + "\n")
    assert find_data_dir(tmp_path)[0] == tmp_path  # files of its own: the folder itself


def test_every_folder_form_gives_the_same_images(shared_data):
    a = load_dataset("binarized-mnist", "valid", shared_data)
    np.testing.assert_array_equal(a, load_dataset("binarized-mnist", "valid", shared_data / "binarized_mnist"))
    g = load_dataset("mnist", "valid", shared_data, levels=16)
    np.testing.assert_array_equal(g, load_dataset("mnist", "valid", shared_data / "mnist", levels=16))


# ------------------------------------------------------------------------------------- images
def test_binarized_mnist_is_the_static_binarized_split(shared_data, data_dir):
    x = load_dataset("binarized-mnist", "test", shared_data)
    assert x.dtype == np.uint8 and x.shape == (10_000, 784)
    np.testing.assert_array_equal(x, binarized.load_split("test", data_dir))


@pytest.mark.parametrize("levels", [2, 4, 8, 16, 256])
def test_mnist_is_quantised_at_the_levels_asked_for(shared_data, levels):
    grey = mnist.load_split("valid", shared_data)
    x = load_dataset("mnist", "valid", shared_data, levels=levels)
    assert x.dtype == np.uint8 and x.shape == (10_000, 784)
    np.testing.assert_array_equal(x, grey.astype(np.int64) * levels // 256)
    assert set(np.unique(x)) == set(range(levels)) if levels <= 16 else x.max() == 255


def test_mnist_at_two_levels_is_a_threshold_not_the_binarized_set(shared_data):
    x = load_dataset("mnist", "test", shared_data, levels=2)
    np.testing.assert_array_equal(x, mnist.load_split("test", shared_data) >= 128)
    assert (x != load_dataset("binarized-mnist", "test", shared_data)).mean() > 0.01  # Bernoulli draws differ


@pytest.mark.parametrize(
    "dataset, levels, match",
    [
        ("binarized-mnist", 4, "binarized-mnist has 2 pixel levels, not 4"),
        ("mnist", 3, "pixel levels must be one of 2, 4, 8, 16, 256"),
        ("mnist", 0, "pixel levels must be one of"),
        ("cifar", 2, "unknown data set 'cifar'; choose one of binarized-mnist, mnist"),
    ],
)
def test_impossible_data_sets_are_one_line_errors(dataset, levels, match, shared_data):
    with pytest.raises(DataError, match=match) as info:
        load_dataset(dataset, "valid", shared_data, levels=levels)
    assert "\n" not in str(info.value)


def test_a_bad_split_is_refused(shared_data):
    for dataset in DATASETS:
        with pytest.raises(DataError, match="unknown split 'dev'"):
            load_dataset(dataset, "dev", shared_data)


def test_labels_follow_the_images_of_each_data_set(shared_data):
    for split, n in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
        b, g = load_labels("binarized-mnist", split), load_labels("mnist", split, shared_data)
        assert b.dtype == g.dtype == np.int64 and len(b) == len(g) == n
        np.testing.assert_array_equal(b, binarized_labels(split))
        np.testing.assert_array_equal(g, mnist.load_labels(split, shared_data))
    # the binarized test split draws from MNIST's test images (in another order): the same digits
    counts = np.bincount(load_labels("binarized-mnist", "test"))
    np.testing.assert_array_equal(counts, np.bincount(load_labels("mnist", "test", shared_data)))


# ----------------------------------------------------------------------- a checkpoint's record
def test_the_data_set_of_a_checkpoint(tmp_path):
    assert dataset_of({"dataset": "mnist", "config": {"levels": 2}}) == "mnist"
    assert dataset_of({"dataset": "binarized-mnist"}) == "binarized-mnist"
    assert dataset_of({"family": "made", "config": {"hidden": 5}}) == "binarized-mnist"  # before data sets were recorded
    assert dataset_of({"config": {"levels": 16}}) == "mnist"  # grey levels come from mnist only
    with pytest.raises(DataError, match="unknown data set 'svhn'"):
        dataset_of({"dataset": "svhn"})


def test_the_data_record_names_the_files_and_levels():
    assert data_record("binarized-mnist") == {"name": "binarized_mnist",
                                              "checksums": {s: binarized.CHECKSUMS[s] for s in ("train", "valid")}}
    rec = data_record("mnist", 16)
    assert rec["name"] == "mnist" and rec["levels"] == 16
    assert rec["md5"] == {mnist.FILES["train-images"].name: mnist.FILES["train-images"].md5,
                          mnist.FILES["train-labels"].name: mnist.FILES["train-labels"].md5}
    assert check_dataset("mnist", np.int64(4)) == ("mnist", 4)
    assert describe("mnist", 16) == "MNIST at 16 levels" and describe("binarized-mnist", 2) == "binarized MNIST"


# ---------------------------------------------------------------------------------- training
def test_marginals_are_level_frequencies():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 2, (50, 6)).astype(np.uint8)
    np.testing.assert_array_equal(marginals(b), b.mean(0))  # binary: unchanged, the frequency of a 1
    x = rng.integers(0, 4, (9000, 6)).astype(np.uint8)  # more rows than one chunk
    m = marginals(x, 4)
    assert m.shape == (6, 4)
    np.testing.assert_allclose(m.sum(1), 1.0)
    np.testing.assert_allclose(m, np.stack([(x == k).mean(0) for k in range(4)], axis=1))
    m256 = marginals(np.array([[0, 255], [255, 255]], np.uint8), 256)
    assert m256[0, 0] == m256[0, 255] == 0.5 and m256[1, 255] == 1.0 and m256.sum() == 2.0


def test_training_starts_a_grey_model_at_its_level_frequencies(shared_data, monkeypatch):
    x = load_dataset("mnist", "valid", shared_data, levels=4)[:300]
    model = build_model("fvsbn", {"levels": 4, "output": "categorical", "height": 28, "width": 28})
    seen = []
    monkeypatch.setattr(model, "init_output_bias", lambda m: seen.append(m.clone()))
    for _ in train(model, x[:200], x[200:], TrainConfig(epochs=1, batch_size=100)):
        pass
    (m,) = seen
    assert m.shape == (784, 4) and m.dtype == torch.float32
    torch.testing.assert_close(m, torch.as_tensor(marginals(x[:200], 4), dtype=torch.float32))


def test_the_divergence_bound_is_a_uniform_model_over_the_levels(shared_data):
    """Training fails with the bound of a uniform model, D ln K, in its message (a loss that is fine
    at K=256 would look diverged against the binary bound)."""
    x = load_dataset("mnist", "valid", shared_data, levels=16)[:200]
    model = build_model("fvsbn", {"levels": 16, "output": "categorical"})
    with torch.no_grad():
        model.bias.fill_(0.0)
        model.bias.view(784, 16)[:, 15] = 60.0  # every pixel sure to be white: far beyond 2 * 784 ln 16
    with pytest.raises(TrainingError, match=f"the {784 * math.log(16):.1f} a uniform model pays"):
        for _ in train(model, x[:100], x[100:], TrainConfig(epochs=1, batch_size=100), init_output_bias=False):
            pass


def test_data_beyond_the_models_levels_is_refused(shared_data):
    x = load_dataset("mnist", "valid", shared_data, levels=4)[:200]
    with pytest.raises(TrainingError, match="the training images hold values from 0 to 3, but the model's pixels have 2 levels"):
        next(iter(train(build_model("fvsbn"), x[:100], x[100:] % 2, TrainConfig(epochs=1))))


# ---------------------------------------------------------------------------------- PNG grids
def _png(path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im.convert("L"))


def test_grey_grids_draw_each_level_at_its_intensity(tmp_path):
    images = np.array([[[0, 1], [2, 3]], [[3, 3], [0, 0]]], np.uint8)
    save_grid(images, tmp_path / "w.png", scale=1, pad=1, ink="white", levels=4)
    mode, a = _png(tmp_path / "w.png")
    assert mode == "L"
    np.testing.assert_array_equal(a[1:3, 1:3], [[0, 85], [170, 255]])
    np.testing.assert_array_equal(a[1:3, 4:6], [[255, 255], [0, 0]])
    save_grid(images, tmp_path / "b.png", scale=1, pad=1, levels=4)  # black ink on white paper
    np.testing.assert_array_equal(_png(tmp_path / "b.png")[1][1:3, 1:3], [[255, 170], [85, 0]])
    levels16 = np.arange(16, dtype=np.uint8).reshape(4, 4)
    save_png(levels16, tmp_path / "g.png", ink="white", levels=16)
    np.testing.assert_array_equal(_png(tmp_path / "g.png")[1], np.round(levels16.astype(np.float64) * 255 / 15))
    save_png(np.arange(256, dtype=np.uint8).reshape(16, 16), tmp_path / "i.png", ink="white", levels=256)
    np.testing.assert_array_equal(_png(tmp_path / "i.png")[1].ravel(), np.arange(256))


def test_binary_pngs_are_unchanged(tmp_path):
    save_png(np.array([[0, 1], [1, 0]], np.uint8), tmp_path / "a.png")
    mode, a = _png(tmp_path / "a.png")
    assert mode == "1"
    np.testing.assert_array_equal(a, [[255, 0], [0, 255]])
