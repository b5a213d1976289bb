"""What a new user met in the first hour (issue 29) and the app side of hostile files (issue 30):
the path overlay, layout jumps, a 1024 x 700 screen, --data, the menus and Help, the sampling
panel's note, plain-text metadata and checkpoint headers read off the GUI thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QPoint, QRect, QSize, QUrl
from PySide6.QtGui import QAction, QColor, QDesktopServices
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox, QTableWidget

import engine.checkpoint as ckmod
from app import settings as app_settings
from app.actions import DOCS_DIR, app_version, recent_labels
from app.main import build_parser, use_data_dir, window_size
from app.state import AppState
from app.widgets.canvas import CanvasWidget
from app.widgets.inspector import ReadOut
from engine.checkpoint import save_checkpoint
from engine.document import Session
from engine.models import build_model
from engine.ordering import make_ordering

ROOT = Path(__file__).resolve().parents[2]


def _settle(qtbot, win, w: int, h: int) -> None:
    """Resize the window and wait until it has its new size (Qt keeps it at least at its minimum)
    and its layouts have been redone (the posted layout requests handled)."""
    win.resize(w, h)
    qtbot.waitUntil(lambda: win.size() == QSize(w, h).expandedTo(win.minimumSize()), timeout=5000)
    QApplication.sendPostedEvents()
    QApplication.processEvents()


def _rect_in(win, widget) -> QRect:
    return QRect(widget.mapTo(win, QPoint(0, 0)), widget.size())


# -- the canvas ----------------------------------------------------------------------------------
def test_the_path_overlay_paints_a_path_not_a_red_canvas_when_the_pointer_is_away(qtbot):
    state = AppState(Session())
    canvas = CanvasWidget(state)
    qtbot.addWidget(canvas)
    canvas.resize(300, 300)
    canvas.set_ordering(make_ordering("snake"))  # no diagonal from one row's end to the next's start
    state.set_overlay("path")
    assert canvas.hover_pixel == canvas.pinned_pixel == canvas.current_pixel == -1  # no outline drawn
    img = canvas.grab().toImage()
    cell, x0, y0 = canvas._cell()
    # a quarter of a cell in from a cell's corner: off the path (through the centres), off the grid
    for r, c in ((3, 3), (14, 20), (25, 8), (0, 27)):
        col = QColor(img.pixel(int(x0 + (c + 0.25) * cell), int(y0 + (r + 0.25) * cell)))
        assert col.red() < 60 and col.green() < 60, (r, c, col.name())  # paper, not the last dot's red
    # the path itself is drawn
    mid = QColor(img.pixel(int(x0 + 10.5 * cell), int(y0 + 14.5 * cell)))
    assert max(mid.red(), mid.green(), mid.blue()) > 100


def test_the_canvas_stays_put_when_the_overlay_legend_appears(qtbot, win):
    before = _rect_in(win, win.canvas)
    win.state.set_overlay("path")
    QApplication.processEvents()
    assert win.legend.isVisible()
    assert _rect_in(win, win.canvas) == before
    win.state.set_overlay("off")
    QApplication.processEvents()
    assert _rect_in(win, win.canvas) == before


# -- a small screen ------------------------------------------------------------------------------
def test_at_1024_by_700_the_canvas_and_the_panels_key_controls_are_whole(qtbot, win):
    _settle(qtbot, win, 1024, 700)
    assert win.width() == 1024 and win.height() == 700, win.size()
    frame = win.rect()
    canvas = _rect_in(win, win.canvas)
    assert frame.contains(canvas) and canvas.width() >= 220
    assert frame.contains(_rect_in(win, win.heatmaps)) and frame.contains(_rect_in(win, win.tabs))
    bar = win.tabs.tabBar()
    assert bar.tabRect(bar.count() - 1).right() <= bar.width()
    assert frame.contains(_rect_in(win, win.model_picker)) and frame.contains(_rect_in(win, win.readout))
    win.show_panel(win.sampling)
    QApplication.processEvents()
    page = win.tabs.currentWidget()
    for w in (win.sampling.run_btn, win.sampling.stop_btn, win.sampling.mode_inpaint):
        r = _rect_in(win, w)
        assert frame.contains(r) and _rect_in(win, page.viewport()).contains(r), w
    assert not page.horizontalScrollBar().isVisible()
    win.show_panel(win.training)
    QApplication.processEvents()
    assert not win.tabs.currentWidget().horizontalScrollBar().isVisible()
    for overlay in ("path", "steps"):  # the overlay's legend (with the ordering's name) does not widen the window
        win.state.set_overlay(overlay)
        QApplication.processEvents()
        assert win.minimumSizeHint().width() <= 1024 and win.width() == 1024, overlay
        assert frame.contains(_rect_in(win, win.tabs)) and frame.contains(_rect_in(win, win.canvas))


def test_window_size_option_and_its_old_name():
    assert build_parser().parse_args(["--window-size", "1024x700"]).size == "1024x700"
    assert build_parser().parse_args(["--size", "800x600"]).size == "800x600"
    assert window_size("1024x700") == (1024, 700)
    for bad in ("1024", "axb", "10x10", "1024x700x3"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            window_size(bad)


# -- data ----------------------------------------------------------------------------------------
def test_the_app_accepts_data_as_the_message_advises(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELCHAIN_DATA", "/nowhere")
    a = build_parser().parse_args(["--data", str(tmp_path)])
    use_data_dir(a.data)
    assert os.environ["PIXELCHAIN_DATA"] == str(tmp_path.resolve())
    with pytest.raises(ValueError, match="not a folder"):
        use_data_dir(str(tmp_path / "missing"))
    # on the command line: a one-line error before any window opens
    r = subprocess.run([sys.executable, "-m", "app", "--data", str(tmp_path / "missing")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"pixelchain: error: --data {tmp_path / 'missing'}: not a folder; "
                                                                   "give the folder that holds binarized_mnist_*.amat"]


def test_a_long_no_data_message_is_elided_with_the_whole_text_as_tooltip(qtbot):
    from engine.data import DataError, load_split

    old = os.environ.pop("PIXELCHAIN_DATA", None)
    try:
        os.environ["PIXELCHAIN_DATA"] = "/nowhere/at/all"
        with pytest.raises(DataError) as info:
            load_split("test")
    finally:
        os.environ.pop("PIXELCHAIN_DATA", None)
        if old is not None:
            os.environ["PIXELCHAIN_DATA"] = old
    message = str(info.value)
    assert "PIXELCHAIN_DATA" in message
    r = ReadOut()
    qtbot.addWidget(r)
    r.resize(700, 80)
    r.show()
    note = f"unavailable ({message})"
    r.set_percentile(None, note)
    QApplication.processEvents()
    whole = " ".join(f"percentile: {note}".split())
    assert r.pct.toolTip() == whole and r.percentile_text == whole
    assert r.pct.text().endswith("…") and len(r.pct.text()) < len(whole)
    assert r.pct.geometry().right() <= r.contentsRect().right() + 1  # whole on screen
    r.set_percentile(None, "computing on the test digits…")
    assert not r.pct.text().startswith("percentile: unavailable")


# -- menus and help ------------------------------------------------------------------------------
def _entries_in(menu) -> list[str]:
    return [a.text() for a in menu.actions() if a.isEnabled()]


def test_a_bundled_model_opened_with_file_open_stays_bundled(qtbot, make_window, bundled, monkeypatch):
    win = make_window(bundled)
    names = _entries_in(win.acts.bundled_menu)
    assert len(names) == 3
    path = bundled / "fvsbn-snake.safetensors"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.acts.open_dialog()
    assert win.entry is not None and win.entry.source == "bundled"
    assert _entries_in(win.acts.bundled_menu) == names
    assert path.name not in " ".join(_entries_in(win.acts.recent_menu))
    win.close()
    again = make_window(bundled)  # a restart: same settings
    assert _entries_in(again.acts.bundled_menu) == names


def test_recent_files_with_the_same_name_show_where_they_are(qtbot, win, tmp_path):
    paths = [Path("/runs/a/x/best.safetensors"), Path("/runs/b/x/best.safetensors"), Path("/runs/c/other.safetensors")]
    labels = recent_labels(paths)
    assert labels[2] == "other.safetensors"
    assert labels[0] != labels[1] and "a/x" in labels[0] and "b/x" in labels[1]
    assert recent_labels([Path("/one/best.safetensors"), Path("/two/best.safetensors")]) == [
        "best.safetensors — one", "best.safetensors — two"]
    win.acts.show_models(paths, win.model_picker.entries)
    shown = _entries_in(win.acts.recent_menu)
    assert len(set(shown)) == 3


def test_file_dialogs_start_in_the_folder_last_used(qtbot, win, tmp_path, monkeypatch):
    starts: list[str] = []
    folder = tmp_path / "pictures"
    folder.mkdir()

    def pick(_parent, _title, start, _filter=""):
        starts.append(start)
        return str(folder / "digit.png"), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(pick))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(pick))
    win.acts.export_dialog()  # saves the canvas into pictures/
    assert starts[0] == str(Path.home() / "digit.png")
    win.acts.import_dialog()
    assert starts[1] == str(folder)
    # persisted in the tests' private settings, read back by a new settings object
    assert str(app_settings.last_folder(app_settings.make_settings())) == str(folder)
    assert "pixelchain.ini" in os.environ["PIXELCHAIN_SETTINGS"] and Path(os.environ["PIXELCHAIN_SETTINGS"]).is_file()


def test_help_gives_the_version_the_shortcuts_and_the_docs(qtbot, win, monkeypatch):
    texts: list[str] = []
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda _p, _t, text: texts.append(text)))
    win.acts.about()
    assert app_version() in texts[0] and app_version()[0].isdigit() and "docs" in texts[0]
    rows = win.acts.shortcuts()
    listed = {(text, keys) for _menu, text, keys in rows}
    with_keys = [a for a in win.findChildren(QAction) if not a.shortcut().isEmpty()]
    assert len(with_keys) >= 15
    for a in with_keys:
        assert any(keys == a.shortcut().toString() for _t, keys in listed), a.text()
    assert ("Ordering as Path", "Ctrl+2") in listed
    dlg = win.acts.shortcuts_dialog()
    qtbot.addWidget(dlg)
    table = dlg.findChild(QTableWidget)
    assert table is not None and table.rowCount() == len(rows)
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url) or True))
    assert win.acts.open_docs()
    assert Path(opened[0].toLocalFile()) == DOCS_DIR and (DOCS_DIR / "design.md").is_file()


# -- the sampling panel --------------------------------------------------------------------------
def test_the_run_button_stays_put_and_the_note_follows_the_mode(qtbot, win):
    win.show_panel(win.sampling)
    _settle(qtbot, win, 1400, 900)
    s = win.sampling
    assert s.mode_sample.isChecked()
    where = s.run_btn.mapTo(s, QPoint(0, 0))
    assert "Exact" not in s.exactness.text() and "Draws new digits" in s.exactness.text()
    s.mask_half.click()  # inpainting, with a mask: the (longer) note on exactness
    QApplication.processEvents()
    assert s.mode_inpaint.isChecked() and ("Exact" in s.exactness.text() or "Approximate" in s.exactness.text())
    assert s.run_btn.mapTo(s, QPoint(0, 0)) == where
    s.mode_sample.setChecked(True)  # back to sampling: no stale "Exact: ..."
    QApplication.processEvents()
    assert "Exact" not in s.exactness.text() and "Approximate" not in s.exactness.text()
    assert s.run_btn.mapTo(s, QPoint(0, 0)) == where
    s.set_inpaint_note("short")
    QApplication.processEvents()
    assert s.run_btn.mapTo(s, QPoint(0, 0)) == where


# -- the model's description ---------------------------------------------------------------------
def test_an_order_agnostic_model_says_any_ordering(qtbot, win, bundled):
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "made-any.safetensors")
    text = win.model_info.text.text()
    assert "any ordering (trained on random orderings)" in text and "trained ordering:" not in text
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "fvsbn-snake.safetensors")
    assert "trained ordering: snake" in win.model_info.text.text()


def test_metadata_with_markup_shows_as_short_plain_text(qtbot, win, tmp_path):
    torch.manual_seed(0)
    model = build_model("fvsbn", {}, make_ordering("raster"))
    name = "<img src='x'><b>bold</b><a href='http://x'>link</a>" + "z" * 140  # within the 200 a name may have
    path = save_checkpoint(tmp_path / "hostile.safetensors", model, {"name": name, "device": "<i>cpu</i>"})
    with qtbot.waitSignal(win.figuresShown, timeout=30000):
        win.checkpoints.open_checkpoint(path)
    info = win.model_info.text.text()
    assert "&lt;b&gt;bold&lt;/b&gt;" in info and "<b>bold</b>" not in info and "<img" not in info
    assert len(info) < 5000
    assert "<b>bold</b>" in win.model_picker.currentText() and len(win.model_picker.currentText()) < 300
    tip = win.model_picker.itemData(win.model_picker.currentIndex(), 3)  # ToolTipRole
    assert "<img" not in tip and "&lt;img" in tip and len(tip) < 2000
    assert len(win.readout.model.full_text) < 500
    assert win.entry is not None and len(win.entry.name) <= 120


def test_a_name_of_megabytes_is_refused_in_one_line_and_the_model_stays(qtbot, win, tmp_path):
    torch.manual_seed(0)
    before = win.entry
    model = build_model("fvsbn", {}, make_ordering("raster"))
    path = save_checkpoint(tmp_path / "huge-name.safetensors", model, {"name": "<b>x</b>" + "z" * 2_000_000})
    errors: list[str] = []
    win.state.error.connect(errors.append)
    t0 = time.perf_counter()
    win.checkpoints.open_checkpoint(path)
    qtbot.waitUntil(lambda: bool(errors), timeout=30000)
    assert time.perf_counter() - t0 < 20
    title, _, reason = errors[0].partition("\n")  # the dialog's title line, then the engine's one line
    assert "huge-name" in title and "name is 2,000,008 characters long" in reason and "\n" not in reason
    assert len(errors[0]) < 400 and "<b>" not in errors[0]
    assert win.entry is before

# -- reading files off the GUI thread ------------------------------------------------------------
def test_checkpoint_headers_are_read_off_the_gui_thread(qtbot, make_window, bundled, tmp_path, monkeypatch):
    torch.manual_seed(0)
    recent = save_checkpoint(tmp_path / "recent.safetensors", build_model("fvsbn", {}, make_ordering("raster")), {"name": "recent"})
    opened = save_checkpoint(tmp_path / "opened.safetensors", build_model("fvsbn", {}, make_ordering("snake")), {"name": "opened"})
    app_settings.add_recent(app_settings.make_settings(), recent)
    reads: list[tuple[str, bool]] = []
    real = ckmod._read_header

    def spy(path, max_bytes):
        reads.append((Path(path).name, threading.current_thread() is threading.main_thread()))
        return real(path, max_bytes)

    monkeypatch.setattr(ckmod, "_read_header", spy)
    win = make_window(bundled)  # start-up: the recent file is listed from a worker
    qtbot.waitUntil(lambda: any(e.path == recent for e in win.model_picker.entries), timeout=10000)
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(opened)  # File > Open
    mine = [(n, main) for n, main in reads if n in ("recent.safetensors", "opened.safetensors")]
    assert {n for n, _ in mine} == {"recent.safetensors", "opened.safetensors"}
    assert not any(main for _n, main in mine), mine


def test_a_fifo_named_png_does_not_block_the_import(qtbot, win, tmp_path):
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    unblock = threading.Timer(5.0, lambda: open(fifo, "wb").close())  # a hang would end here, failing the test
    unblock.daemon = True
    unblock.start()
    t0 = time.perf_counter()
    try:
        assert not win.editing.import_image_file(fifo)
    finally:
        unblock.cancel()
    assert time.perf_counter() - t0 < 3
    assert "digit.png" in win.last_error and "\n" not in win.last_error.strip()


def test_the_training_chart_counts_epochs_without_an_si_prefix(qtbot, win):
    panel = win.training
    win.show_panel(panel)
    panel.batch_curve.setData([0.001, 0.002, 0.004], [0.0021, 0.0022, 0.0019])  # the first minibatches of a run
    panel.plot.getPlotItem().vb.autoRange()
    QApplication.processEvents()
    for side, name in (("bottom", "epoch"), ("left", "NLL (nats)")):
        axis = panel.plot.getAxis(side)
        assert axis.autoSIPrefixScale == 1.0 and axis.labelString().count("(") <= 1, axis.labelString()
        assert name in axis.labelString() and "x0.001" not in axis.labelString() and "(m" not in axis.labelString()
