"""The pixel inspector and the likelihood read-out.

:class:`Inspector` shows, for the hovered (or pinned) pixel, its coordinates, its step in the
ordering, the drawn value, ``p(x_i = 1 | x_<i)`` and the NLL of the drawn value in nats, and how
many pixels its conditional sees. For a model of K > 2 grey levels it shows the pixel's whole
conditional ``p(x_i = v | x_<i)`` as a bar chart over the K levels (PixelRNN's figure, for any
pixel), the drawn level marked, with its mean ``E[x_i | x_<i]`` and its entropy in nats and bits.
:class:`ReadOut` is the status area under the canvas: the total ``log p(x)`` in nats, the bits per
pixel ``-log2 p(x) / D`` ("bits/dim" for a grey model, as the grey literature says), and the
percentile of ``log p(x)`` among the test digits under the same model and ordering.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engine.figures import EnsembleFigures, PixelFigures
from engine.ordering import Ordering

__all__ = ["Inspector", "ReadOut", "LevelChart", "level_ticks"]

BAR = "#38bdf8"
DRAWN = "#facc15"
MEAN = "#f472b6"


def level_ticks(k: int) -> list[int]:
    """The labelled levels of a K-level axis: both ends and the quarters between them."""
    return sorted({0, k // 4, k // 2, 3 * k // 4, k - 1})


class LevelChart(pg.PlotWidget):
    """A grey pixel's conditional over its K levels as bars, the drawn level's bar in yellow and the
    mean as a dashed line. ``heights`` and ``drawn`` hold what is shown (tests read them)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, background="#14171c")
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setMinimumHeight(150)
        self.setMaximumHeight(190)
        pl = self.getPlotItem()
        pl.setLabel("bottom", "level v")
        pl.getAxis("bottom").setStyle(hideOverlappingLabels=False)  # the label of level K-1 at the axis's end too
        pl.setTitle(f"<span style='color:{BAR}'>p(x<sub>i</sub> = v | x<sub>&lt;i</sub>)</span> &nbsp; "
                    f"<span style='color:{DRAWN}'>&#9632; drawn</span> &nbsp; <span style='color:{MEAN}'>&#8942; mean</span>",
                    size="8pt")
        pl.setLabel("left", "p(v)")
        pl.getAxis("left").enableAutoSIPrefix(False)  # probabilities, never "x0.001"
        pl.getAxis("left").setWidth(46)
        self.bars = pg.BarGraphItem(x=[0], height=[0], width=1.0, brush=BAR, pen=None)
        self.drawn_bar = pg.BarGraphItem(x=[0], height=[0], width=1.0, brush=DRAWN, pen=pg.mkPen(DRAWN, width=1))
        self.mean_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(MEAN, width=1.5, style=Qt.PenStyle.DashLine))
        for item in (self.bars, self.drawn_bar, self.mean_line):
            self.addItem(item)
        self.heights = np.zeros(0)
        self.drawn = -1

    def show_distribution(self, q: np.ndarray, drawn: int, mean: float) -> None:
        k = len(q)
        x = np.arange(k, dtype=np.float64)
        self.heights = np.asarray(q, np.float64)
        self.drawn = int(drawn)
        self.bars.setOpts(x=x, height=self.heights, width=1.0)
        # the drawn level stands out even where the model gives it almost nothing: its bar is at least
        # a few percent of the tallest one, and at least a few levels wide when K is large
        top = float(self.heights.max()) if k else 1.0
        self.drawn_bar.setOpts(x=[drawn], height=[max(float(self.heights[drawn]), 0.04 * top)], width=max(1.0, k / 85))
        self.mean_line.setValue(mean)
        # a margin of a few levels each side: levels 0 and K-1 (paper and full ink, where most of a
        # digit's mass sits) stand clear of the axes instead of hiding in them; both ends labelled,
        # with room on the right for the last label, which is centred on level K-1
        self.setXRange(-0.5 - max(0.5, 0.025 * k), k - 0.5 + max(0.5, 0.06 * k), padding=0)
        self.getPlotItem().getAxis("bottom").setTicks([[(v, str(v)) for v in level_ticks(k)]])
        self.setYRange(0.0, top * 1.08 if top > 0 else 1.0, padding=0)


def given_text(figures: PixelFigures | None) -> str:
    """The class a conditional model's conditionals are given ("" for an unconditional model): one
    class, or any (the marginal over classes)."""
    if figures is None or figures.classes is None:
        return ""
    return f"y = {figures.given}" if figures.given is not None else f"any y (sum over {figures.classes.classes})"


def _value(text: str = "–") -> QLabel:
    lab = QLabel(text)
    lab.setObjectName("value")
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


class Inspector(QGroupBox):
    unpinRequested = Signal()  #: the Unpin button was pressed

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Pixel inspector", parent)
        lay = QVBoxLayout(self)
        self.mode = QLabel("Hover a pixel; click it with the Inspect tool (or Ctrl+click) to pin it.")
        self.mode.setWordWrap(True)
        self.mode.setObjectName("hint")
        lay.addWidget(self.mode)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fields = {k: _value() for k in ("pixel", "step", "value", "prob", "nll", "context", "entropy", "given", "members")}
        self.labels: dict[str, QLabel] = {}
        for key, text in (("pixel", "pixel (row, col)"), ("step", "step in ordering"), ("value", "drawn value x<sub>i</sub>"),
                          ("prob", "p(x<sub>i</sub> = 1 | x<sub>&lt;i</sub>)"), ("nll", "&minus;log p(x<sub>i</sub> | x<sub>&lt;i</sub>)"),
                          ("entropy", "entropy H[x<sub>i</sub> | x<sub>&lt;i</sub>]"), ("context", "conditioned on"),
                          ("given", "and the class"), ("members", "members' weights")):
            lab = QLabel(text)
            lab.setTextFormat(Qt.TextFormat.RichText)
            self.labels[key] = lab
            form.addRow(lab, self.fields[key])
        self._form = form
        form.setRowVisible(self.fields["entropy"], False)  # grey models only
        form.setRowVisible(self.fields["given"], False)  # class-conditional models only
        form.setRowVisible(self.fields["members"], False)  # ensembles (mixtures) only
        self.fields["members"].setWordWrap(True)
        self.fields["members"].setTextFormat(Qt.TextFormat.RichText)
        self.fields["members"].setToolTip("an ensemble's members, each weighted in this pixel's conditional by how well it "
                                          "explains the pixels before it: p(member | x<sub>&lt;i</sub>)")
        lay.addLayout(form)
        self.chart = LevelChart()
        self.chart.setVisible(False)  # grey models only: a binary pixel's conditional is one number
        lay.addWidget(self.chart)
        self.levels = 2  #: the levels of the model whose figures are shown
        row = QHBoxLayout()
        self.unpin = QPushButton("Unpin")
        self.unpin.setEnabled(False)
        row.addStretch(1)
        row.addWidget(self.unpin)
        lay.addLayout(row)
        self.unpin.clicked.connect(self.unpinRequested)
        self.pixel = -1

    def show_pixel(self, idx: int, figures: PixelFigures | None, canvas: np.ndarray, ordering: Ordering | None, pinned: bool) -> None:
        self.pixel = idx
        self.unpin.setEnabled(pinned)
        self._set_levels(figures.levels if figures is not None else self.levels)
        if idx < 0:
            for lab in self.fields.values():
                lab.setText("–")
            if self.levels > 2:
                self.chart.show_distribution(np.zeros(self.levels), 0, 0.0)
            self.mode.setText("Hover a pixel; click it with the Inspect tool (or Ctrl+click) to pin it.")
            return
        w = canvas.shape[1]
        r, c = divmod(idx, w)
        self.mode.setText("<b>Pinned</b> – the pixels its conditional sees are tinted blue on the canvas." if pinned else "Hovering")
        self.fields["pixel"].setText(f"({r}, {c})   raster index {idx}")
        self.fields["value"].setText(str(int(canvas.reshape(-1)[idx])))
        if ordering is not None:
            t = int(ordering.inverse[idx])
            self.fields["step"].setText(f"{t + 1} of {ordering.size}   ({ordering.label})")
            self.fields["context"].setText(f"{t} earlier pixels")
        self._form.setRowVisible(self.fields["given"], figures is not None and figures.classes is not None)
        self.fields["given"].setText(given_text(figures))
        weights = figures.member_weights(idx) if figures is not None else []
        self._form.setRowVisible(self.fields["members"], bool(weights))
        self.fields["members"].setText(" &nbsp; ".join(f"{html.escape(label)} <b>{w:.0%}</b>" for label, w in weights))
        if figures is not None and figures.levels > 2:
            k = figures.levels
            drawn = int(np.clip(canvas.reshape(-1)[idx], 0, k - 1))
            q = figures.distribution(idx)
            mean = figures.mean_level(idx)
            ent = figures.entropy(idx)
            nll = float(figures.nll.reshape(-1)[idx])
            self.fields["value"].setText(f"{drawn} of 0–{k - 1}")
            self.fields["prob"].setText(f"{mean:.2f}  ({mean / (k - 1):.3f} of full ink)")
            self.fields["nll"].setText(f"{nll:.3f} nats  ({nll / math.log(2):.3f} bits)")
            self.fields["entropy"].setText(f"{ent:.3f} nats  ({ent / math.log(2):.3f} bits)")
            self.chart.show_distribution(q, drawn, mean)
        elif figures is not None:
            p = float(figures.prob.reshape(-1)[idx])
            nll = float(figures.nll.reshape(-1)[idx])
            self.fields["prob"].setText(f"{p:.4f}")
            self.fields["nll"].setText(f"{nll:.3f} nats  ({nll / math.log(2):.3f} bits)")
        else:
            self.fields["prob"].setText("–")
            self.fields["nll"].setText("–")
            self.fields["entropy"].setText("–")

    def _set_levels(self, levels: int) -> None:
        """Binary: today's rows. K > 2: the mean instead of p(x = 1), the entropy, the bar chart."""
        if levels == self.levels:
            return
        self.levels = levels
        grey = levels > 2
        self.labels["prob"].setText("E[x<sub>i</sub> | x<sub>&lt;i</sub>]" if grey else "p(x<sub>i</sub> = 1 | x<sub>&lt;i</sub>)")
        self._form.setRowVisible(self.fields["entropy"], grey)
        self.chart.setVisible(grey)


class _ElidedLabel(QLabel):
    """A one-line plain-text label that ends in "…" when it is narrower than its text (the full
    text is its tooltip)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.full_text = ""
        self.setTextFormat(Qt.TextFormat.PlainText)

    def set_full_text(self, text: str) -> None:
        self.full_text = text
        self.setToolTip(text)
        self._elide()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        self.setText(self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight, max(self.width(), 0)))


class ReadOut(QFrame):
    """The likelihood of the drawn digit, large and readable.

    One row when the window is wide enough for every figure; below that, two rows (log p and
    bits/pixel above, the percentile and the ensemble below), so no figure is ever cut off."""

    SPACING = 28

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("readout")
        lay = QGridLayout(self)
        self._grid = lay  #: kept: QWidget.layout() is declared to return a plain QLayout or None
        lay.setContentsMargins(12, 8, 12, 8)
        lay.setHorizontalSpacing(self.SPACING)
        lay.setVerticalSpacing(4)
        self.logp = QLabel()
        self.bpp = QLabel()
        self.pct = QLabel()
        self.ens = QLabel()  #: log p under an ensemble of orderings (order-agnostic models)
        self.model = _ElidedLabel()
        self.figure_labels = (self.logp, self.bpp, self.pct, self.ens)
        for lab in self.figure_labels:
            lab.setObjectName("big")
            lab.setTextFormat(Qt.TextFormat.RichText)
            lab.setMinimumWidth(10)  # the read-out never sets the window's width: it wraps (_relayout)
        self.model.setObjectName("hint")
        self.model.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.model.setMinimumWidth(10)
        self.model.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.two_rows: bool | None = None  #: how the figures are laid out now (None before the first layout)
        self.log_p: float | None = None
        self.percentile: float | None = None
        self.ensemble: EnsembleFigures | None = None
        self._pct_note: str | None = None  #: the whole note shown in place of the percentile
        self.set_figures(None)
        self.set_percentile(None, "")
        self.set_ensemble(None, 0)
        self._relayout()

    def one_row_width(self) -> int:
        """The width the figures need side by side on one row (margins and spacing included)."""
        shown = [lab for lab in self.figure_labels if not lab.isHidden()]
        m = self._grid.contentsMargins()
        return sum(lab.sizeHint().width() for lab in shown) + self.SPACING * len(shown) + m.left() + m.right()

    def _relayout(self) -> None:
        two = self.one_row_width() > self.width()
        if two == self.two_rows:
            return
        self.two_rows = two
        lay = self._grid
        for w in (*self.figure_labels, self.model):
            lay.removeWidget(w)
        for c in range(5):
            lay.setColumnStretch(c, 0)
        if two:
            places = {self.logp: (0, 0), self.bpp: (0, 1), self.pct: (1, 0), self.ens: (1, 1), self.model: (0, 2)}
            stretch = 2
        else:
            places = {self.logp: (0, 0), self.bpp: (0, 1), self.pct: (0, 2), self.ens: (0, 3), self.model: (0, 4)}
            stretch = 4
        for w, (r, c) in places.items():
            lay.addWidget(w, r, c)
        lay.setColumnStretch(stretch, 1)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._elide_note()
        self._relayout()

    def note_room(self) -> int:
        """The width the percentile's note may take: the read-out less its margins, the column
        beside it (bits/pixel or the ensemble) and the model's name."""
        m = self._grid.contentsMargins()
        beside = max(self.bpp.sizeHint().width(), self.ens.sizeHint().width() if not self.ens.isHidden() else 0)
        return max(60, self.width() - m.left() - m.right() - 2 * self.SPACING - beside - 40)

    def _elide_note(self) -> None:
        if self._pct_note is None:
            return
        shown = self.pct.fontMetrics().elidedText(self._pct_note, Qt.TextElideMode.ElideRight, self.note_room())
        self.pct.setText(html.escape(shown, quote=False))

    def set_figures(self, figures: PixelFigures | None) -> None:
        if figures is None:
            self.log_p = None
            self.logp.setText("<span class='k'>log p(x)</span> –")
            self.bpp.setText("– bits/pixel")
            return
        self.log_p = figures.log_p
        self.logp.setText(f"log p(x) = <b>{figures.log_p:.2f}</b> nats")
        unit = "bits/pixel" if figures.levels == 2 else "bits/dim"  # (the grey literature's name for it)
        self.bpp.setText(f"<b>{figures.bits_per_pixel:.4f}</b> {unit}")
        self._relayout()

    def set_percentile(self, pct: float | None, note: str) -> None:
        """``pct``: percent of the reference digits less likely than the drawn one; ``note`` says
        which digits ("among 10,000 test digits")."""
        self.percentile = pct
        self._pct_note = None
        if pct is None or not math.isfinite(pct):
            # a note, maybe a long error (no test digits: where to put them): one line, cut to the
            # room there is, the whole text in the tooltip
            self._pct_note = " ".join(f"percentile: {note or '–'}".split())
            self.pct.setToolTip(self._pct_note)
            self._elide_note()
        elif pct >= 100.0:  # more likely than every reference digit (a blank canvas, say)
            self.pct.setText(f"<b>above every one</b> {note.replace('among ', 'of ', 1)}")
        elif pct <= 0.0:
            self.pct.setText(f"<b>below every one</b> {note.replace('among ', 'of ', 1)}")
        else:
            self.pct.setText(f"<b>{_ordinal(pct)}</b> percentile {note}")
        self._relayout()

    def set_ensemble(self, figures: EnsembleFigures | None, n: int, ordering_log_p: float | None = None,
                     kind: str = "orderings") -> None:
        """Show log p under an ensemble of ``n`` members that differ in ``kind`` ("orderings" or
        "masks"); ``n == 0`` hides it (no ensemble), ``figures`` None with ``n > 0`` says it is being
        computed."""
        self.ensemble = figures
        self.ens.setVisible(n > 0)
        if n <= 0:
            self.ens.setToolTip("")
            self._relayout()
            return
        if figures is None:
            self.ens.setText(f"<span class='k'>ensemble of {n}</span> …")
            self._relayout()
            return
        self.ens.setText(f"ensemble of {n} {kind}: <b>{figures.log_p:.2f}</b> nats")
        (bl, bv), (wl, wv) = figures.best, figures.worst
        if kind == "masks":
            what = (f"log p(x) under the mixture of {n} connectivity patterns (masks) this model was trained over, "
                    "all in its one ordering: the log of the mean of their probabilities (log-mean-exp).")
        else:
            what = (f"log p(x) under the mixture of {n} orderings{' and masks' if '· mask' in bl else ''} of this "
                    "order-agnostic model: the log of the mean of their probabilities (log-mean-exp), one distribution "
                    "whatever ordering the heatmaps show.")
        lines = [
            what + " It is at least the mean of the members' log p and at most the best one's.",
            f"best member: {bl}, {bv:.2f} nats",
            f"worst member: {wl}, {wv:.2f} nats",
        ]
        if ordering_log_p is not None:
            lines.append(f"the ordering shown: {ordering_log_p:.2f} nats")
        self.ens.setToolTip("\n".join(lines))
        self._relayout()

    def show_ensemble(self, text: str) -> None:
        """Say ``text`` where the ensemble's log p goes (it could not be computed, say)."""
        self.ens.setText(text)

    def shows_ensemble(self) -> bool:
        """The model has an ensemble, so the read-out has a line for it."""
        return not self.ens.isHidden()

    def set_percentile_tooltip(self, text: str) -> None:
        self.pct.setToolTip(text)

    @property
    def percentile_text(self) -> str:
        """The whole text of the percentile's line (a long note is cut on screen)."""
        return self._pct_note if self._pct_note is not None else self.pct.text()

    def set_model_text(self, text: str) -> None:
        self.model.set_full_text(text)


def _ordinal(pct: float) -> str:
    n = int(round(pct))
    n = min(max(n, 1), 99)  # the extremes read "above/below every one" (ReadOut.set_percentile)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
