"""The window at small sizes: every tab and figure stays whole, tall panels scroll, the read-out wraps."""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QApplication, QScrollArea, QToolButton

from app.widgets.inspector import ReadOut
from engine.figures import EnsembleFigures


def _settle(qtbot, win, w: int, h: int) -> None:
    """Resize the window and wait until it has its new size (Qt keeps it at least at its minimum)
    and its layouts have been redone (the posted layout requests handled)."""
    win.resize(w, h)
    qtbot.waitUntil(lambda: win.size() == QSize(w, h).expandedTo(win.minimumSize()), timeout=5000)
    QApplication.sendPostedEvents()
    QApplication.processEvents()


def test_the_window_fits_a_small_screen_and_tall_panels_scroll(qtbot, win):
    hint = win.minimumSizeHint()
    assert hint.width() <= 1280 and hint.height() <= 600, hint  # a 1280 x 720 laptop screen
    _settle(qtbot, win, 200, 200)  # Qt keeps it at its minimum
    assert win.height() <= 600
    win.show_panel(win.training)
    QApplication.processEvents()
    page = win.tabs.currentWidget()
    assert isinstance(page, QScrollArea) and page.isAncestorOf(win.training)
    # the training panel is taller than the space left: it scrolls instead of setting the window's height
    assert page.verticalScrollBar().isVisible() and page.verticalScrollBar().maximum() > 0
    assert not page.horizontalScrollBar().isVisible()


def test_at_an_ordinary_size_every_panel_fills_its_page_without_scrolling(qtbot, win):
    _settle(qtbot, win, 1500, 1000)
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        page = win.tabs.widget(i)
        # a page is as tall as the space (the sampling grid takes what is left), not its preferred height
        assert not page.verticalScrollBar().isVisible(), win.tabs.tabText(i)
        assert page.widget().height() == page.viewport().height(), win.tabs.tabText(i)


def test_a_narrow_window_shows_every_tab_panel_and_colour_bar_whole(qtbot, win):
    _settle(qtbot, win, 600, 700)
    bar = win.tabs.tabBar()
    assert not any(b.isVisible() for b in bar.findChildren(QToolButton)), "tabs scroll"
    assert bar.tabRect(bar.count() - 1).right() <= bar.width()
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        page = win.tabs.widget(i)
        assert not page.horizontalScrollBar().isVisible(), win.tabs.tabText(i)
    view = win.heatmaps.viewport().width()
    for m in win.heatmaps.maps:
        # the colour bar, its tick labels included, lies inside the panel (a plot title in the image's
        # column once pushed the ticks out of a narrow panel)
        assert m.bar.axis.sceneBoundingRect().right() <= view + 1
        assert m.bar.axis.width() >= 45


def test_the_readout_wraps_to_two_rows_rather_than_cut_a_figure(qtbot):
    r = ReadOut()
    qtbot.addWidget(r)
    # what an order-agnostic model on a test digit shows
    r.set_percentile(12.0, "among 10,000 test digits (random subset)")
    r.set_ensemble(EnsembleFigures(-107.97, [("raster", -120.9), ("snake", -111.0)]), 32, -120.9)
    r.set_model_text("made-scans · MADE · 3,753,440 parameters · raster · trained over the 16 line scans")
    r.show()
    need = r.one_row_width()
    for width, two in ((need + 40, False), (need - 40, True), (need + 40, False)):
        r.resize(width, r.sizeHint().height())
        qtbot.waitUntil(lambda two=two: r.two_rows is two, timeout=2000)
        QApplication.processEvents()
        for lab in r.figure_labels:
            if lab.isVisible():
                assert lab.width() >= lab.sizeHint().width(), (width, lab.text())
        assert (r.pct.y() > r.logp.y()) is two  # the percentile moves to a second row and back
        # the model's name takes what is left, cut with an ellipsis rather than mid-letter
        m = r.model
        assert m.fontMetrics().horizontalAdvance(m.text()) <= m.width()
        assert m.text() == m.full_text or m.text().endswith("…")
    r.resize(need - 40, r.sizeHint().height())
    qtbot.waitUntil(lambda: r.model.text().endswith("…"), timeout=2000)  # two rows leave it little room


def test_percentile_reads_above_or_below_every_digit_at_the_extremes(qtbot):
    r = ReadOut()
    qtbot.addWidget(r)
    r.set_percentile(100.0, "among 10,000 test digits")
    assert "above every one" in r.pct.text() and "of 10,000 test digits" in r.pct.text()
    r.set_percentile(0.0, "among 10,000 test digits")
    assert "below every one" in r.pct.text()
    r.set_percentile(99.7, "among 10,000 test digits")
    assert "99th" in r.pct.text() and "percentile among 10,000" in r.pct.text()
    r.set_percentile(0.2, "among 10,000 test digits")
    assert "1st" in r.pct.text()


def test_the_first_window_and_the_dialogs_fit_the_screen(qtbot, win):
    from app.main import default_size
    from app.widgets.compare import CompareDialog

    free = QApplication.primaryScreen().availableGeometry()  # offscreen: 800 x 600
    w, h = default_size(QApplication.instance())
    assert (w, h) == (min(1500, free.width()), min(940, free.height()))
    dlg = CompareDialog(win.state, lambda: win.model_picker.entries, win)
    qtbot.addWidget(dlg)
    assert dlg.height() <= max(free.height(), dlg.minimumSizeHint().height())
    assert dlg.minimumSizeHint().height() <= 600  # a 1280 x 720 screen shows it whole
