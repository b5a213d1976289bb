"""Which digit the drawing is, by Bayes' rule, and which pixels say so (a class-conditional model).

:class:`ClassPanel` shows two things from one :class:`engine.class_figures.ClassFigures`:

* a bar chart of p(y | canvas) over the classes, from the pixels of the ordering drawn so far
  (the note under it says which);
* the evidence map, ``log p(x_i | x_<i, y = a) - log p(x_i | x_<i, y = b)`` per pixel for two classes
  (the two most probable ones, or two picked in the combo boxes), on a diverging scale symmetric
  around 0: red argues for ``a``, blue for ``b``; pixels after the prefix, which the posterior does
  not count, are grey.

It also holds the class the heatmaps and the inspector are conditioned on ("any": the marginal over
classes). The panel only shows and asks (signals); :class:`app.classes.ClassesController` decides.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from engine.class_figures import ClassFigures

from .colors import EVIDENCE_MAP, lookup_table

__all__ = ["ClassPanel", "FOR_A", "FOR_B", "Pick", "class_combo", "resolve_pair"]

FOR_A = "#e65042"  #: the colour of the class red pixels argue for (the red end of the scale)
FOR_B = "#1981fa"  #: ... and of the one blue pixels argue for (the blue end)
BAR = "#64748b"
#: pixels after the prefix, which the posterior does not count yet
NOT_COUNTED = (58, 63, 72)
#: the smallest half-range of the evidence scale, nats (a faint map is not stretched to full colour)
MIN_SCALE = 0.05
ANY = "any"


def class_combo(classes: int, first: str) -> QComboBox:
    """A combo box of ``first`` (its data None) then the classes 0 .. C-1."""
    box = QComboBox()
    fill_classes(box, classes, first)
    return box


def fill_classes(box: QComboBox, classes: int, first: str) -> None:
    box.blockSignals(True)
    box.clear()
    box.addItem(first, None)
    for c in range(classes):
        box.addItem(str(c), c)
    box.blockSignals(False)


def select_class(box: QComboBox, cls: int | None) -> None:
    """Show ``cls`` in ``box`` without emitting (the state already holds it)."""
    i = box.findData(cls) if cls is not None else 0
    box.blockSignals(True)
    box.setCurrentIndex(max(i, 0))
    box.blockSignals(False)


#: the evidence map's classes as picked: (a, b), None where the most probable ("top") or the next ("2nd")
Pick = tuple[int | None, int | None]


def resolve_pair(figs: ClassFigures, pick: Pick) -> tuple[int, int]:
    """The classes (a, b) of the evidence map: the picked ones, the most probable in place of a
    missing ``a`` and the most probable other than ``a`` in place of a missing ``b``."""
    a, b = pick
    ranked = figs.ranked()
    if a is None:
        a = next(c for c in ranked if c != b)
    if b is None:
        b = next(c for c in ranked if c != a)
    return int(a), int(b)


def nice_scale(values: np.ndarray) -> float:
    """The half-range of a symmetric scale for ``values``: the 98th percentile of their sizes (a
    few outlying pixels are clipped to the end colours rather than wash out the rest), rounded up
    to 1, 2 or 5 times a power of ten, at least :data:`MIN_SCALE`."""
    finite = np.abs(values[np.isfinite(values)])
    top = max(float(np.percentile(finite, 98)) if finite.size else 0.0, MIN_SCALE)
    for p in range(-2, 4):
        for step in (1.0, 2.0, 5.0):
            if step * 10.0**p >= top:
                return step * 10.0**p
    return top


class _Bars(pg.PlotWidget):
    """p(y | canvas) as bars, the evidence map's two classes in its colours with their values."""

    def __init__(self) -> None:
        super().__init__(background="#14171c")
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        pl = self.getPlotItem()
        pl.getAxis("left").enableAutoSIPrefix(False)
        pl.getAxis("left").setWidth(30)
        pl.getAxis("left").setTicks([[(v, f"{v:g}") for v in (0.0, 0.5, 1.0)]])
        self.bars = pg.BarGraphItem(x=np.arange(10), height=np.zeros(10), width=0.75, brush=BAR, pen=None)
        self.addItem(self.bars)
        self.labels = [pg.TextItem("", color="#e6ebf2", anchor=(0.5, 1.0)) for _ in range(2)]
        for t in self.labels:
            self.addItem(t)
        self.set_classes(10)

    def set_classes(self, classes: int) -> None:
        pl = self.getPlotItem()
        pl.getAxis("bottom").setTicks([[(c, str(c)) for c in range(classes)]])
        self.setXRange(-0.6, classes - 0.4, padding=0)
        self.setYRange(0.0, 1.05, padding=0)

    def show_posterior(self, p: np.ndarray, a: int, b: int) -> None:
        brushes = [pg.mkBrush(FOR_A if c == a else FOR_B if c == b else BAR) for c in range(len(p))]
        self.bars.setOpts(x=np.arange(len(p)), height=p, width=0.75, brushes=brushes)
        for t, c in zip(self.labels, (a, b), strict=True):
            t.setText(f"{p[c]:.2f}")
            inside = p[c] > 0.7  # a tall bar carries its value inside, below its top
            t.setAnchor((0.5, 0.0) if inside else (0.5, 1.0))
            t.setPos(c, float(p[c]))


class _Evidence(pg.GraphicsLayoutWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setBackground("#14171c")
        self.vb = self.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        self.vb.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setImage(np.zeros((28, 28, 4), np.uint8), autoLevels=False)
        self.vb.addItem(self.image)
        self.vb.setRange(xRange=(0, 28), yRange=(0, 28), padding=0.02)

    def show_rgba(self, rgba: np.ndarray) -> None:
        self.image.setImage(rgba, autoLevels=False, levels=(0, 255))


def evidence_rgba(ev: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 4) uint8 colours of an evidence map on the diverging scale -scale..scale (blue..red);
    NaN pixels (outside the prefix) grey."""
    lut = lookup_table(256, EVIDENCE_MAP)
    t = np.clip((np.nan_to_num(ev, nan=0.0) / scale + 1.0) / 2.0, 0.0, 1.0)
    rgb = lut[np.rint(t * 255).astype(np.int64)]
    out = np.empty(ev.shape + (4,), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = 255
    out[~np.isfinite(ev)] = (*NOT_COUNTED, 255)
    return out


class ClassPanel(QWidget):
    """The class read-out under a conditional model (see the module docstring)."""

    givenPicked = Signal(object)  #: the class the conditionals are shown for (None: the marginal, "any")
    pairPicked = Signal(object)  #: the evidence map's classes (a, b) as picked, None where "top" / "2nd"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.setSpacing(4)
        head = QHBoxLayout()
        self.title = QLabel("Which digit?  <span style='color:#8b95a5'>p(y | canvas)</span>")
        self.title.setObjectName("section")
        self.title.setMinimumWidth(10)
        self.title.setToolTip("Bayes' rule: p(y | x) is proportional to p(y) p(x | y), with p(x | y) from the model")
        head.addWidget(self.title, 1)
        head.addWidget(_hint("heatmaps given"))
        self.given = class_combo(10, ANY)
        self.given.setToolTip("Show the heatmaps and the inspector for p(x | y) of one digit; "
                              "'any' shows the marginal p(x) = sum_y p(y) p(x | y)")
        head.addWidget(self.given)
        lay.addLayout(head)

        self.bars = _Bars()
        self.evidence = _Evidence()
        for w in (self.bars, self.evidence):
            w.setMinimumSize(120, 110)
            w.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        erow = QHBoxLayout()
        self.pick_a = class_combo(10, "top")
        self.pick_a.setToolTip("The digit red pixels argue for ('top': the most probable)")
        self.pick_b = class_combo(10, "2nd")
        self.pick_b.setToolTip("The digit blue pixels argue for ('2nd': the most probable other one)")
        erow.addStretch(1)
        erow.addWidget(_hint("evidence"))
        erow.addWidget(self.pick_a)
        erow.addWidget(_hint("vs"))
        erow.addWidget(self.pick_b)
        erow.addStretch(1)
        self.note = QLabel("–")
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        self.note.setMinimumWidth(10)
        self.note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.legend = _Legend()
        left, right = QVBoxLayout(), QVBoxLayout()
        for col in (left, right):
            col.setSpacing(3)
        left.addWidget(self.bars, 1)
        left.addWidget(self.note)
        right.addWidget(self.evidence, 1)
        right.addWidget(self.legend)
        right.addLayout(erow)
        cols = QHBoxLayout()
        cols.setSpacing(10)
        cols.addLayout(left, 1)
        cols.addLayout(right, 1)
        lay.addLayout(cols, 1)
        self.setMaximumHeight(320)  # the canvas above keeps most of the column

        self.figures: ClassFigures | None = None
        self.pair: tuple[int, int] | None = None  #: the classes of the evidence map shown
        self.values = np.zeros(0)  #: the bar heights shown, p(y | canvas)
        self.evidence_shown: np.ndarray | None = None  #: (H, W) the evidence map shown, NaN outside the prefix
        self.scale = MIN_SCALE
        self.given.currentIndexChanged.connect(lambda _i: self.givenPicked.emit(self.given.currentData()))
        self.pick_a.currentIndexChanged.connect(self._pair_changed)
        self.pick_b.currentIndexChanged.connect(self._pair_changed)

    # -- intent methods ---------------------------------------------------------------------------
    def set_classes(self, classes: int) -> None:
        """A model of ``classes`` classes is shown: the pickers offer them, nothing is shown yet."""
        for box, first in ((self.given, ANY), (self.pick_a, "top"), (self.pick_b, "2nd")):
            fill_classes(box, classes, first)
        self.bars.set_classes(classes)
        self.figures = None

    def set_given(self, cls: int | None) -> None:
        select_class(self.given, cls)

    def set_pair(self, pick: Pick) -> None:
        select_class(self.pick_a, pick[0])
        select_class(self.pick_b, pick[1])

    def show_classes(self, figs: ClassFigures, pick: Pick = (None, None)) -> None:
        """Show the posterior and the evidence between the classes ``pick`` (None: the most
        probable, the second most probable, :func:`resolve_pair`)."""
        self.figures = figs
        a, b = resolve_pair(figs, pick)
        self.pair = (a, b)
        p = figs.posterior
        self.values = p
        self.bars.show_posterior(p, a, b)
        ev = figs.evidence(a, b)
        self.evidence_shown = ev
        self.scale = nice_scale(ev)
        self.evidence.show_rgba(evidence_rgba(ev, self.scale))
        best = figs.ranked()[0]
        odds = float(figs.log_post[a] - figs.log_post[b])
        self.note.setText(f"most probable: <b>{best}</b> ({p[best]:.0%}) · {figs.note}<br>"
                          f"log p({a} | x) − log p({b} | x) = {odds:+.2f} nats")
        self.legend.show_pair(a, b, self.scale)

    def _pair_changed(self, _i: int) -> None:
        self.pairPicked.emit((self.pick_a.currentData(), self.pick_b.currentData()))


def _hint(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setObjectName("hint")
    return lab


class _Legend(QWidget):
    """The evidence scale: which colour argues for which digit and how many nats its ends are."""

    def __init__(self) -> None:
        super().__init__()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.left = QLabel()
        self.bar = QLabel()
        self.bar.setFixedHeight(10)
        self.bar.setMinimumWidth(24)
        self.right = QLabel()
        for lab in (self.left, self.right):
            lab.setObjectName("legend")
        row.addWidget(self.left)
        row.addWidget(self.bar, 1)
        row.addWidget(self.right)
        lut = lookup_table(9, EVIDENCE_MAP)
        stops = ", ".join(f"stop:{i / 8:.3f} rgb({r},{g},{b})" for i, (r, g, b) in enumerate(lut.tolist()))
        self.bar.setStyleSheet(f"background: qlineargradient(x1:0, y1:0, x2:1, y2:0, {stops}); border-radius: 3px;")

    def show_pair(self, a: int, b: int, scale: float) -> None:
        self.left.setText(f"<b style='color:{FOR_B}'>{b}</b> −{scale:g}")
        self.right.setText(f"+{scale:g} nats <b style='color:{FOR_A}'>{a}</b>")
        self.setToolTip(f"Each pixel drawn so far: log p(x_i | x_<i, y={a}) − log p(x_i | x_<i, y={b}) in nats, clipped to "
                        f"±{scale:g}. Red pixels argue for {a}, blue for {b}, black for neither; summed with the prior's "
                        f"log-odds they give the posterior log-odds log p({a} | x) − log p({b} | x). Grey pixels come after "
                        "the last drawn one in the ordering and are not counted.")
