"""The "Compress & score" tab driven as a user would: open the tab, draw, switch models and
orderings; the code lengths and scores follow the canvas."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from engine.ordering import make_ordering
from engine.tasks.compress import png_size_bytes

from .test_main_window import stroke


def open_tab(qtbot, win):
    panel = win.compress_panel
    bar = win.tabs.tabBar()
    i = win.panel_tab(panel)
    with qtbot.waitSignal(panel.codeShown, timeout=20000):
        QTest.mouseClick(bar, Qt.LeftButton, Qt.NoModifier, bar.tabRect(i).center())
    assert win.tabs.currentIndex() == i and panel.isVisible()
    return panel


def check_code(win, panel):
    """The shown code length belongs to the canvas and agrees with the heatmaps' log p."""
    cl = panel.code
    ideal = -win.figures.log_p / math.log(2.0)  # the window's own float32 pass
    assert math.isclose(cl.ideal_bits, ideal, rel_tol=1e-3, abs_tol=1e-2)
    assert math.isclose(cl.model_bits, ideal, rel_tol=1e-3, abs_tol=1e-2)
    assert cl.ideal_bits <= cl.bits <= cl.ideal_bits + 64  # a whole number of 32-bit words, a little above
    assert cl.bits % 32 == 0
    assert cl.png_bytes == png_size_bytes(win.session.canvas)
    assert f"{cl.bits:,} bits" in panel.bits.text() and f"{cl.ideal_bits:,.1f} bits" in panel.ideal.text()
    assert f"{cl.png_bytes:,} bytes" in panel.png.text()
    assert [v for _, v in panel.bars.items] == [784.0, 8.0 * cl.png_bytes, float(cl.bits), cl.ideal_bits]


def test_code_length_follows_the_canvas(qtbot, win):
    panel = open_tab(qtbot, win)
    check_code(win, panel)
    empty = panel.code
    with qtbot.waitSignal(panel.codeShown, timeout=20000):
        stroke(qtbot, win, [(6, 14), (14, 14), (22, 14)])
    check_code(win, panel)
    assert panel.code.ideal_bits != empty.ideal_bits and panel.code.png_bytes != empty.png_bytes
    # several quick strokes: the newest canvas wins
    for r in (8, 12, 16):
        QTest.mousePress(win.canvas, Qt.LeftButton, Qt.NoModifier, win.canvas.pixel_center(r, 5).toPoint())
        QTest.mouseMove(win.canvas, win.canvas.pixel_center(r, 22).toPoint())
        QTest.mouseRelease(win.canvas, Qt.LeftButton, Qt.NoModifier, win.canvas.pixel_center(r, 22).toPoint())
    qtbot.waitUntil(lambda: panel.up_to_date
                    and win.figures is not None and np.isclose(win.figures.log_p, -panel.code.model_bits * math.log(2), rtol=1e-3),
                    timeout=20000)
    check_code(win, panel)


def test_hidden_tab_computes_nothing_and_catches_up(qtbot, win):
    panel = open_tab(qtbot, win)
    shown = panel.requests.shown
    win.tabs.setCurrentIndex(0)
    stroke(qtbot, win, [(10, 10), (10, 18)])
    assert panel.requests.shown == shown and not panel.worker.busy
    with qtbot.waitSignal(panel.codeShown, timeout=20000):
        win.show_panel(panel)
    check_code(win, panel)


def test_other_ordering_of_an_any_order_model(qtbot, win, bundled):
    panel = open_tab(qtbot, win)
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "made-any.safetensors")
    stroke(qtbot, win, [(5, 5), (20, 20)])
    combo = win.ordering_picker.combo
    with qtbot.waitSignal(panel.codeShown, timeout=20000):
        combo.setCurrentIndex(combo.findData("snake"))
        combo.activated.emit(combo.currentIndex())
    qtbot.waitUntil(lambda: panel.up_to_date, timeout=20000)
    assert win.ordering == make_ordering("snake")
    check_code(win, panel)


def test_digit_likeness_scores(qtbot, win, data_dir):
    panel = open_tab(qtbot, win)
    with qtbot.waitSignal(panel.scoreShown, timeout=30000):
        stroke(qtbot, win, [(6, 14), (14, 14), (22, 14)])
    sc = panel.score
    assert math.isclose(sc.log_prob_nats, win.figures.log_p, rel_tol=1e-4, abs_tol=1e-3)
    assert math.isclose(sc.llr_nats, sc.log_prob_nats - sc.background_log_prob_nats, rel_tol=1e-9)
    assert 0.0 <= sc.percentile <= 100.0 and 0.0 <= sc.llr_percentile <= 100.0
    assert f"{sc.percentile:.1f}" in panel.pct.text() and f"{sc.llr_nats:+.1f}" in panel.llr.text()
    assert "shifted" in panel.llr.toolTip() and "10,000" in panel.status.text()
    # a canvas replaced wholesale (a test digit) is scored too
    from app.jobs import split

    digit = split("test")[0].reshape(28, 28)
    with qtbot.waitSignal(panel.scoreShown, timeout=20000):
        win.state.replace_canvas(digit)
    qtbot.waitUntil(lambda: panel.up_to_date, timeout=20000)
    assert math.isclose(panel.score.log_prob_nats, win.figures.log_p, rel_tol=1e-4, abs_tol=1e-3)
