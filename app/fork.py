"""A fork in sampling: pause a run, change pixels, and continue both ways.

An autoregressive sample is a chain of draws ``x_{o_t} ~ p(x_{o_t} | x_{o_<t})``. Pausing a run at
step ``t`` and editing a pixel that was already drawn asks "what would the rest have been, had this
pixel come out differently?". The two continuations share their random numbers (common random
numbers): :func:`engine.sampling.continue_fork` continues the run's image and the edited one with
the uniforms the run itself would have used next. So the unedited continuation is exactly the
original run's completion, and the two differ only where the edit moved a probability across its
uniform.

The edited pixels keep their values in the forked continuation. A pixel already drawn comes before
every pending one in the run's ordering, so the fork conditions on it exactly; a pending pixel set
by hand is fixed when the ordering reaches it (it cannot influence pixels drawn before it).

:class:`ForkController` adds "Fork here" to the sampling panel and shows both continuations in a
:class:`ForkDialog`, animated on its own worker thread. It is handed the app's state
(:class:`app.state.AppState`): the run in progress, its latest frame and the canvas.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPoint, QRect, QRectF, QSize, Signal
from PySide6.QtWidgets import QDialog, QGraphicsRectItem, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from engine.models.base import ARModel
from engine.sampling import ForkPoint

from .jobs import fork_job
from .latest import Latest
from .screen import fitted_size
from .state import AppState
from .widgets.canvas import CanvasWidget
from .widgets.sampling import SamplingPanel
from .worker import Worker

__all__ = ["fork_job", "ForkController", "ForkDialog", "place_beside"]

GAP = 8  #: pixels between the fork window and what it must not cover
PENDING_BINARY = 0.35  #: a binary model's pixels still to draw: a grey no binary pixel takes
PENDING_COLOR = "#2b4c7e"  #: behind a grey model's pixels still to draw (every grey is a pixel value)
PENDING_COLOR_TEXT = "#6b93d6"  #: that blue, light enough to read as text on the dark theme


def place_beside(window: QRect, size: QSize, screen: QRect, avoid: QRect | None = None, gap: int = GAP,
                 minimum: QSize | None = None) -> QRect:
    """Where a window of ``size`` goes so that it covers neither ``window`` nor, failing that, the
    part ``avoid`` of it (the canvas the user is asked to edit), inside ``screen`` (the screen's
    available geometry; all in global coordinates, frames included): right of the window, left of
    it, below, above, then right or left of ``avoid``; at its full size where one fits, else as
    narrow as ``minimum`` allows; on the screen's right edge if nothing fits."""
    w, h = size.width(), size.height()
    min_w = minimum.width() if minimum is not None else w

    def clamp(v: int, lo: int, hi: int) -> int:
        return max(lo, min(v, hi))

    def beside(r: QRect, least: int) -> list[QRect]:
        y = clamp(r.top(), screen.top(), screen.bottom() - h + 1)
        right = min(w, screen.right() - (r.right() + gap))
        left = min(w, r.left() - gap - screen.left())
        return [QRect(r.right() + 1 + gap, y, right, h) if right >= least else QRect(),
                QRect(r.left() - gap - left, y, left, h) if left >= least else QRect()]

    x = clamp(window.left(), screen.left(), screen.right() - w + 1)
    for least in (w, min_w):
        candidates = beside(window, least) + [QRect(x, window.bottom() + 1 + gap, w, h), QRect(x, window.top() - gap - h, w, h)]
        if avoid is not None:
            candidates += beside(avoid, least)
        for rect in candidates:
            if not rect.isEmpty() and screen.contains(rect):
                return rect
    return QRect(max(screen.left(), screen.right() - w + 1), clamp(window.top(), screen.top(), screen.bottom() - h + 1), w, h)


class ForkDialog(QDialog):
    """The two continuations side by side and where they differ."""

    continueRequested = Signal()
    useRequested = Signal(int)  #: 0: original, 1: forked

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Fork — pixelchain")
        lay = QVBoxLayout(self)
        self.note = QLabel()
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("#14171c")
        self.view.setMinimumSize(900, 330)
        self.titles, self.images, self.plots = [], [], []
        self.pending_backs: list[QGraphicsRectItem] = []
        for col, title in enumerate(("original continuation", "forked (edited pixels outlined)", "forked − original")):
            self.titles.append(self.view.ci.addLabel(title, row=0, col=col, size="9pt"))
            vb = self.view.ci.addViewBox(row=1, col=col, lockAspect=True, invertY=True, enableMouse=False)
            vb.setMenuEnabled(False)
            img = pg.ImageItem(axisOrder="row-major")
            vb.addItem(img)
            vb.setRange(QRectF(0, 0, 28, 28), padding=0.02)
            if col < 2:  # behind the image: shows through a grey model's pixels still to draw
                todo = QGraphicsRectItem(QRectF(0, 0, 28, 28))
                todo.setBrush(pg.mkBrush(PENDING_COLOR))
                todo.setPen(pg.mkPen(None))
                todo.setZValue(-1)
                todo.setVisible(False)
                vb.addItem(todo)
                self.pending_backs.append(todo)
            self.images.append(img)
            self.plots.append(vb)
        self.images[2].setColorMap(pg.colormap.get("CET-D1"))
        for col in range(3):  # three equal columns, whatever their titles' widths
            self.view.ci.layout.setColumnStretchFactor(col, 1)
            self.view.ci.layout.setColumnPreferredWidth(col, 300)
        lay.addWidget(self.view, 1)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        row = QHBoxLayout()
        self.continue_btn = QPushButton("▶  Continue both")
        self.continue_btn.setObjectName("primary")
        self.use_a = QPushButton("Original to canvas")
        self.use_b = QPushButton("Forked to canvas")
        for b in (self.continue_btn, self.use_a, self.use_b):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.continue_btn.clicked.connect(self.continueRequested)
        self.use_a.clicked.connect(lambda: self.useRequested.emit(0))
        self.use_b.clicked.connect(lambda: self.useRequested.emit(1))
        self.preferred = QSize(*fitted_size(960, 520))  #: its size where the screen leaves room
        self.resize(self.preferred)
        self._marks: list[QGraphicsRectItem] = []
        self.images_shown: np.ndarray | None = None
        self.set_done(False)

    def set_done(self, done: bool) -> None:
        self.use_a.setEnabled(done)
        self.use_b.setEnabled(done)

    def set_note(self, text: str) -> None:
        """What the user is asked to do (above the images)."""
        self.note.setText(text)

    def set_info(self, text: str) -> None:
        """The continuations' progress, then their log p (below the images)."""
        self.info.setText(text)

    def set_can_continue(self, enabled: bool) -> None:
        self.continue_btn.setEnabled(enabled)

    def show_pair(self, x: np.ndarray, pending: np.ndarray, changed: np.ndarray, shape: tuple[int, int],
                  pending_original: np.ndarray | None = None, levels: int = 2) -> None:
        """Rows of ``x`` (levels 0 .. ``levels``-1) as images on 0..1; ``pending`` pixels marked
        (``pending_original`` on the original, if given: an edit ahead of the run is not in it);
        ``changed`` outlined on the forked one.

        A binary model's pending pixels are mid-grey, a value no pixel of it takes. A grey model's
        pixels take every grey, so its pending ones are left out of the image (NaN, drawn
        transparent) and show a blue square behind the image instead."""
        h, w = shape
        self.images_shown = np.asarray(x)
        scale = float(max(levels - 1, 1))
        grey = levels > 2
        for i, back in enumerate(self.pending_backs):
            back.setRect(QRectF(0, 0, w, h))
            back.setVisible(grey)
            todo = pending_original if i == 0 and pending_original is not None else pending
            im = np.where(todo, np.nan if grey else PENDING_BINARY, x[i] / scale).reshape(h, w).astype(np.float32)
            self.images[i].setImage(im, levels=(0.0, 1.0), autoLevels=False)
        diff = np.where(pending, 0.0, (x[1] - x[0]) / scale).reshape(h, w).astype(np.float32)
        self.images[2].setImage(diff, levels=(-1.0, 1.0), autoLevels=False)
        for m in self._marks:
            self.plots[1].removeItem(m)
        self._marks = []
        for p in np.flatnonzero(changed):
            r, c = divmod(int(p), w)
            m = QGraphicsRectItem(QRectF(c, r, 1, 1))
            m.setPen(pg.mkPen("#facc15", width=2, cosmetic=True))
            self.plots[1].addItem(m)
            self._marks.append(m)


class ForkController(QObject):
    """Adds "Fork here" to the sampling panel and runs the fork (see the module docstring)."""

    forked = Signal()  #: the fork point is on the canvas, ready to edit
    finished = Signal()  #: both continuations are complete

    def __init__(self, state: AppState, panel: SamplingPanel, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.panel = panel
        self.worker = Worker("fork", self, torch_threads=1)
        self.requests = Latest(self.worker, parent=self)
        self.point: ForkPoint | None = None
        self.model: ARModel | None = None
        self.result: tuple[np.ndarray, np.ndarray] | None = None
        self._await_stop = False
        self._mask_set = False  #: the canvas holds the mask this fork put there
        self._serial = 0  #: numbers the continuations asked for
        self.dialog = ForkDialog(parent)
        self.button = QPushButton("Fork here")
        self.button.setToolTip("While paused: stop here, put the image so far on the canvas to change pixels, then "
                               "continue both the original and the changed image with the same random numbers")
        panel.add_control(self.button)
        self.button.clicked.connect(self.fork)
        state.runFrame.connect(lambda _fr: self._sync())
        state.runChanged.connect(self._sync)
        state.runFinished.connect(self._on_run_finished)
        state.closing.connect(lambda: self.worker.shutdown(600_000))
        self.dialog.continueRequested.connect(self.continue_both)
        self.dialog.useRequested.connect(self.use)
        self.dialog.finished.connect(lambda _r: self._on_dialog_closed())
        state.canvasChanged.connect(self._on_canvas_changed)
        self.requests.progress.connect(self._on_progress)
        self.requests.result.connect(self._on_result)
        self.requests.error.connect(lambda _k, m: self.dialog.set_note(f"The fork failed: {m}"))
        self._sync()

    @property
    def levels(self) -> int:
        """K, the pixel levels of the forked run's model (2 before any fork)."""
        return self.model.levels if self.model is not None else 2

    # -- the paused run ------------------------------------------------------------------------
    def _sync(self) -> None:
        run = self.state.run
        self.button.setEnabled(run is not None and run.paused and run.frame is not None)

    def fork(self) -> None:
        run = self.state.run
        if run is None or run.frame is None:
            return
        # a continuation of an earlier fork still running belongs to that fork's point: drop it
        self.requests.cancel()
        fr = run.frame
        decided = ~np.asarray(run.unknown, bool)
        decided[fr.order.perm[: fr.step + 1]] = True
        model = self.state.model
        # a class-conditional model: both continuations keep the class of the run's image, and the
        # generator replays the run's own draw of the classes where it made one
        y = None if fr.y is None else int(np.asarray(fr.y).reshape(-1)[0])
        drew = model.classes if model is not None and model.classes and run.given is None else 0
        self.point = ForkPoint(prefix=np.asarray(fr.x[0], np.float32).copy(), decided=decided, ordering=fr.order,
                               draws=fr.index + 1, batch=run.n, seed=run.seed, temperature=run.temperature,
                               y=y, class_draw=drew)
        self.model = model
        self.result = None
        self._await_stop = True
        self.state.stop_run()

    def _on_run_finished(self, _completed: bool) -> None:
        self._sync()
        if not self._await_stop or self.point is None:
            return
        self._await_stop = False
        st, fp = self.state, self.point
        st.replace_canvas(fp.prefix, mask=~fp.decided)
        self._mask_set = True
        left = fp.pending
        todo = f"<span style='color:{PENDING_COLOR_TEXT}'>blue</span> below, " if self.levels > 2 else ""
        self.dialog.set_note(
            f"Paused with {left} pixels to go. Change pixels on the canvas (the masked part, {todo}is still to be drawn), "
            "then <b>Continue both</b>: the original and the changed image continue with the same random numbers.")
        self.dialog.show_pair(np.stack([fp.prefix, fp.prefix]), ~fp.decided, np.zeros_like(fp.decided), st.shape,
                              levels=self.levels)
        self.dialog.set_info("")
        self.dialog.set_done(False)
        self.dialog.set_can_continue(True)
        self._place_dialog()
        self.dialog.show()
        st.show_status(f"Forked with {left} pixels to go: change pixels on the canvas, then Continue both", 8000)
        self.forked.emit()

    def _place_dialog(self) -> None:
        """Open the dialog beside the window, never over the canvas it asks to edit (where the
        screen leaves room)."""
        win = self.dialog.parentWidget()
        if win is None or self.dialog.isVisible():
            return
        win = win.window()
        screen = win.screen()
        frame = win.frameGeometry().size() - win.geometry().size()  # what the window manager adds
        canvas = win.findChild(CanvasWidget)
        avoid = QRect(canvas.mapToGlobal(QPoint(0, 0)), canvas.size()) if canvas is not None else None
        least = self.dialog.minimumSizeHint()
        rect = place_beside(win.frameGeometry(), self.dialog.preferred.expandedTo(least) + frame, screen.availableGeometry(), avoid,
                            minimum=least + frame)
        self.dialog.resize(rect.size() - frame)
        self.dialog.move(rect.topLeft())

    def _on_canvas_changed(self) -> None:
        """While the user edits the fork point, the forked image shows the edit live."""
        fp = self.point
        if fp is None or not self.dialog.isVisible() or self.result is not None or self.requests.busy or self.state.running:
            return
        edited = self.state.session.flat()
        changed = edited != fp.prefix
        self.dialog.show_pair(np.stack([fp.prefix, edited]), ~fp.decided & ~changed, changed, self.state.shape, ~fp.decided,
                              levels=self.levels)

    def _on_dialog_closed(self) -> None:
        """The fork is over: the mask it put on the canvas (the pixels still to draw) goes too."""
        self.requests.cancel()
        if self._mask_set and not self.state.running and self.state.session.mask.any():
            self.state.clear_mask()
        self._mask_set = False

    # -- both continuations --------------------------------------------------------------------
    def continue_both(self) -> None:
        if self.point is None:
            return
        fp = self.point
        self.edited = self.state.session.flat().copy()
        self.changed = self.edited != fp.prefix
        self.dialog.set_can_continue(False)
        self.dialog.set_done(False)
        self._serial += 1
        job = self.requests.submit(self._serial, fork_job, self.model, fp, self.edited)
        job.delay = self.panel.delay()

    def _on_progress(self, _key: int, item: object) -> None:
        done, total, x = cast(tuple[int, int, np.ndarray], item)
        fp = self.point
        if fp is None:
            return
        pending = ~fp.decided
        todo = fp.ordering.perm[pending[fp.ordering.perm]]  # the pixels to draw, in the run's order
        pending[todo[:done]] = False
        self.dialog.show_pair(x, pending, self.changed, self.state.shape, levels=self.levels)
        self.dialog.set_info(f"pixel {done} / {total}")

    def _on_result(self, _key: int, value: object) -> None:
        x, lp = cast(tuple[np.ndarray, np.ndarray], value)
        if self.point is None:
            return
        self.result = (x, lp)
        self.dialog.show_pair(x, np.zeros(x.shape[1], bool), self.changed, self.state.shape, levels=self.levels)
        drawn = ~self.point.decided & ~self.changed
        differ = int((x[0] != x[1])[drawn].sum())
        more = ("more ink in the fork", "more in the original") if self.levels > 2 else ("ink only in the fork", "only in the original")
        self.dialog.set_info(
            f"original: log p = {lp[0]:.1f} nats · forked: log p = {lp[1]:.1f} nats · "
            f"{int(self.changed.sum())} pixel(s) edited · {differ} of {int(drawn.sum())} newly drawn pixels differ "
            f"(<span style='color:#ef4444'>red</span>: {more[0]}, <span style='color:#3b82f6'>blue</span>: {more[1]})")
        self.dialog.set_done(True)
        self.dialog.set_can_continue(True)
        self.finished.emit()

    def use(self, which: int) -> None:
        if self.result is None or self.state.running:
            return
        # a whole image: nothing is left to draw, so the fork's mask goes with the same undo step
        self.state.replace_canvas(self.result[0][which], mask=np.zeros(self.state.shape, bool))
        self._mask_set = False
