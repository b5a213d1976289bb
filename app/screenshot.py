"""``pixelchain --screenshot PATH``: the window rendered offscreen, saved as a PNG, and exit.

It opens the model (done by :mod:`app.main`), draws a test digit, waits for the heatmaps, the
percentile and (for an order-agnostic model) the ensemble, optionally runs a sampling batch or
shows another tab, pins a pixel so the inspector and the influence map have something to show,
and saves a PNG of the whole window. It drives the window only through what a script may use:
the state's commands and signals, the controllers and the panels' intent methods. Errors the
window reports (``state.error``) are recorded by a :class:`Waiter` and end the wait early.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from .files import save_pixmap
from .main_window import MainWindow
from .state import AppState

__all__ = ["Waiter", "take_screenshot"]


class Waiter:
    """Waits in the event loop for a condition; records the errors the state reports meanwhile."""

    def __init__(self, state: AppState):
        self.errors: list[str] = []
        state.error.connect(self.errors.append)

    def wait_for(self, cond: Callable[[], object], seconds: float) -> bool:
        """True once ``cond()`` holds; False after ``seconds`` or as soon as an error is reported."""
        loop = QEventLoop()
        timer = QTimer()

        def check() -> None:
            if cond() or self.errors:
                loop.quit()

        timer.timeout.connect(check)
        timer.start(20)
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        timer.stop()
        return bool(cond()) and not self.errors

    def why(self) -> str:
        return "; ".join(self.errors)


def _fail(win: MainWindow, message: str) -> int:
    print(f"pixelchain: error: {message}", file=sys.stderr)
    win.close()
    return 1


def take_screenshot(app: QApplication, win: MainWindow, waiter: Waiter, a: argparse.Namespace) -> int:
    """Prepare the window as the options say and save it to ``a.screenshot``; the exit status."""
    out = Path(a.screenshot)
    st, live = win.state, win.live
    wait_for = waiter.wait_for
    if not wait_for(lambda: st.model is not None, a.timeout):
        return _fail(win, f"no model could be opened: {waiter.why() or 'timed out'}")
    win.editing.load_test_digit(a.digit)
    ok = wait_for(lambda: st.session.canvas.any() and st.figures is not None
                  and win.readout.log_p is not None and abs(win.readout.log_p - st.figures.log_p) < 1e-9
                  and not live.pending and st.session.version > 0, a.timeout)
    if ok and not wait_for(lambda: st.percentile is not None, a.timeout):
        print("pixelchain: note: the percentile among test digits was not ready in time; saving without it", file=sys.stderr)
        ok = not waiter.errors
    if ok and win.readout.shows_ensemble() and not wait_for(lambda: live.ensemble_shown, a.timeout):
        print("pixelchain: note: the ensemble log p was not ready in time; saving without it", file=sys.stderr)
    if not ok:
        return _fail(win, f"the heatmaps were not computed: {waiter.why() or 'timed out'}")
    st.set_overlay(a.overlay)
    if a.tab == "sample":
        win.show_panel(win.sampling)
        win.sampling.set_count(16)
        done: list[bool] = []
        st.runFinished.connect(done.append)
        win.runs.start_run("sample")
        if not wait_for(lambda: bool(done), a.timeout):
            return _fail(win, f"sampling failed: {waiter.why() or 'timed out'}")
        version = st.session.version
        st.undo()  # keep the test digit on the canvas
        wait_for(lambda: st.figures is not None and not live.pending and st.session.version != version, a.timeout)
    elif a.tab == "train":
        win.show_panel(win.training)
    ink = st.session.canvas.reshape(-1).nonzero()[0]
    if ink.size and st.ordering is not None:
        order = st.ordering.inverse[ink]
        st.set_pin(int(ink[order.argsort()[len(ink) * 2 // 3]]))
        if not wait_for(lambda: win.influence.up_to_date, a.timeout):
            print("pixelchain: note: the influence map was not ready in time; saving without it", file=sys.stderr)
    app.processEvents()
    pix = win.grab()
    try:
        if out.parent and not out.parent.is_dir():
            out.parent.mkdir(parents=True, exist_ok=True)
        save_pixmap(pix, out)
    except OSError:
        return _fail(win, f"cannot write {out}")
    win.close()
    print(f"wrote {out} ({pix.width()}x{pix.height()})")
    return 0
