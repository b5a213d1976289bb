"""Side by side: the canvas under two to four models, or one order-agnostic model under several
orderings (View ▸ Compare Models…).

Each column is a model from the model picker's list (or the model now shown) with an ordering; the
dialog computes, on its own worker thread, the teacher-forced conditionals ``p(x_i = 1 | x_<i)`` of
the canvas under each (:func:`engine.figures.pixel_figures`) and shows them as heatmaps on the
*same* fixed 0..1 colour scale with one colour bar, each titled with its total ``-log p(x)`` in
nats and bits per pixel. Below, a per-pixel difference map between two chosen columns -- of the
probabilities or of the per-pixel ``-log p(x_i | x_<i)`` -- on a symmetric diverging colour map
with fixed symmetric levels, so white always means "no difference". An order-agnostic model (MADE
with order-agnostic training, Uria et al. 2014 / Germain et al. 2015) defines one joint distribution
per ordering; comparing orderings shows how much ``log p(x)`` depends on it.

Each model sees the drawing at its own pixel levels (the canvas's 0-255 intensities quantised at
its K, as the canvas would show them to it). A grey model's map is the expected intensity
``E[x_i | x_<i] / (K - 1)``, on the same 0..1 scale as a binary model's ``p(x_i = 1 | x_<i)``; the
titles say which. Two models of different levels score different images, so their totals are not
set against each other.

The dialog is handed the app's state (:class:`app.state.AppState`) and the list of known models.
Requests are debounced and every new one replaces the previous, tagged with the canvas version and
the columns' choices (:class:`app.latest.Latest`), so a stale result is never shown; nothing is
computed while the dialog is hidden. Checkpoints are loaded once (safetensors, never pickle) and kept for the dialog's life.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QDialog, QGridLayout, QHBoxLayout, QLabel, QMainWindow, QMenu, QVBoxLayout, QWidget

from engine.figures import PixelFigures
from engine.ordering import ORDERING_NAMES, make_ordering

from ..jobs import compare_job
from ..latest import Latest
from ..screen import fitted_size
from ..state import AppState
from ..worker import Worker
from .colors import DIFF_MAP, PROB_MAP

__all__ = ["CompareDialog", "CompareMenu", "compare_job", "install", "DIFF_MAP", "DIFF_LEVELS", "MAX_COLUMNS"]

MAX_COLUMNS = 4
DIFF_LEVELS = {"prob": 1.0, "nll": 5.0}  #: fixed symmetric levels (+-) of the difference map
DEBOUNCE_MS = 120
CURRENT = "__current__"


class _Column:
    """One model's map: a title above, the image, its totals below."""

    def __init__(self, layout: pg.GraphicsLayout, col: int):
        self.title = layout.addLabel("", row=0, col=col, size="9pt")
        self.plot = layout.addPlot(row=1, col=col)
        _style(self.plot)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setImage(np.zeros((28, 28), np.float32), levels=(0.0, 1.0), autoLevels=False)
        self.plot.addItem(self.image)
        self.totals = layout.addLabel("", row=2, col=col, size="9pt")


P_HTML = "p(x<sub>i</sub> = 1 | x<sub>&lt;i</sub>)"
#: what a grey model's map shows: the expected level on 0..1 (the same "how much ink" as a binary p)
E_HTML = "E[x<sub>i</sub> | x<sub>&lt;i</sub>] / (K&minus;1)"
NLL_HTML = "&minus;log p(x<sub>i</sub> | x<sub>&lt;i</sub>)"


def _style(plot: pg.PlotItem) -> None:
    plot.setMenuEnabled(False)
    plot.setMouseEnabled(False, False)
    plot.hideButtons()
    plot.invertY(True)
    plot.setAspectLocked(True)
    for side in ("left", "bottom"):
        ax = plot.getAxis(side)
        ax.setTicks([[(v + 0.5, str(v)) for v in (0, 7, 14, 21, 27)]])
        ax.setStyle(tickLength=-4)
    plot.setRange(xRange=(0, 28), yRange=(0, 28), padding=0.01)


class CompareDialog(QDialog):
    computed = Signal()  #: maps shown for the current canvas and choices

    def __init__(self, state: AppState, entries: Callable[[], list] = list, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.entries = entries  #: the models to choose from (:class:`engine.catalogue.ModelEntry` list)
        self.setWindowTitle("Compare models — pixelchain")
        self.worker = Worker("compare", self, torch_threads=1)
        self.requests = Latest(self.worker, lambda key: key == self.current_key(), parent=self)
        self._models: dict = {}  # path -> model, only on the worker's thread
        self.results: list = []  #: per shown column: (label, PixelFigures or message)
        self.diff: np.ndarray | None = None  #: the difference map shown

        lay = QVBoxLayout(self)
        grid = QGridLayout()
        self.model_boxes: list[QComboBox] = []
        self.order_boxes: list[QComboBox] = []
        for i in range(MAX_COLUMNS):
            m, o = QComboBox(), QComboBox()
            m.setMinimumContentsLength(22)
            m.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            o.addItem("model's own ordering", None)
            for name in ORDERING_NAMES:
                o.addItem(name, name)
            o.setToolTip("Another ordering needs an order-agnostic model; other models show why they cannot")
            grid.addWidget(QLabel(f"{'ABCD'[i]}"), 0, 2 * i, Qt.AlignmentFlag.AlignRight)
            grid.addWidget(m, 0, 2 * i + 1)
            grid.addWidget(o, 1, 2 * i + 1)
            m.activated.connect(self.schedule)
            o.activated.connect(self.schedule)
            self.model_boxes.append(m)
            self.order_boxes.append(o)
        lay.addLayout(grid)

        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("#14171c")
        self.view.setMinimumSize(900, 460)
        self.view.ci.setSpacing(10)
        self.columns: list[_Column] = []
        self._build(2)
        lay.addWidget(self.view, 1)

        drow = QHBoxLayout()
        drow.addWidget(QLabel("Difference map:"))
        self.diff_what = QComboBox()
        self.diff_what.addItem("p(x_i = 1 | x_<i)", "prob")
        self.diff_what.addItem("−log p(x_i | x_<i) of the drawn value (nats)", "nll")
        self.diff_a, self.diff_b = QComboBox(), QComboBox()
        for i in range(MAX_COLUMNS):
            self.diff_a.addItem("ABCD"[i], i)
            self.diff_b.addItem("ABCD"[i], i)
        self.diff_b.setCurrentIndex(1)
        for w, text in ((self.diff_what, "of"), (self.diff_a, ""), (self.diff_b, "minus")):
            if text:
                drow.addWidget(QLabel(text))
            drow.addWidget(w)
            w.activated.connect(lambda _i: self._show_diff())
        drow.addStretch(1)
        self.note = QLabel("")
        self.note.setObjectName("hint")
        drow.addWidget(self.note)
        lay.addLayout(drow)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.request)
        state.figuresShown.connect(self.schedule)
        state.modelChanged.connect(self.refresh_models)
        state.closing.connect(lambda: self.worker.shutdown(600_000))
        self.requests.result.connect(self._on_result)
        self.requests.error.connect(lambda _k, m: self.note.setText(f"Comparison failed: {m}"))
        self.refresh_models()
        self.resize(*fitted_size(1180, 820))

    def _build(self, n: int) -> None:
        """(Re)make the figure for ``n`` columns: maps with one shared colour bar, then the
        difference map, a summary, and the difference's own colour bar."""
        ci = self.view.ci
        ci.clear()
        self.columns = [_Column(ci, i) for i in range(n)]
        self.bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get(PROB_MAP), interactive=False, width=14)
        self.bar.getAxis("left").setLabel("probability")
        self.bar.setImageItem([c.image for c in self.columns])
        ci.addItem(self.bar, row=1, col=n)
        self.diff_title = ci.addLabel("", row=3, col=0, size="9pt")
        self.diff_plot = ci.addPlot(row=4, col=0)
        _style(self.diff_plot)
        self.diff_image = pg.ImageItem(axisOrder="row-major")
        self.diff_image.setImage(np.zeros((28, 28), np.float32), levels=(-1.0, 1.0), autoLevels=False)
        self.diff_plot.addItem(self.diff_image)
        # beside the difference map where there are columns to span; below it with one column, whose
        # only other cell in that row is the difference's colour bar
        self.summary = (ci.addLabel("", row=4, col=1, colspan=n - 1, size="9pt", justify="left") if n > 1
                        else ci.addLabel("", row=5, col=0, size="9pt", justify="left"))
        self.diff_bar = pg.ColorBarItem(values=(-1.0, 1.0), colorMap=pg.colormap.get(DIFF_MAP), interactive=False, width=14)
        self.diff_bar.setImageItem(self.diff_image)
        ci.addItem(self.diff_bar, row=4, col=n)

    # -- choices ---------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Fill the model boxes from the picker's list; keep choices; defaults: the current model
        and the next ones in the list (or, with one any-order model, other orderings)."""
        entries = self.entries()
        cur = self.state.entry
        for i, box in enumerate(self.model_boxes):
            prev = box.currentData()
            box.clear()
            box.addItem("—", None)
            name = cur.name if cur is not None else "untrained"
            box.addItem(f"current: {name}", CURRENT)
            for e in entries:
                if cur is None or Path(e.path) != Path(cur.path):
                    box.addItem(f"{e.name} · {e.family.upper()}", str(e.path))
            if prev is not None and box.findData(prev) >= 0:
                box.setCurrentIndex(box.findData(prev))
            else:
                box.setCurrentIndex(min(box.count() - 1, i + 1) if i < 2 else 0)
        if self.model_boxes[1].currentData() is None or self.model_boxes[1].count() <= 2:
            # only the current model: compare it with itself under another ordering
            self.model_boxes[1].setCurrentIndex(1)
            self.order_boxes[1].setCurrentIndex(self.order_boxes[1].findData("snake"))
        self.schedule()

    def choose(self, column: int, model: str | None, ordering: str | None = None) -> None:
        """Pick a column's model (a checkpoint path, ``"__current__"`` or None) and ordering name."""
        self.model_boxes[column].setCurrentIndex(self.model_boxes[column].findData(model))
        self.order_boxes[column].setCurrentIndex(self.order_boxes[column].findData(ordering))
        self.schedule()

    def _specs(self) -> tuple[list, list[str], list[int]]:
        specs, labels, cols = [], [], []
        for i, (mb, ob) in enumerate(zip(self.model_boxes, self.order_boxes, strict=True)):
            data = mb.currentData()
            if data is None:
                continue
            model = self.state.model if data == CURRENT else data
            if model is None:
                continue
            oname = ob.currentData()
            order = None if oname is None else make_ordering(oname, 28, 28, seed=0 if oname == "random" else None)
            specs.append((model, order))
            labels.append(f"{'ABCD'[i]}: {mb.currentText().removeprefix('current: ')}" + (f" · {oname}" if oname else ""))
            cols.append(i)
        return specs, labels, cols

    # -- computing ---------------------------------------------------------------------------------
    def schedule(self, *_: object) -> None:
        if self.isVisible():
            self._debounce.start()

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        self.schedule()

    def current_key(self) -> tuple:
        """(model key, canvas version, the columns' labels): what the maps on show should belong to."""
        return self._key(self._specs()[1])

    def _key(self, labels: list[str]) -> tuple:
        return (self.state.model_key, self.state.session.version, tuple(labels))

    @property
    def up_to_date(self) -> bool:
        """The maps shown belong to the current canvas, model and choices."""
        return self.requests.shown == self.current_key()

    def request(self) -> None:
        specs, labels, cols = self._specs()
        if not specs:
            return
        self.note.setText("computing…")
        self._pending = (labels, cols)
        self.requests.submit(self._key(labels), compare_job, self._models, specs, self.state.session.intensity.copy())

    def _on_result(self, _key: tuple, figs: list[PixelFigures | str]) -> None:  # what compare_job returns
        labels, cols = self._pending
        self.results = list(zip(labels, figs, strict=True))
        self.result_columns = cols
        d = self.state.session.height * self.state.session.width
        if len(figs) != len(self.columns):
            self._build(len(figs))
        rows = []
        levels = {f.levels for f in figs if not isinstance(f, str)}
        grey, binary = any(k > 2 for k in levels), 2 in levels
        self.bar.getAxis("left").setLabel("expected ink" if grey and binary else "expected intensity" if grey else "probability")
        self.diff_what.setItemText(0, {(True, True): "p(x_i = 1 | x_<i) or E[x_i | x_<i] / (K−1)",
                                       (True, False): "E[x_i | x_<i] / (K−1), the expected intensity"}.get(
                                           (grey, binary), "p(x_i = 1 | x_<i)"))
        for c, label, f in zip(self.columns, labels, figs, strict=True):
            c.title.setText(label if isinstance(f, str) or f.levels == 2 else f"{label} · {f.levels} levels")
            c.image.setVisible(not isinstance(f, str))  # no map rather than a misleading blank one
            if isinstance(f, str):
                c.totals.setText(f"<span style='color:#f87171'>{f}</span>")
            else:
                nats = -f.log_p
                c.image.setImage(f.prob.astype(np.float32), levels=(0.0, 1.0), autoLevels=False)
                c.totals.setText(f"&minus;log p = <b>{nats:.1f}</b> nats · {nats / (d * math.log(2)):.4f} bits/pixel")
                rows.append(f"{label.split(':')[0]}: {nats:8.1f} nats  = {nats / math.log(2):7.1f} bits")
        self._summary_rows = rows
        self.note.setText("")
        self._show_diff()
        self.computed.emit()

    def _show_diff(self) -> None:
        if not self.results:
            return
        what = self.diff_what.currentData()
        lim = DIFF_LEVELS[what]
        cols = self.result_columns
        a, b = self.diff_a.currentData(), self.diff_b.currentData()
        fa = self.results[cols.index(a)][1] if a in cols else None
        fb = self.results[cols.index(b)][1] if b in cols else None
        self.diff_bar.setLevels((-lim, lim))
        if fa is None or fb is None or isinstance(fa, str) or isinstance(fb, str):
            self.diff = None
            self.diff_image.setImage(np.zeros((28, 28), np.float32), levels=(-lim, lim), autoLevels=False)
            self.diff_image.setVisible(False)
            self.diff_title.setText("difference: choose two columns that have maps")
            self.summary.setText("<br>".join(self._summary_rows))
            return
        va, vb = (fa.prob, fb.prob) if what == "prob" else (fa.nll, fb.nll)
        self.diff = (va - vb).astype(np.float32)
        self.diff_image.setImage(np.clip(self.diff, -lim, lim), levels=(-lim, lim), autoLevels=False)
        self.diff_image.setVisible(True)
        total = float(fa.log_p - fb.log_p)
        A, B = "ABCD"[a], "ABCD"[b]
        prob_html = P_HTML if fa.levels == fb.levels == 2 else E_HTML if fa.levels > 2 and fb.levels > 2 else f"{P_HTML} or {E_HTML}"
        self.diff_title.setText(f"{A} &minus; {B}: {prob_html if what == 'prob' else NLL_HTML}")
        if fa.levels == fb.levels:
            versus = f"<br><br>log p({A}) &minus; log p({B}) = <b>{total:+.1f}</b> nats"
        else:  # the drawing at K levels and at K' is not the same data: the totals do not compare
            versus = (f"<br><br>{A} sees the drawing at {fa.levels} levels, {B} at {fb.levels}: "
                      "their log p are of different images and do not compare")
        self.summary.setText(
            "<br>".join(self._summary_rows)
            + versus
            + f"<br><span style='color:#f87171'>red</span>: {A} {'expects more ink' if what == 'prob' else 'more surprised'} · "
            + f"<span style='color:#60a5fa'>blue</span>: {B} {'expects more ink' if what == 'prob' else 'more surprised'}"
            + f"<br>fixed scale &plusmn;{lim:g}{'' if what == 'prob' else ' nats (clipped)'}")


class CompareMenu(QObject):
    """View ▸ Compare Models… (``action``) and the dialog it opens (``dialog``, made on first use)."""

    def __init__(self, win: QMainWindow, state: AppState, entries: Callable[[], list]):
        super().__init__(win)
        self.win, self.state, self.entries = win, state, entries
        self.dialog: CompareDialog | None = None
        view = next(m for a in win.menuBar().actions() if isinstance(m := a.menu(), QMenu) and a.text().replace("&", "") == "View")
        self.action = QAction("&Compare Models…", win)
        self.action.setShortcut(QKeySequence("Ctrl+K"))
        self.action.setStatusTip("The canvas under two to four models or orderings, side by side")
        view.addSeparator()
        view.addAction(self.action)
        self.action.triggered.connect(lambda _c=False: self.open())

    def open(self) -> None:
        if self.dialog is None:
            self.dialog = CompareDialog(self.state, self.entries, self.win)
        if self.dialog.isVisible():
            self.dialog.raise_()  # already open (maybe behind the window): bring it forward
        else:
            self.dialog.show()


def install(win: QMainWindow, state: AppState, entries: Callable[[], list]) -> CompareMenu:
    """Add View ▸ Compare Models… to the menu bar of ``win``; the dialog (on ``state``, choosing
    among ``entries()``) is made on first use."""
    return CompareMenu(win, state, entries)
