"""The drawing canvas: a 28x28 digit shown large, with a pixel grid and overlays.

The digit is binary, or of the grey model's K levels (level v drawn at v / (K - 1) between paper
and ink); with a grey model the brush is soft and round, its intensity the state's ``ink``
(:meth:`engine.document.Session.paint`). Left button paints with the current tool (ink, or the
inpainting mask), right button erases;
the ``inspect`` tool pins the clicked pixel instead (Ctrl+click pins with any tool). Overlays:
the ordering as a step-number colour gradient or as a path through the pixel centres; the
predecessors of the pinned pixel (what its conditional sees); the mask; during sampling the
pixels not generated yet and the pixel being drawn. All editing goes through the commands of
:class:`app.state.AppState` (which refuse while a run owns the canvas and announce every change);
this widget only maps mouse positions to pixels and paints what the state holds.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QLineF, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.document import Session
from engine.ordering import Ordering

from ..state import AppState
from .colors import lookup_table

__all__ = ["CanvasWidget"]

INK = QColor("#f4f6fa")
PAPER = QColor("#0b0d10")
GRID = QColor(255, 255, 255, 28)
MASK = QColor(236, 72, 153, 115)
PRED = QColor(56, 189, 248, 60)
PIN = QColor("#facc15")
CURRENT = QColor("#fb923c")


class CanvasWidget(QWidget):
    strokeStarted = Signal()
    canvasChanged = Signal()  #: the ink changed (emitted while drawing, for live heatmaps)
    strokeFinished = Signal()
    maskChanged = Signal()
    hovered = Signal(int)  #: raster index under the mouse, -1 when it leaves
    pinned = Signal(int)  #: raster index clicked with the inspect tool, -1 to unpin

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.ordering: Ordering | None = None
        self.overlay = "off"  #: off, steps or path
        self.pinned_pixel = -1
        self.hover_pixel = -1
        self.current_pixel = -1
        self.pending: np.ndarray | None = None  #: (H, W) bool: not generated yet
        self.display: np.ndarray | None = None  #: (H, W) shown instead of the session canvas
        self._stroke_value: int | None = None
        self._last: tuple[int, int] | None = None
        self._painting_mask = False
        self.setMouseTracking(True)
        self.setMinimumSize(220, 220)  # the window fits a 1024 x 700 screen
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip("")
        state.maskChanged.connect(self.update)
        state.canvasReplaced.connect(self.update)
        state.pinChanged.connect(self.set_pinned)
        state.overlayChanged.connect(self.set_overlay)
        state.modelChanged.connect(self.update)  # (a grey model's levels change how the canvas looks)

    @property
    def session(self) -> Session:
        return self.state.session

    @property
    def tool(self) -> str:
        """draw, mask or inspect (the state's)."""
        return self.state.tool

    def sizeHint(self) -> QSize:
        return QSize(560, 560)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, w: int) -> int:
        return w

    # -- geometry -------------------------------------------------------------------------------
    def _cell(self) -> tuple[float, float, float]:
        h, w = self.session.height, self.session.width
        cell = max(1.0, min((self.width() - 2) / w, (self.height() - 2) / h))
        x0 = (self.width() - cell * w) / 2
        y0 = (self.height() - cell * h) / 2
        return cell, x0, y0

    def pixel_at(self, pos: QPointF) -> tuple[int, int] | None:
        cell, x0, y0 = self._cell()
        c = int((pos.x() - x0) // cell)
        r = int((pos.y() - y0) // cell)
        if 0 <= r < self.session.height and 0 <= c < self.session.width:
            return r, c
        return None

    def pixel_center(self, r: int, c: int) -> QPointF:
        """Widget coordinates of a pixel's centre (tests use it to click and drag)."""
        cell, x0, y0 = self._cell()
        return QPointF(x0 + (c + 0.5) * cell, y0 + (r + 0.5) * cell)

    # -- mouse ------------------------------------------------------------------------------------
    def mousePressEvent(self, ev: QMouseEvent) -> None:
        rc = self.pixel_at(ev.position())
        if rc is None:
            return
        idx = rc[0] * self.session.width + rc[1]
        if self.tool == "inspect" or ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            if ev.button() == Qt.MouseButton.LeftButton:
                self.set_pinned(-1 if idx == self.pinned_pixel else idx)
                self.pinned.emit(self.pinned_pixel)
            elif ev.button() == Qt.MouseButton.RightButton:
                self.set_pinned(-1)
                self.pinned.emit(-1)
            return
        if ev.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton) or not self.state.begin_stroke():
            return  # (a run owns the canvas)
        self._stroke_value = 1 if ev.button() == Qt.MouseButton.LeftButton else 0
        self._painting_mask = self.tool == "mask"
        self.strokeStarted.emit()
        self._last = None
        self._paint_to(rc)

    def mouseMoveEvent(self, ev: QMouseEvent) -> None:
        rc = self.pixel_at(ev.position())
        idx = -1 if rc is None else rc[0] * self.session.width + rc[1]
        if idx != self.hover_pixel:
            self.hover_pixel = idx
            self.hovered.emit(idx)
            self.update()
        if self._stroke_value is not None and rc is not None:
            self._paint_to(rc)

    def mouseReleaseEvent(self, ev: QMouseEvent) -> None:
        if self._stroke_value is None:
            return
        self._stroke_value = None
        self._last = None
        self.state.end_stroke()
        self.strokeFinished.emit()

    def leaveEvent(self, ev) -> None:
        if self.hover_pixel != -1:
            self.hover_pixel = -1
            self.hovered.emit(-1)
            self.update()

    def _paint_to(self, rc: tuple[int, int]) -> None:
        assert self._stroke_value is not None
        changed = self.state.paint(rc[0], rc[1], self._stroke_value, mask=self._painting_mask, from_point=self._last)
        self._last = rc
        if changed:
            self.update()
            (self.maskChanged if self._painting_mask else self.canvasChanged).emit()

    # -- state setters ----------------------------------------------------------------------------
    def set_pinned(self, idx: int) -> None:
        self.pinned_pixel = idx
        self.update()

    def set_hover(self, idx: int) -> None:
        """Outline pixel ``idx`` as if hovered (another view points at it); -1: none."""
        if idx != self.hover_pixel:
            self.hover_pixel = idx
            self.update()

    def set_ordering(self, ordering: Ordering | None) -> None:
        self.ordering = ordering
        self.update()

    def set_overlay(self, mode: str) -> None:
        self.overlay = mode
        self.update()

    def show_run(self, image: np.ndarray | None, pending: np.ndarray | None = None, current: int = -1) -> None:
        """Show a sampling run's image (None: back to the session canvas)."""
        self.display = None if image is None else np.asarray(image).reshape(self.session.height, self.session.width)
        self.pending = None if pending is None else np.asarray(pending, bool).reshape(self.session.height, self.session.width)
        self.current_pixel = current
        self.update()

    # -- painting ---------------------------------------------------------------------------------
    def _rgba_image(self, rgba: np.ndarray) -> QImage:
        h, w = rgba.shape[:2]
        buf = np.ascontiguousarray(rgba, dtype=np.uint8)
        img = QImage(buf.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
        return img.copy()

    def paintEvent(self, ev) -> None:
        s = self.session
        h, w = s.height, s.width
        cell, x0, y0 = self._cell()
        rect = QRectF(x0, y0, cell * w, cell * h)
        img = s.canvas if self.display is None else self.display
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        p.fillRect(self.rect(), self.palette().window())
        rgba = np.empty((h, w, 4), np.uint8)
        rgba[...] = (PAPER.red(), PAPER.green(), PAPER.blue(), 255)
        levels = self.session.levels
        if levels == 2:
            rgba[img > 0.5] = (INK.red(), INK.green(), INK.blue(), 255)
        else:
            t = (np.asarray(img, np.float64) / (levels - 1)).clip(0.0, 1.0)[..., None]
            paper = np.array([PAPER.red(), PAPER.green(), PAPER.blue()], np.float64)
            ink = np.array([INK.red(), INK.green(), INK.blue()], np.float64)
            rgba[..., :3] = np.rint(paper + (ink - paper) * t).astype(np.uint8)
        if self.pending is not None:
            rgba[self.pending] = (38, 42, 50, 255)
        if self.overlay == "steps" and self.ordering is not None:
            lut = lookup_table(h * w)
            col = lut[self.ordering.step_grid()]
            a = 0.55
            rgba[..., :3] = (rgba[..., :3] * (1 - a) + col * a).astype(np.uint8)
        if self.pinned_pixel >= 0 and self.ordering is not None:
            pred: np.ndarray = np.zeros(h * w, bool)
            pred[self.ordering.predecessors(self.pinned_pixel)] = True
            pred = pred.reshape(h, w)
            tint = np.array([PRED.red(), PRED.green(), PRED.blue()], np.float64)
            a = PRED.alphaF()
            rgba[pred, :3] = (rgba[pred, :3] * (1 - a) + tint * a).astype(np.uint8)
        if self.display is None and s.mask.any():
            tint = np.array([MASK.red(), MASK.green(), MASK.blue()], np.float64)
            a = MASK.alphaF()
            rgba[s.mask, :3] = (rgba[s.mask, :3] * (1 - a) + tint * a).astype(np.uint8)
        p.drawImage(rect, self._rgba_image(rgba))
        # grid
        if cell >= 6:
            p.drawPixmap(0, 0, self._grid_pixmap(cell, x0, y0))
        if self.display is None and s.mask.any() and cell >= 6:
            self._hatch_mask(p, cell, x0, y0)
        if self.overlay == "path" and self.ordering is not None:
            self._draw_path(p, cell, x0, y0)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        outlines = ((self.hover_pixel, QColor(255, 255, 255, 200), 1.5), (self.pinned_pixel, PIN, 2.5), (self.current_pixel, CURRENT, 3.0))
        for idx, color, width in outlines:
            if idx >= 0:
                r, c = divmod(idx, w)
                p.setPen(QPen(color, width))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRect(QRectF(x0 + c * cell, y0 + r * cell, cell, cell).adjusted(1, 1, -1, -1))
        p.setPen(QPen(QColor(255, 255, 255, 70), 1))
        p.setBrush(Qt.BrushStyle.NoBrush)  # the frame only: the path's last dot left a red brush set
        p.drawRect(rect)
        p.end()

    def _grid_pixmap(self, cell: float, x0: float, y0: float) -> QPixmap:
        """The pixel grid, drawn once per widget size (many translucent lines are slow to draw)."""
        key = (self.width(), self.height(), cell, x0, y0)
        if getattr(self, "_grid_key", None) != key:
            h, w = self.session.height, self.session.width
            pix = QPixmap(self.size())
            pix.fill(Qt.GlobalColor.transparent)
            gp = QPainter(pix)
            gp.setPen(QPen(GRID, 1))
            lines = [QLineF(x0 + i * cell, y0, x0 + i * cell, y0 + cell * h) for i in range(w + 1)]
            lines += [QLineF(x0, y0 + j * cell, x0 + cell * w, y0 + j * cell) for j in range(h + 1)]
            gp.drawLines(lines)
            gp.end()
            self._grid_key, self._grid_cache = key, pix
        return self._grid_cache

    def _hatch_mask(self, p: QPainter, cell: float, x0: float, y0: float) -> None:
        p.setPen(QPen(QColor(236, 72, 153, 170), 1))
        rows, cols = np.nonzero(self.session.mask)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            x, y = x0 + c * cell, y0 + r * cell
            p.drawLine(QPointF(x + 2, y + cell - 2), QPointF(x + cell - 2, y + 2))

    def _draw_path(self, p: QPainter, cell: float, x0: float, y0: float) -> None:
        o = self.ordering
        if o is None:
            return
        w = o.width
        rows, cols = np.divmod(o.perm, w)
        xs = x0 + (cols + 0.5) * cell
        ys = y0 + (rows + 0.5) * cell
        lut = lookup_table(o.size)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        n = o.size
        chunk = 16
        for start in range(0, n - 1, chunk):
            end = min(n - 1, start + chunk)
            path = QPainterPath(QPointF(xs[start], ys[start]))
            for k in range(start + 1, end + 1):
                path.lineTo(QPointF(xs[k], ys[k]))
            rgb = lut[start]
            p.setPen(QPen(QColor(int(rgb[0]), int(rgb[1]), int(rgb[2]), 230), max(1.2, cell / 9)))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
        rad = max(3.0, cell / 4)
        for k, color in ((0, QColor("#22c55e")), (n - 1, QColor("#ef4444"))):
            p.setPen(QPen(QColor("#0b0d10"), 1))
            p.setBrush(color)
            p.drawEllipse(QPointF(xs[k], ys[k]), rad, rad)
