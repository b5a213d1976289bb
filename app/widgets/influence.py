"""What moves the pinned pixel's conditional: a map of every earlier pixel's influence.

For the pinned pixel ``i`` the map shows, at each pixel ``j`` before it in the ordering,
``p(x_i = 1 | x_<i)`` as drawn minus the same with ``j`` flipped
(:func:`engine.figures.pixel_influence_steps`): red where ``j``'s value as drawn makes the model
expect more ink at ``i``, blue where it makes it expect less, white where it does not matter, on a
symmetric scale that is the smallest of 0.05, 0.1, 0.25, 0.5 and 1 holding every change (named on
the colour bar). Pixels at or after ``i`` cannot move it and are greyed out; the drawn digit is
shaded. Hovering the map names a pixel and its number and outlines it on the canvas and the
heatmaps; the three strongest are listed below it.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtWidgets import QGraphicsRectItem, QGroupBox, QLabel, QVBoxLayout, QWidget

from engine.figures import PixelInfluence

from .colors import DIFF_MAP

__all__ = ["InfluenceView", "scale_for", "LEVELS"]

HINT = ("Pin a pixel (Inspect tool, or Ctrl+click) to see how each pixel before it in the ordering "
        "moves its conditional.")


def _signed(v: float) -> str:
    return f"{v:+.3f}".replace("-", "\u2212")


LEVELS = (0.05, 0.1, 0.25, 0.5, 1.0)  #: the map's scale: the smallest of these that holds every change


def scale_for(delta: np.ndarray) -> float:
    """The symmetric colour scale (+-) for ``delta``: the smallest of :data:`LEVELS` not below its
    largest absolute finite value, so that small influences are visible and the scale is a round
    number the colour bar names."""
    finite = np.abs(delta[np.isfinite(delta)])
    top = float(finite.max()) if finite.size else 0.0
    return next((v for v in LEVELS if top <= v), LEVELS[-1])


class InfluenceView(QGroupBox):
    hovered = Signal(int)  #: raster index under the mouse on the map, -1 when off it

    def __init__(self, parent: QWidget | None = None):
        super().__init__("What moves its conditional", parent)
        self.setToolTip(
            "For the pinned pixel i: at each pixel j before it in the ordering, p(x_i = 1 | x_<i) as drawn minus\n"
            "the same with j flipped. Red: j's value as drawn makes the model expect more ink at i; blue: less.\n"
            "Grey: i itself and the pixels after it, which its conditional cannot see. The drawn digit is shaded.")
        outer = QVBoxLayout(self)
        self.hint = QLabel(HINT)
        self.hint.setWordWrap(True)
        self.hint.setObjectName("hint")
        outer.addWidget(self.hint)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("#14171c")
        self.view.setFixedHeight(200)
        self.plot = self.view.addPlot()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.ink = pg.ImageItem(axisOrder="row-major")  # the drawn digit, shaded over the map
        self.plot.addItem(self.ink)
        self.unseen = pg.ImageItem(axisOrder="row-major")  # grey over the pixels that cannot move it
        self.plot.addItem(self.unseen)
        self.plot.setRange(xRange=(0, 28), yRange=(0, 28), padding=0.02)
        self.scale = 1.0
        self.bar = pg.ColorBarItem(values=(-1.0, 1.0), colorMap=pg.colormap.get(DIFF_MAP), interactive=False,
                                   width=10, label="\u0394p")
        self.bar.setImageItem(self.image, insert_in=self.plot)
        self.marker = QGraphicsRectItem(QRectF(0, 0, 1, 1))
        self.marker.setPen(pg.mkPen("#facc15", width=2, cosmetic=True))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        outer.addWidget(self.view)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        outer.addWidget(self.summary)
        self.influence: PixelInfluence | None = None
        self._hover = -1
        self.view.scene().sigMouseMoved.connect(self._on_move)
        self.view.installEventFilter(self)  # the mouse leaving the map ends the hover
        self.clear()

    # -- states --------------------------------------------------------------------------------
    def clear(self, note: str = HINT) -> None:
        """Nothing pinned (or no model): an empty map and ``note``."""
        self.influence = None
        if self._hover != -1:
            self._hover = -1
            self.hovered.emit(-1)
        for item in (self.image, self.ink, self.unseen):
            item.clear()
        self.marker.setVisible(False)
        self.hint.setText(note)
        self.hint.setVisible(True)
        self.summary.setText("")

    def show_progress(self, pixel: int, width: int, frac: float) -> None:
        r, c = divmod(pixel, width)
        self.hint.setText(f"Flipping each pixel before ({r}, {c}) in turn… {frac:.0%}")
        self.hint.setVisible(True)

    def show_influence(self, inf: PixelInfluence, image: np.ndarray | None = None) -> None:
        """Show ``inf``; ``image`` (the canvas it belongs to) is shaded over the map."""
        self.influence = inf
        h, w = inf.delta.shape
        self.scale = scale_for(inf.delta)
        d = np.nan_to_num(inf.delta, nan=0.0).astype(np.float32)
        self.image.setImage(d, levels=(-self.scale, self.scale), autoLevels=False)
        self.bar.setLevels((-self.scale, self.scale))
        # a binary pixel's p(x_i = 1) moves; a grey one's expected intensity on 0..1
        self.bar.getAxis("left").setLabel("\u0394p" if inf.levels == 2 else "\u0394E[x]/(K\u22121)")
        shade = np.zeros((h, w, 4), np.uint8)
        if image is not None:
            shade[np.asarray(image).reshape(h, w) > 0] = (0, 0, 0, 70)
        self.ink.setImage(shade, autoLevels=False)
        grey = np.zeros((h, w, 4), np.uint8)
        grey[np.isnan(inf.delta)] = (58, 62, 70, 255)
        self.unseen.setImage(grey, autoLevels=False)
        r, c = divmod(inf.pixel, w)
        self.marker.setRect(QRectF(c, r, 1, 1))
        self.marker.setVisible(True)
        self.hint.setVisible(False)
        what, flip = ("p(x<sub>i</sub> = 1 | x<sub>&lt;i</sub>)", "flipped") if inf.levels == 2 else \
            ("E[x<sub>i</sub> | x<sub>&lt;i</sub>] / (K−1)", "inverted")
        lines = [f"({r}, {c}): {what} = <b>{inf.p:.3f}</b> as drawn; "
                 "<span style='color:#f87171'>red</span>: a pixel's value raises it, "
                 f"<span style='color:#60a5fa'>blue</span>: lowers it, by the change if it alone were {flip}"]
        top = inf.strongest(3)
        if top:
            lines.append("strongest: " + ",  ".join(f"({j // w}, {j % w}) <b>{_signed(v)}</b>" for j, v in top))
        else:
            lines.append("the first pixel of the ordering: nothing comes before it")
        self.summary.setText("<br>".join(lines))

    # -- hover ---------------------------------------------------------------------------------
    def pixel_at(self, scene_pos: QPointF) -> int:
        inf = self.influence
        if inf is None or not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return -1
        h, w = inf.delta.shape
        pt = self.plot.vb.mapSceneToView(scene_pos)
        r, c = int(np.floor(pt.y())), int(np.floor(pt.x()))
        return r * w + c if 0 <= r < h and 0 <= c < w else -1

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt)
        if obj is self.view and event.type() == QEvent.Type.Leave and self._hover != -1:
            self._hover = -1
            self.hovered.emit(-1)
        return super().eventFilter(obj, event)

    def _on_move(self, pos: QPointF) -> None:
        j = self.pixel_at(pos)
        if j != self._hover:
            self._hover = j
            self.hovered.emit(j)
        inf = self.influence
        if inf is None:
            return
        if j < 0:
            self.view.setToolTip("")
            return
        w = inf.delta.shape[1]
        v = float(inf.delta.reshape(-1)[j])
        where = f"({j // w}, {j % w})"
        if np.isnan(v):
            text = f"{where}: itself" if j == inf.pixel else f"{where}: after it in the ordering, cannot move it"
        else:
            what, flip = ("p(x_i = 1 | x_<i)", "flipped") if inf.levels == 2 else ("E[x_i | x_<i] / (K-1)", "inverted")
            text = (f"{where}: {what} would be {inf.p - v:.3f} with this pixel {flip}, "
                    f"{inf.p:.3f} as drawn ({_signed(v)})")
        self.view.setToolTip(text)
