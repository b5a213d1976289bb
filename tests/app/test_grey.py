"""The app with a model of grey levels (issue 27, item 5): the canvas holds the model's levels and
paints grey with a soft brush, the heatmaps show E[x_i | x_<i] and the NLL of the drawn level, the
read-out bits/dim, the inspector the whole conditional over the K levels as bars, sampling draws
levels; a binary model's app stays as it was."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from engine.checkpoint import save_checkpoint
from engine.document import Session, intensity_of, level_of, soft_brush
from engine.figures import pixel_figures
from engine.models import build_model

NADE_GREY = {"hidden": 20, "levels": 256, "output": "logistic-mixture", "components": 3}


def _save(folder: Path, name: str, family: str, config: dict, test_nll: float, dataset: str | None) -> Path:
    torch.manual_seed(len(name))
    model = build_model(family, config)
    with torch.no_grad():  # larger weights than the init, so the conditionals depend on the drawing
        for p in model.parameters():
            p.mul_(2.0)
    meta: dict = {"name": name, "metrics": {"test_nll": test_nll}}
    if dataset is not None:
        meta["dataset"] = dataset
    return save_checkpoint(folder / f"{name}.safetensors", model, meta)


@pytest.fixture(scope="module")
def grey_bundled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("grey-bundled")
    _save(folder, "nade-grey", "nade", NADE_GREY, 80.0, "mnist")  # the best: the window starts on it
    _save(folder, "fvsbn-grey16", "fvsbn", {"levels": 16, "output": "categorical"}, 120.0, "mnist")
    _save(folder, "fvsbn-binary", "fvsbn", {}, 99.0, None)
    return folder


@pytest.fixture
def gwin(make_window, grey_bundled):
    return make_window(grey_bundled)


def _pt(canvas, r, c) -> QPoint:
    return canvas.pixel_center(r, c).toPoint()


def stroke(qtbot, win, points, button=Qt.LeftButton):
    cv = win.canvas
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        QTest.mousePress(cv, button, Qt.NoModifier, _pt(cv, *points[0]))
        for p in points[1:]:
            QTest.mouseMove(cv, _pt(cv, *p))
        QTest.mouseRelease(cv, button, Qt.NoModifier, _pt(cv, *points[-1]))


def _open(qtbot, win, path: Path) -> None:
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(path)


# -- the document, without Qt -------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 4, 8, 16, 256])
def test_a_level_stored_as_intensity_quantises_back_to_itself(k):
    v = np.arange(k)
    np.testing.assert_array_equal(level_of(intensity_of(v, k), k), v)
    assert intensity_of(np.array([k - 1]), k)[0] == 255 and intensity_of(np.array([0]), k)[0] == 0
    # the grey data set's rule: floor(intensity * K / 256)
    np.testing.assert_array_equal(level_of(np.arange(256), k), np.arange(256) * k // 256)


def test_the_soft_brush_falls_off_with_distance_from_the_stroke():
    cover = soft_brush(28, 28, (10, 5), (10, 20), 3)
    assert np.all(cover[10, 5:21] == 1.0) and np.all(cover[9, 5:21] == 1.0)  # the core: radius 1
    assert 0.0 < cover[12, 12] < 1.0 and cover[14, 12] == 0.0  # a soft edge, then nothing
    assert cover[11, 12] > cover[12, 12]  # falling with distance
    assert cover.shape == (28, 28) and cover.min() >= 0.0


def test_grey_painting_keeps_the_darkest_ink_and_erases_softly():
    s = Session(levels=256)
    s.begin_stroke()
    assert s.paint(10, 5, 1, 2, from_point=(10, 20), strength=1.0)
    s.end_stroke()
    row = s.canvas[9:12, 12]
    assert row[1] == 255 and 0 < row[0] < 255 and row[0] == row[2]  # anti-aliased edges
    s.paint(10, 12, 1, 2, strength=0.3)  # a fainter dab over full ink leaves it full
    assert s.canvas[10, 12] == 255
    s.begin_stroke()
    s.paint(10, 12, 0, 1)  # the eraser: its centre is paper again, its edge only dimmed
    assert s.canvas[10, 12] == 0 and 0 < s.canvas[10, 11] < 255
    assert s.undo() and s.canvas[10, 12] == 255


def test_switching_levels_requantises_the_same_drawing():
    s = Session(levels=256)
    s.paint(10, 5, 1, 2, from_point=(10, 20))
    grey = s.canvas.copy()
    assert s.set_levels(2)  # a binary model sees "intensity >= 128"
    np.testing.assert_array_equal(s.canvas, (grey >= 128).astype(np.uint8))
    s.paint(20, 3, 1, 1)  # a binary stroke is full ink
    assert s.set_levels(256)
    np.testing.assert_array_equal(s.canvas[:15], grey[:15])  # the grey stroke comes back grey
    assert s.canvas[20, 3] == 255
    s.set_levels(16)
    assert s.canvas.max() == 15 and set(np.unique(s.canvas)) > {0, 15}


def test_a_binary_session_paints_as_it_always_did():
    s = Session()
    s.paint(5, 5, 1, 3, from_point=(5, 1))
    assert set(np.unique(s.canvas)) == {0, 1}
    s.set_canvas(np.full((28, 28), 0.7))
    assert s.canvas.all() and s.intensity.min() == 255
    s.invert()
    assert not s.canvas.any()


# -- the window -----------------------------------------------------------------------------------------
def test_a_grey_checkpoint_loads_and_the_canvas_paints_grey(qtbot, gwin):
    win = gwin
    assert win.entry.name == "nade-grey" and win.state.levels == 256 and win.session.levels == 256
    assert "256 levels" in win.model_picker.currentText()
    assert "256 levels</b>, mixture of 3 logistics" in win.model_info.text.text()
    assert "MNIST at 256 levels" in win.model_info.text.text()
    assert "bits/dim" in win.model_info.text.text()
    assert win.acts.ink_action.isVisible()
    win.acts.ink.setValue(80)
    assert win.state.ink == pytest.approx(0.8)
    stroke(qtbot, win, [(8, 8), (8, 14), (14, 14), (20, 14)])
    c = win.session.canvas
    assert c[8, 10] == round(0.8 * 255) and c[14, 14] == round(0.8 * 255)  # the stroke's centre: the ink asked
    levels = set(np.unique(c).tolist())
    assert len(levels - {0, 204}) >= 2  # soft edges: levels between paper and ink
    # the canvas shows them grey: a pixel's colour lies between paper and ink in proportion
    img = win.canvas.grab().toImage()
    edge = img.pixelColor(_pt(win.canvas, 7, 10))
    core = img.pixelColor(_pt(win.canvas, 8, 10))
    paper = img.pixelColor(_pt(win.canvas, 2, 2))
    assert paper.red() < edge.red() < core.red()


def test_heatmaps_and_readout_of_a_grey_model(qtbot, gwin):
    win = gwin
    stroke(qtbot, win, [(6, 10), (20, 16)])
    figs = win.figures
    assert figs.levels == 256 and figs.table.shape == (784, 256)
    x = torch.as_tensor(win.session.flat())[None]
    with torch.no_grad():
        lpp = win.model.log_prob_per_pixel(x)[0].numpy()
        mean = win.model.conditionals(x)[0].numpy()
    np.testing.assert_allclose(figs.nll.reshape(-1), -lpp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(figs.prob.reshape(-1), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(win.heatmaps.prob.image.image, figs.prob.astype(np.float32))
    assert "E[x" in win.heatmaps.prob.title.text and "expected intensity" in win.heatmaps.prob.title.text
    assert win.heatmaps.nll.levels == (0.0, 8.0)
    bpd = -float(lpp.sum()) / (784 * math.log(2))
    assert f"{bpd:.4f}</b> bits/dim" in win.readout.bpp.text()
    assert f"{float(lpp.sum()):.2f}" in win.readout.logp.text()


def test_the_inspector_shows_the_whole_conditional_with_the_drawn_level(qtbot, gwin):
    win = gwin
    stroke(qtbot, win, [(6, 10), (20, 16)])
    idx = 13 * 28 + 13
    drawn = int(win.session.canvas.reshape(-1)[idx])
    win.state.set_pin(idx)
    ins = win.inspector
    assert ins.chart.isVisible() and ins.fields["entropy"].isVisible()
    with torch.no_grad():
        lp = win.model.level_log_probs(torch.as_tensor(win.session.flat())[None])[0, idx].double()
    q = lp.exp().numpy()
    assert len(ins.chart.heights) == 256
    np.testing.assert_allclose(ins.chart.heights, q / q.sum(), rtol=1e-4, atol=1e-7)
    assert ins.chart.drawn == drawn
    mean = float((q * np.arange(256)).sum() / q.sum())
    ent = float(-(q * lp.numpy()).sum())
    assert ins.fields["prob"].text().startswith(f"{mean:.2f}")
    assert ins.fields["entropy"].text() == f"{ent:.3f} nats  ({ent / math.log(2):.3f} bits)"
    assert ins.fields["value"].text() == f"{drawn} of 0–255"
    assert ins.fields["nll"].text().startswith(f"{-float(lp[drawn]):.3f} nats")
    assert ins.chart.mean_line.value() == pytest.approx(mean, abs=1e-3)
    assert "E[x" in ins.labels["prob"].text()


def test_a_grey_sample_run_completes_with_grey_levels(qtbot, gwin):
    win = gwin
    s = win.sampling
    s.count.setValue(2)
    s.temperature.setValue(1.0)
    with qtbot.waitSignal(win.runFinished, timeout=60000) as blocker:
        s.run_btn.click()
    assert blocker.args == [True]
    assert "E[x] =" in s.live.text() or "generated" in s.live.text()
    assert s.images.shape == (2, 784)
    vals = set(np.unique(s.images).tolist())
    assert max(vals) <= 255 and len(vals - {0.0, 1.0}) > 10  # levels beyond 0/1
    np.testing.assert_array_equal(win.session.canvas.reshape(-1), s.images[0])
    assert s.grid_image.image.max() <= 1.0  # the grid shows them on 0..1


def test_the_live_line_of_a_grey_run_gives_the_expected_level(qtbot, gwin):
    s = gwin.sampling
    s.step_btn.click()  # a paused run drawing one pixel
    qtbot.waitUntil(lambda: s.progress.value() == 1, timeout=10000)
    assert "E[x] = " in s.live.text() and "→ level " in s.live.text() and "p(x=1)" not in s.live.text()
    with qtbot.waitSignal(gwin.runFinished, timeout=5000):
        s.stop_btn.click()


def test_a_binary_model_after_a_grey_one_gets_todays_app(qtbot, gwin, grey_bundled):
    win = gwin
    stroke(qtbot, win, [(6, 10), (20, 16)])
    grey = win.session.canvas.copy()
    _open(qtbot, win, grey_bundled / "fvsbn-binary.safetensors")
    assert win.state.levels == 2
    qtbot.waitUntil(lambda: win.figures is not None and win.figures.levels == 2, timeout=10000)
    np.testing.assert_array_equal(win.session.canvas, (grey >= 128).astype(np.uint8))
    assert not win.acts.ink_action.isVisible()
    assert not win.inspector.chart.isVisible() and not win.inspector.fields["entropy"].isVisible()
    assert win.heatmaps.prob.title.text.startswith("p(x")
    assert win.heatmaps.nll.levels == (0.0, 5.0)
    assert "bits/pixel" in win.readout.bpp.text()
    assert "levels" not in win.model_info.text.text() and "levels" not in win.model_picker.currentText()
    win.state.set_pin(8 * 28 + 12)
    assert win.inspector.fields["prob"].text() == f"{win.figures.prob.reshape(-1)[8 * 28 + 12]:.4f}"
    stroke(qtbot, win, [(24, 3), (24, 9)])  # a hard binary brush
    assert set(np.unique(win.session.canvas).tolist()) == {0, 1}
    # ... and back to the grey model: the grey stroke is grey again
    _open(qtbot, win, grey_bundled / "nade-grey.safetensors")
    np.testing.assert_array_equal(win.session.canvas[:22], grey[:22])
    assert win.session.canvas[24, 5] == 255


def test_a_grey_test_digit_keeps_its_levels(qtbot, gwin, monkeypatch):
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "mnist").is_dir():
        pytest.skip(f"the grey MNIST files are not in {data}")
    monkeypatch.setenv("PIXELCHAIN_DATA", str(data))
    from engine.datasets import load_dataset

    with qtbot.waitSignal(gwin.figuresShown, timeout=20000):
        gwin.editing.load_test_digit(7)
    expect = load_dataset("mnist", "test", str(data), levels=256)[7].reshape(28, 28)
    np.testing.assert_array_equal(gwin.session.canvas, expect)
    assert len(np.unique(gwin.session.canvas)) > 10


def test_an_imported_grey_picture_keeps_its_levels(qtbot, gwin, tmp_path):
    rng = np.random.default_rng(1)
    pic = np.zeros((28, 28), np.uint8)
    pic[6:22, 10:18] = rng.integers(1, 256, (16, 8))
    pic[10, 12] = 255
    Image.fromarray(255 - pic).save(tmp_path / "grey.png")  # dark ink on white paper
    with qtbot.waitSignal(gwin.figuresShown, timeout=20000):
        assert gwin.editing.import_image_file(tmp_path / "grey.png")
    np.testing.assert_array_equal(gwin.session.canvas, pic)
    gwin.state.undo()
    assert not gwin.session.canvas.any()


def test_figures_of_a_k16_model_match_its_log_prob():
    torch.manual_seed(0)
    m = build_model("fvsbn", {"levels": 16, "output": "categorical"})
    x = np.random.default_rng(0).integers(0, 16, 784)
    f = pixel_figures(m, x)
    with torch.no_grad():
        lp = float(m.log_prob(torch.as_tensor(x, dtype=torch.float32)[None])[0])
    assert f.log_p == pytest.approx(lp, abs=1e-3) and f.levels == 16
    assert f.distribution(5).sum() == pytest.approx(1.0) and 0 <= f.mean_level(5) <= 15
    assert 0 <= f.entropy(5) <= math.log(16) + 1e-9


def test_the_conditionals_table_of_a_grey_model_gives_the_expected_level():
    from engine.figures import conditionals_csv

    torch.manual_seed(0)
    m = build_model("fvsbn", {"levels": 16, "output": "categorical"})
    x = np.random.default_rng(0).integers(0, 16, 784)
    f = pixel_figures(m, x)
    lines = conditionals_csv(f, x).splitlines()
    assert "# 16 levels: mean_level is E[x_i | x_<i] on 0..15" in lines
    header = next(line for line in lines if line.startswith("step,"))
    assert header.split(",")[5] == "mean_level"
    first = next(line for line in lines if line.startswith("1,")).split(",")
    assert int(first[4]) == x[0] and float(first[5]) == pytest.approx(f.mean_level(0), rel=1e-4)


def test_the_picker_names_a_grey_checkpoints_levels_and_head(grey_bundled):
    from app.widgets.pickers import ModelPicker
    from engine.catalogue import ModelEntry

    grey = ModelEntry.from_file(grey_bundled / "fvsbn-grey16.safetensors")
    binary = ModelEntry.from_file(grey_bundled / "fvsbn-binary.safetensors")
    assert (grey.levels, grey.head) == (16, "categorical") and "16 levels" in grey.label
    assert (binary.levels, binary.head) == (2, "bernoulli") and "levels" not in binary.label
    assert grey.dataset == "mnist" and binary.dataset == "binarized-mnist"
    assert "pixels: 16 levels, softmax · MNIST at 16 levels" in ModelPicker._tip(grey) and "levels" not in ModelPicker._tip(binary)


def test_grey_inpainting_keeps_the_known_levels(qtbot, gwin):
    win = gwin
    stroke(qtbot, win, [(4, 14), (24, 14)])
    original = win.session.canvas.copy()
    win.sampling.mask_half.click()
    s = win.sampling
    s.count.setValue(1)
    with qtbot.waitSignal(win.runFinished, timeout=60000) as blocker:
        s.run_btn.click()
    assert blocker.args == [True]
    out = win.session.canvas
    np.testing.assert_array_equal(out[:14], original[:14])  # the known half, grey levels and all
    assert out[:14].max() == 255 and len(set(np.unique(original[:14]).tolist())) > 2
    assert len(set(np.unique(out[14:]).tolist())) > 10  # the generated half: levels, not 0/1
