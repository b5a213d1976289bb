"""Live heatmaps of the model's conditionals for the drawn digit (pyqtgraph).

Two maps, each a row-major :class:`pyqtgraph.ImageItem` with *fixed* levels and a
:class:`pyqtgraph.ColorBarItem`, so colours mean the same thing from one update to the next:

* ``p(x_i = 1 | x_<i)`` -- what the model expects at each pixel given the pixels before it in the
  ordering, on a 0..1 scale;
* ``-log p(x_i | x_<i)`` -- how surprising the drawn value is, in nats, on a 0..``NLL_MAX`` scale
  (larger values are clipped to the top colour; the inspector shows the exact number).

For a model of K > 2 grey levels the first map is the expected intensity ``E[x_i | x_<i] / (K - 1)``
(on the same 0..1 scale) and the second the NLL of the drawn level on a 0..``NLL_MAX_GREY`` scale
(a K-way conditional can be surprised by up to log K nats).

Hovering a map reports the pixel like hovering the canvas; clicking pins it.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Signal
from PySide6.QtGui import QColor, QPen, QResizeEvent
from PySide6.QtWidgets import QGraphicsRectItem, QWidget

from .colors import NLL_MAP, PROB_MAP

__all__ = ["HeatmapPanel", "NLL_MAX", "NLL_MAX_GREY"]

NLL_MAX = 5.0
NLL_MAX_GREY = 8.0

PROB_TITLE = "p(x<sub>i</sub> = 1 | x<sub>&lt;i</sub>)"
MEAN_TITLE = "E[x<sub>i</sub> | x<sub>&lt;i</sub>] / (K&minus;1), the expected intensity"
NLL_TITLE = "&minus;log p(x<sub>i</sub> | x<sub>&lt;i</sub>) of the drawn value"


class _Map:
    def __init__(self, layout: pg.GraphicsLayout, row: int, title: str, cmap: str, levels: tuple[float, float], label: str):
        # the title is a row of its own across the panel, not the plot's: a plot title sits in the
        # image's column only, and its width would then push the colour bar's ticks out of a narrow panel
        self.title = layout.addLabel(title, row=2 * row, col=0, size="11pt")
        self.plot = layout.addPlot(row=2 * row + 1, col=0)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        for side in ("left", "bottom"):
            ax = self.plot.getAxis(side)
            ax.setTicks([[(v + 0.5, str(v)) for v in (0, 7, 14, 21, 27)]])
            ax.setStyle(tickLength=-4)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.levels = levels
        self.image.setImage(np.zeros((28, 28), np.float32), levels=levels, autoLevels=False)
        self.plot.addItem(self.image)
        self.plot.setRange(xRange=(0, 28), yRange=(0, 28), padding=0.01)
        self.bar = pg.ColorBarItem(values=levels, colorMap=pg.colormap.get(cmap), interactive=False, width=14, label=label)
        self.bar.setImageItem(self.image, insert_in=self.plot)
        self.marker = QGraphicsRectItem(QRectF(0, 0, 1, 1))
        self.marker.setPen(pg.mkPen("#facc15", width=2, cosmetic=True))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        self.hover = QGraphicsRectItem(QRectF(0, 0, 1, 1))
        self.hover.setPen(QPen(QColor(255, 255, 255, 200), 0))
        self.hover.setVisible(False)
        self.plot.addItem(self.hover)

    def set(self, data: np.ndarray) -> None:
        self.image.setImage(np.asarray(data, np.float32), levels=self.levels, autoLevels=False)

    def set_scale(self, title: str, levels: tuple[float, float], label: str) -> None:
        self.title.setText(title, size="11pt")
        self.levels = levels
        self.bar.setLevels(values=levels)
        self.bar.getAxis("left").setLabel(label)  # where ColorBarItem puts its label


class HeatmapPanel(pg.GraphicsLayoutWidget):
    hovered = Signal(int)
    pinned = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setBackground("#14171c")
        self.ci.setSpacing(14)
        self.prob = _Map(self.ci, 0, PROB_TITLE, PROB_MAP, (0.0, 1.0), "probability")
        self.nll = _Map(self.ci, 1, NLL_TITLE, NLL_MAP, (0.0, NLL_MAX), "nats")
        self.levels = 2  #: the levels of the model whose figures are shown
        self.maps = (self.prob, self.nll)
        self.updates = 0  #: how many results have been shown (tests and the bench watch it)
        self.shape = (28, 28)
        self._hover = -1
        self.scene().sigMouseMoved.connect(self._on_move)
        self.scene().sigMouseClicked.connect(self._on_click)
        self.setMinimumWidth(220)  # with the colour bars: fits the middle column of a 1024 px window

    def show_figures(self, prob: np.ndarray, nll: np.ndarray, levels: int = 2) -> None:
        """``prob``: p(x_i = 1 | x_<i), or for ``levels`` K > 2 E[x_i | x_<i] / (K - 1)."""
        self.set_levels(levels)
        self.shape = prob.shape
        self.prob.set(prob)
        self.nll.set(np.minimum(nll, self.nll.levels[1]))
        self.updates += 1

    def set_levels(self, levels: int) -> None:
        """Title and scale the maps for a binary model or one of ``levels`` K > 2 grey levels."""
        if levels == self.levels:
            return
        self.levels = levels
        if levels > 2:
            self.prob.set_scale(MEAN_TITLE, (0.0, 1.0), "intensity")
            self.nll.set_scale(NLL_TITLE, (0.0, NLL_MAX_GREY), "nats")
        else:
            self.prob.set_scale(PROB_TITLE, (0.0, 1.0), "probability")
            self.nll.set_scale(NLL_TITLE, (0.0, NLL_MAX), "nats")
        self.resizeEvent(QResizeEvent(self.size(), self.size()))  # re-wrap the new titles

    def _pixel(self, scene_pos: QPointF) -> int:
        h, w = self.shape
        for m in getattr(self, "maps", ()):  # (a resize may come during construction)
            if m.plot.vb.sceneBoundingRect().contains(scene_pos):
                pt = m.plot.vb.mapSceneToView(scene_pos)
                r, c = int(np.floor(pt.y())), int(np.floor(pt.x()))
                if 0 <= r < h and 0 <= c < w:
                    return r * w + c
        return -1

    def set_marker(self, idx: int, which: str = "pin") -> None:
        h, w = self.shape
        for m in getattr(self, "maps", ()):  # (a resize may come during construction)
            item = m.marker if which == "pin" else m.hover
            if idx < 0:
                item.setVisible(False)
            else:
                r, c = divmod(idx, w)
                item.setRect(QRectF(c, r, 1, 1))
                item.setVisible(True)

    def resizeEvent(self, ev: QResizeEvent) -> None:  # noqa: N802 (Qt)
        # a title wider than a narrow panel (a 1024 px window) wraps onto two lines rather than
        # widen the column and push the colour bar out
        room = max(self.viewport().width() - 24, 60)
        for m in getattr(self, "maps", ()):  # (a resize may come during construction)
            item = m.title.item
            item.setTextWidth(-1)
            if item.boundingRect().width() > room:
                item.setTextWidth(room)
            m.title.updateMin()
        super().resizeEvent(ev)

    def _on_move(self, pos: QPointF) -> None:
        idx = self._pixel(pos)
        if idx != self._hover:
            self._hover = idx
            self.hovered.emit(idx)

    def _on_click(self, ev) -> None:
        idx = self._pixel(ev.scenePos())
        if idx >= 0:
            self.pinned.emit(idx)
