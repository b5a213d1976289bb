"""The Bayes classifier of a class-conditional model (engine.classify, `pixelchain classify`), and
the class on the command line: `sample --class N`, `eval` of a conditional model's marginal.

A tiny conditional PixelCNN is trained by the command line for one short epoch on the first
labelled images of binarized MNIST (the command-line paths; it classifies barely above chance), and
one on a synthetic 8x8 set of three noisy prototypes for a few seconds, which it classifies
almost perfectly (the classifier itself)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.classify import ClassifyError, classify, classify_steps, default_chunk
from engine.cli import main
from engine.data import subset
from engine.datasets import load_dataset, load_labels
from engine.models import build_model
from engine.train import TrainConfig, train

TINY = ["--model", "pixelcnn", "--config", '{"channels": 8, "layers": 1, "head": 8}', "--max-train", "300",
        "--max-valid", "100", "--epochs", "1", "--quiet", "--threads", "1"]
N = 60  # test images, drawn across the (class-sorted) test split


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small passes: one torch thread is fastest for them, and leaves the other core alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("classify") / "pcnn-c10.safetensors"
    assert main(["train", *TINY, "--classes", "10", "--out", str(out), "--data", str(data_dir)]) == 0
    return out


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("classify") / "fvsbn.safetensors"
    argv = ["train", "--model", "fvsbn", "--max-train", "200", "--max-valid", "100", "--epochs", "1", "--quiet", "--threads", "1"]
    assert main([*argv, "--out", str(out), "--data", str(data_dir)]) == 0
    return out


def prototypes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8x8 images of three classes (the top rows, the left columns, the two diagonals inked),
    each pixel flipped with probability 0.1, and their labels."""
    protos = np.zeros((3, 8, 8), np.uint8)
    protos[0, :3] = 1
    protos[1, :, :3] = 1
    protos[2] = np.eye(8, dtype=np.uint8) | np.fliplr(np.eye(8, dtype=np.uint8))
    y = rng.integers(0, 3, n)
    return (protos[y].reshape(n, -1) ^ (rng.random((n, 64)) < 0.1)).astype(np.uint8), y


@pytest.fixture(scope="module")
def synthetic():
    """A conditional PixelCNN of 8x8 images trained on :func:`prototypes` (a few seconds), with 150
    fresh test images."""
    rng = np.random.default_rng(0)
    (tx, ty), (vx, vy), test = prototypes(600, rng), prototypes(100, rng), prototypes(150, rng)
    torch.manual_seed(0)
    model = build_model("pixelcnn", dict(height=8, width=8, channels=8, layers=1, head=8, classes=3))
    for _ in train(model, tx, vx, TrainConfig(epochs=3, batch_size=50, lr=1e-2, device="cpu"), train_y=ty, valid_y=vy):
        pass
    return model.eval(), test


def test_the_bayes_classifier_tells_the_classes_apart(synthetic):
    model, (x, y) = synthetic
    r = classify(model, x, y)
    assert r.accuracy >= 0.95 and r.mean_true_posterior > 0.7  # chance: 1/3
    assert r.confusion.sum() == len(y) and np.trace(r.confusion) == int(round(r.accuracy * len(y)))
    assert r.per_class_accuracy == pytest.approx([r.confusion[c, c] / (y == c).sum() for c in range(3)])
    # the marginal NLL is eval's NLL of the model (log p(x) with no class), image by image
    with torch.no_grad():
        lpx = model.log_prob(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(r.log_px, lpx, atol=1e-3)
    assert r.nll_nats == pytest.approx(-lpx.mean(), abs=1e-4)
    # a wrong label for every image: the accuracy drops to the rate at which the model is wrong
    wrong = classify(model, x, (y + 1) % 3)
    assert wrong.accuracy <= 0.05 and wrong.cond_nll_nats > r.cond_nll_nats + 1
    np.testing.assert_array_equal(wrong.predictions, r.predictions)


def _test_images(data_dir):
    x = load_dataset("binarized-mnist", "test", data_dir)
    y = load_labels("binarized-mnist", "test", data_dir)
    x, index = subset(x, N, random=True, seed=0)
    return x, y[index]


def test_classify_json_matches_a_direct_computation(conditional, data_dir, capsys):
    capsys.readouterr()
    assert main(["classify", str(conditional), "--json", "--max-images", str(N), "--random-subset", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "nll_nats", "bits_per_dim", "confusion", "n_images", "dataset", "levels", "checkpoint",
                "cond_nll_nats", "per_class_accuracy", "mean_true_posterior", "classes"):
        assert key in res, key
    assert res["n_images"] == N and res["dataset"] == "binarized-mnist" and res["levels"] == 2 and res["classes"] == 10
    assert res["checkpoint"] == str(conditional)
    conf = np.array(res["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == N

    # the same figures from the model directly: log p(x | y) for each class, Bayes' rule, argmax
    model = load_checkpoint(conditional).model.eval()
    x, y = _test_images(data_dir)
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        ll = torch.stack([model.log_prob(xt, y=c) for c in range(10)]).double()  # (C, N)
    joint = model.class_log_prior.double()[:, None] + ll
    pred = joint.argmax(0).numpy()
    assert res["accuracy"] == pytest.approx(float((pred == y).mean()), abs=1e-12)
    np.testing.assert_array_equal(np.diag(conf), [int(((pred == y) & (y == c)).sum()) for c in range(10)])
    np.testing.assert_array_equal(conf.sum(1), np.bincount(y, minlength=10))  # rows: the true classes
    lpx = torch.logsumexp(joint, 0)
    assert res["nll_nats"] == pytest.approx(float(-lpx.mean()), abs=1e-3)
    assert res["bits_per_dim"] == pytest.approx(res["nll_nats"] / (784 * math.log(2)))
    assert res["cond_nll_nats"] == pytest.approx(float(-ll[torch.as_tensor(y), torch.arange(N)].mean()), abs=1e-3)
    # log p(x) >= log p(y) + log p(x | y) for the true y, image by image, so on average too
    log_py = model.class_log_prior.double()[torch.as_tensor(y)].mean()
    assert res["cond_nll_nats"] - float(log_py) >= res["nll_nats"] - 1e-6
    post = torch.softmax(joint, 0)[torch.as_tensor(y), torch.arange(N)]
    assert res["mean_true_posterior"] == pytest.approx(float(post.mean()), abs=1e-6)


def test_the_marginal_nll_is_evals(conditional, capsys):
    """classify's NLL is the marginal -log p(x), the figure eval reports for the same images."""
    capsys.readouterr()
    argv = ["--json", "--max-images", "40", "--random-subset", "--seed", "3", "--threads", "1"]
    assert main(["classify", str(conditional), *argv]) == 0
    cls = json.loads(capsys.readouterr().out)
    assert main(["eval", str(conditional), *argv]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["classes"] == 10 and ev["n_images"] == cls["n_images"] == 40
    assert cls["nll_nats"] == pytest.approx(ev["test_nll_nats"], abs=1e-3)
    assert cls["stderr_nats"] == pytest.approx(ev["stderr_nats"], rel=1e-3)
    assert main(["eval", str(conditional), "--max-images", "20", "--threads", "1"]) == 0
    assert "marginal" in capsys.readouterr().out


def test_inpaint_eval_of_a_conditional_model_is_of_its_marginal(conditional, data_dir, capsys):
    """Exact (bottom half given the top in raster order) and sampled (top given the bottom, through
    the marginal's stepper): the conditional of p(x) = sum_y p(y) p(x | y)."""
    capsys.readouterr()
    assert main(["inpaint-eval", str(conditional), "--region", "bottom", "--max-images", "3", "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["classes"] == 10 and res["exact"]
    model = load_checkpoint(conditional).model.eval()
    x = torch.as_tensor(load_dataset("binarized-mnist", "test", data_dir)[:3], dtype=torch.float32)
    with torch.no_grad():
        lpp = model.log_prob_per_pixel(x).double()  # the marginal's conditionals
    assert res["nll_nats"] == pytest.approx(float(-lpp[:, 392:].sum(1).mean()), abs=1e-3)
    argv = ["inpaint-eval", str(conditional), "--region", "top", "--max-images", "2", "--samples", "4", "--json", "--threads", "1"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert not res["exact"] and math.isfinite(res["nll_nats"]) and res["nll_nats"] > 0


def test_the_table(conditional, capsys):
    capsys.readouterr()
    assert main(["classify", str(conditional), "--max-images", "30", "--random-subset", "--threads", "1", "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "NLL" in out and "confusion matrix" in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("true \\ predicted"))
    assert lines[head].split()[3:13] == [str(c) for c in range(10)]
    rows = lines[head + 1 : head + 11]
    assert [r.split()[0] for r in rows] == [str(c) for c in range(10)]
    assert sum(int(v) for r in rows for v in r.split()[1:11]) == 30


def test_chunks_and_progress_do_not_change_the_result(conditional, data_dir):
    model = load_checkpoint(conditional).model
    x, y = _test_images(data_dir)
    steps = classify_steps(model, x[:25], y[:25], chunk=10)
    done = [next(steps), next(steps), next(steps)]
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert done == [10, 20, 25]
    whole = classify(model, x[:25], y[:25], chunk=25)
    r = stop.value.value
    np.testing.assert_array_equal(r.predictions, whole.predictions)
    np.testing.assert_allclose(r.log_px, whole.log_px, atol=1e-3)
    np.testing.assert_allclose(np.exp(r.log_posterior).sum(1), 1.0, atol=1e-9)
    assert r.confusion.sum() == 25 and not model.training
    assert default_chunk(model) == 500  # a binary model: capped, not by memory


def test_sample_draws_the_class_asked_for(synthetic, tmp_path, capsys):
    """`sample --class k` of the synthetic model draws k's prototype (noisy, as trained): the
    classifier agrees for most."""
    model, _ = synthetic
    path = tmp_path / "proto.safetensors"
    save_checkpoint(path, model)
    right = 0
    for k in range(3):
        grid = tmp_path / f"proto{k}.png"
        argv = ["sample", str(path), "--n", "16", "--class", str(k), "--out", str(grid), "--scale", "1", "--seed", str(k)]
        assert main([*argv, "--threads", "1"]) == 0
        with Image.open(grid) as img:
            page = np.asarray(img)
        x = np.stack([page[2 + r * 10 : 10 + r * 10, 2 + c * 10 : 10 + c * 10] < 128 for r in range(4) for c in range(4)])
        r = classify(model, x.reshape(16, 64).astype(np.uint8), np.full(16, k))
        assert r.accuracy > 0.5, (k, r.confusion)  # chance: 1/3
        right += int(np.trace(r.confusion))
    assert right >= 0.75 * 48
    capsys.readouterr()


def test_an_unconditional_checkpoint_is_refused(unconditional, capsys):
    capsys.readouterr()
    assert main(["classify", str(unconditional), "--max-images", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pixelchain: error: ") and "no classes" in err[0]
    model = load_checkpoint(unconditional).model
    with pytest.raises(ClassifyError, match="no classes"):
        classify(model, np.zeros((2, 784)), np.zeros(2, np.int64))


def test_bad_labels_are_refused(conditional):
    model = load_checkpoint(conditional).model
    with pytest.raises(ClassifyError, match="3 labels for 2 images"):
        classify(model, np.zeros((2, 784)), np.zeros(3, np.int64))
    with pytest.raises(ClassifyError, match="outside"):
        classify(model, np.zeros((2, 784)), np.array([0, 10]))


def test_sample_a_class_and_the_marginal(conditional, unconditional, tmp_path, capsys):
    capsys.readouterr()
    model = load_checkpoint(conditional).model
    for k in (7, 1):
        grid = tmp_path / f"class{k}.png"
        argv = ["sample", str(conditional), "--n", "1", "--class", str(k), "--out", str(grid), "--scale", "1", "--threads", "1"]
        assert main(argv) == 0
        assert f"class {k}" in capsys.readouterr().out
        with Image.open(grid) as img:
            ink = np.asarray(img)[2:30, 2:30] < 128  # black ink on white
        # the image is p(x | y = k)'s: the model's own sampler given the class, from the same seed
        want = model.sample(1, y=k, generator=torch.Generator().manual_seed(0)).reshape(28, 28).numpy()
        np.testing.assert_array_equal(ink, want == 1)
    assert main(["sample", str(conditional), "--n", "4", "--out", str(tmp_path / "m.png"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "marginal" in out and len(out.split("p(y):")[1].split()) == 4
    rc = main(["sample", str(conditional), "--n", "2", "--class", "10", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "0 to 9" in err
    rc = main(["sample", str(unconditional), "--n", "2", "--class", "3", "--out", str(tmp_path / "y.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "no classes" in err and len(err.strip().splitlines()) == 1
