"""Sampling and inpainting, animated pixel by pixel.

Both run :meth:`engine.models.base.ARModel.sample_steps` on the sampling worker thread: ``Sample``
draws N new digits in the chosen ordering; ``Inpaint`` keeps the pixels outside the mask and
regenerates the masked ones. For an order-agnostic model the known pixels go first in the
ordering and the completion is exact; for a model tied to one ordering, known pixels that come
after the first masked pixel in that ordering cannot influence the completion -- the panel says so
and counts them. The run can be paused, single-stepped, slowed down and stopped between any two
pixels; frames reach the GUI at most ~60 times a second at full speed.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..jobs import Frame, sample_job
from .classes import class_combo, fill_classes, select_class

__all__ = ["SamplingPanel", "Frame", "sample_job", "SPEEDS"]

#: samples of each digit in the one-row-per-digit grid
GRID_PER_CLASS = 8
#: pixels per second of the speed slider; 0 = as fast as the model goes
SPEEDS = (2, 5, 20, 60, 200, 1000, 0)

#: as long as the notes on inpainting get (app.runs.inpaint_note): the room the note keeps
LONGEST_NOTE = ("<b>Approximate</b>: this LMCONV is tied to the column-snake from the bottom right ordering, so the 784 known "
                "pixels that come after the first masked pixel in it are ignored when filling the region.")


def classes_text(y: np.ndarray | None) -> str:
    """The classes a run draws, for its progress bar ("" for an unconditional model)."""
    if y is None or len(y) == 0:
        return ""
    kinds = np.unique(y)
    if len(kinds) == 1:
        return f" · a {int(kinds[0])}" if len(y) == 1 else f" · all {int(kinds[0])}s"
    return " · digits " + ", ".join(str(int(c)) for c in y) if len(y) <= 6 else f" · {len(kinds)} different digits"


def grid_cols(n: int, cols: int | None = None) -> int:
    """Columns of a grid of ``n`` images: ``cols``, or as square as it gets."""
    return int(cols) if cols else int(np.ceil(np.sqrt(n)))


def tile(images: np.ndarray, h: int, w: int, pending: np.ndarray | None = None, pad: int = 1, levels: int = 2,
         cols: int | None = None) -> np.ndarray:
    """(rows*(h+pad)+pad, cols*(w+pad)+pad) float grid: ink 1, paper 0, pending 0.35, gaps 0.15;
    images of ``levels`` K > 2 levels are scaled by 1 / (K - 1) (grey). ``cols``: columns (default:
    as square as it gets)."""
    n = len(images)
    cols = grid_cols(n, cols)
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 0.15, np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        tile_ = images[i].reshape(h, w).astype(np.float32)
        if levels > 2:
            tile_ = tile_ / (levels - 1)
        if pending is not None:
            tile_ = np.where(pending.reshape(h, w), 0.3, tile_)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tile_
    return out


class SamplingPanel(QWidget):
    """Controls of a sampling/inpainting run and the grid of results (the host drives the run)."""

    runRequested = Signal(str)  #: "sample" or "inpaint"
    stopRequested = Signal()
    pauseToggled = Signal(bool)
    stepRequested = Signal()
    speedChanged = Signal(float)  #: seconds between pixels
    saveGridRequested = Signal()
    useSampleRequested = Signal(int)
    maskToolRequested = Signal()
    clearMaskRequested = Signal()
    maskHalfRequested = Signal()
    modeChanged = Signal(str)  #: "sample" or "inpaint" was chosen
    classPicked = Signal(object)  #: the digit to draw or complete as (None: any, the model draws it)
    classGridRequested = Signal(int)  #: a grid of this many samples of each digit, one row per digit

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        mode = QGroupBox("Generate")
        ml = QVBoxLayout(mode)
        self.mode_sample = QRadioButton("Sample new digits")
        self.mode_inpaint = QRadioButton("Inpaint the masked region of the canvas")
        self.mode_sample.setChecked(True)
        grp = QButtonGroup(self)
        grp.addButton(self.mode_sample)
        grp.addButton(self.mode_inpaint)
        ml.addWidget(self.mode_sample)
        ml.addWidget(self.mode_inpaint)
        mrow = QHBoxLayout()
        self.mask_tool = QPushButton("Mask brush")
        self.mask_tool.setToolTip("Paint the region to regenerate (left: add, right: remove)")
        self.mask_half = QPushButton("Mask lower half")
        self.mask_clear = QPushButton("Clear mask")
        for b in (self.mask_tool, self.mask_half, self.mask_clear):
            mrow.addWidget(b)
        ml.addLayout(mrow)
        self.exactness = QLabel()
        self.exactness.setWordWrap(True)
        self.exactness.setObjectName("hint")
        self.exactness.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        ml.addWidget(self.exactness)
        self.exactness.installEventFilter(self)
        lay.addWidget(mode)

        opts = QGroupBox("Options")
        form = QFormLayout(opts)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 5.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setValue(1.0)
        self.temperature.setToolTip("Divides the logits: below 1 sharper, above 1 more random")
        self.count = QSpinBox()
        self.count.setRange(1, 64)
        self.count.setValue(1)
        self.count.setToolTip("Draw N samples (or completions) at once into the grid below")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the random numbers: the same seed gives the same samples")
        self.speed = QSlider(Qt.Orientation.Horizontal)
        self.speed.setRange(0, len(SPEEDS) - 1)
        self.speed.setValue(len(SPEEDS) - 1)
        self.speed_label = QLabel()
        srow = QHBoxLayout()
        srow.addWidget(self.speed, 1)
        srow.addWidget(self.speed_label)
        form.addRow("temperature", self.temperature)
        form.addRow("samples N", self.count)
        form.addRow("seed", self.seed)
        form.addRow("speed", srow)
        crow = QHBoxLayout()
        self.digit = class_combo(10, "any")
        self.digit.setToolTip("A class-conditional model draws (or completes the canvas as) this digit; "
                              "'any' draws the digit too, from p(y), or from p(y | known pixels) when inpainting")
        self.grid_btn = QPushButton("One row per digit")
        self.grid_btn.setToolTip("Sample a grid with one row per digit: 8 samples of p(x | y) for each y")
        crow.addWidget(self.digit)
        crow.addWidget(self.grid_btn)
        crow.addStretch(1)
        self._digit_row = QWidget()
        self._digit_row.setLayout(crow)
        crow.setContentsMargins(0, 0, 0, 0)
        form.addRow("digit y", self._digit_row)
        self._form = form
        form.setRowVisible(self._digit_row, False)  # class-conditional models only
        lay.addWidget(opts)

        ctl = QHBoxLayout()
        self.run_btn = QPushButton("\u25b6  Run")
        self.run_btn.setObjectName("primary")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.step_btn = QPushButton("Step")
        self.step_btn.setToolTip("Generate one pixel (starts a paused run if none is going)")
        self.stop_btn = QPushButton("Stop")
        for b in (self.run_btn, self.pause_btn, self.step_btn, self.stop_btn):
            ctl.addWidget(b)
        lay.addLayout(ctl)
        self._more = QHBoxLayout()  # controls added by others (the fork): a row of their own, so the
        self._more.setContentsMargins(0, 0, 0, 0)  # panel stays narrow enough for a 1024 px window
        self._more.addStretch(1)
        lay.addLayout(self._more)
        self.progress = QProgressBar()
        self.progress.setRange(0, 784)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        lay.addWidget(self.progress)
        self.live = QLabel("–")
        self.live.setObjectName("value")
        lay.addWidget(self.live)

        self.grid_view = pg.GraphicsLayoutWidget()
        self.grid_view.setBackground("#14171c")
        self.grid_view.setMinimumHeight(140)
        vb = self.grid_view.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        vb.setMenuEnabled(False)
        self.grid_box = vb
        self.grid_image = pg.ImageItem(axisOrder="row-major")
        self.grid_image.setImage(np.zeros((29, 29), np.float32), levels=(0.0, 1.0), autoLevels=False)
        vb.addItem(self.grid_image)
        self.grid_view.scene().sigMouseClicked.connect(self._grid_clicked)
        lay.addWidget(self.grid_view, 1)
        grow = QHBoxLayout()
        self.grid_note = QLabel("Results appear here; click one to put it on the canvas.")
        self.grid_note.setObjectName("hint")
        self.grid_note.setWordWrap(True)
        self.save_btn = QPushButton("Save grid PNG\u2026")
        self.save_btn.setEnabled(False)
        grow.addWidget(self.grid_note, 1)
        grow.addWidget(self.save_btn)
        lay.addLayout(grow)

        self.images: np.ndarray | None = None
        self.classes_drawn: np.ndarray | None = None  #: the class of each image of the last run (conditional models)
        self.cols: int | None = None  #: columns of the grid (None: as square as it gets)
        self._labels: list[pg.TextItem] = []
        self._refit = False  #: the next grid shown sets the view's range (new row labels)
        self.shape = (28, 28)
        self.levels = 2  #: K of the run's model (grey tiles for K > 2)
        self.set_running(False)
        self._speed_changed(self.speed.value())
        self.run_btn.clicked.connect(lambda: self.runRequested.emit("inpaint" if self.mode_inpaint.isChecked() else "sample"))
        self.stop_btn.clicked.connect(self.stopRequested)
        self.pause_btn.toggled.connect(self.pauseToggled)
        self.step_btn.clicked.connect(self.stepRequested)
        self.speed.valueChanged.connect(self._speed_changed)
        self.save_btn.clicked.connect(self.saveGridRequested)
        self.mask_tool.clicked.connect(self.maskToolRequested)
        self.mask_clear.clicked.connect(self.clearMaskRequested)
        self.mask_half.clicked.connect(self.maskHalfRequested)
        self.mode_inpaint.toggled.connect(lambda _on: self.modeChanged.emit(self.mode))
        self.digit.currentIndexChanged.connect(lambda _i: self.classPicked.emit(self.digit.currentData()))
        self.grid_btn.clicked.connect(lambda: self.classGridRequested.emit(GRID_PER_CLASS))

    def set_classes(self, classes: int) -> None:
        """Offer the digits of a class-conditional model of ``classes`` classes (0: hide the picker)."""
        self._form.setRowVisible(self._digit_row, classes > 0)
        if classes:
            fill_classes(self.digit, classes, "any")

    def set_class(self, cls: int | None) -> None:
        """Show ``cls`` as the digit picked (None: any), without emitting ``classPicked``."""
        select_class(self.digit, cls)

    def add_control(self, button: QWidget) -> None:
        """Put ``button`` on the row under the run controls (Run, Pause, Step, Stop)."""
        self._more.insertWidget(self._more.count() - 1, button)

    @property
    def mode(self) -> str:
        return "inpaint" if self.mode_inpaint.isChecked() else "sample"

    def set_mode(self, mode: str) -> None:
        """Choose sampling ("sample") or inpainting ("inpaint")."""
        (self.mode_inpaint if mode == "inpaint" else self.mode_sample).setChecked(True)

    def settings(self) -> tuple[int, int, float]:
        """(images in the batch, seed, temperature) of the next run."""
        return self.count.value(), self.seed.value(), self.temperature.value()

    def set_count(self, n: int) -> None:
        """Draw ``n`` images in the next run."""
        self.count.setValue(n)

    def advance_seed(self) -> None:
        """The next run draws other samples (after a completed one)."""
        self.seed.setValue(self.seed.value() + 1)

    def set_paused(self, paused: bool) -> None:
        """Show the run as paused (or not) on the Pause button; a change emits ``pauseToggled``."""
        self.pause_btn.setChecked(paused)

    def set_inpaint_note(self, text: str) -> None:
        """Say how exact inpainting the masked region is under the model and ordering (or, while
        sampling is chosen, what sampling does)."""
        self.exactness.setText(text)
        self._reserve_note_height()

    def _reserve_note_height(self) -> None:
        """Keep the note as tall as the longest one it shows at this width, so that the controls
        below it (the Run button) stay put when the note changes."""
        lab = self.exactness
        width = lab.width()
        if width < 50:  # not laid out yet
            return
        current = lab.text()
        lab.setText(LONGEST_NOTE)  # measured as the label lays it out (rich text, its style's font)
        tallest = lab.heightForWidth(width)
        lab.setText(current)
        tallest = max(tallest, lab.heightForWidth(width))
        if lab.minimumHeight() != tallest:
            lab.setMinimumHeight(tallest)

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802 (Qt)
        if obj is self.exactness and ev.type() == QEvent.Type.Resize:  # a new width: a new height to keep
            self._reserve_note_height()
        return super().eventFilter(obj, ev)

    def delay(self) -> float:
        s = SPEEDS[self.speed.value()]
        return 0.0 if s == 0 else 1.0 / s

    def _speed_changed(self, i: int) -> None:
        s = SPEEDS[i]
        self.speed_label.setText("max" if s == 0 else f"{s} px/s")
        self.speedChanged.emit(self.delay())

    def set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.pause_btn.setEnabled(running)
        if not running:
            self.pause_btn.setChecked(False)
        for w in (self.mode_sample, self.mode_inpaint, self.count, self.seed, self.temperature, self.digit, self.grid_btn):
            w.setEnabled(not running)

    def show_frame(self, fr: Frame) -> None:
        h, w = self.shape
        self.progress.setRange(0, max(fr.total, 1))
        self.progress.setValue(fr.index + 1)
        self.progress.setFormat(f"pixel {fr.index + 1} / {fr.total}{classes_text(fr.y)}")
        r, c = divmod(fr.pixel, w)
        if fr.levels > 2:  # prob is the expected value on [0, 1]: say it in levels, as the draw is
            self.live.setText(f"drawing ({r}, {c}) · step {fr.step + 1} · E[x] = {fr.prob * (fr.levels - 1):.1f} → level {fr.value}")
        else:
            self.live.setText(f"drawing ({r}, {c}) · step {fr.step + 1} · p(x=1) = {fr.prob:.3f} → {fr.value}")
        self.classes_drawn = fr.y
        pending = np.zeros(h * w, bool)
        pending[fr.order.perm[fr.step + 1:]] = True
        self.show_grid(fr.x, pending & self._unknown)

    def begin(self, n: int, unknown: np.ndarray, shape: tuple[int, int], levels: int = 2, cols: int | None = None,
              row_labels: list[str] | None = None) -> None:
        """A run of ``n`` images of ``shape`` starts, generating the ``unknown`` pixels at ``levels`` (K),
        shown in ``cols`` columns (default: a square grid) with ``row_labels`` left of the rows."""
        self.shape = shape
        self.levels = levels
        self.cols = cols
        self.classes_drawn = None
        self._set_row_labels(row_labels or [])
        self._refit = True
        self._unknown = np.asarray(unknown, bool)
        self.images = None
        self.save_btn.setEnabled(False)
        self.progress.setRange(0, max(int(self._unknown.sum()), 1))
        self.progress.setValue(0)
        self.progress.setFormat("starting…")

    def show_grid(self, images: np.ndarray, pending: np.ndarray | None = None) -> None:
        h, w = self.shape
        grid = tile(images, h, w, pending, levels=self.levels, cols=self.cols)
        old = self.grid_image.image
        self.grid_image.setImage(grid, levels=(0.0, 1.0), autoLevels=False)
        if old is None or old.shape != grid.shape or self._refit:
            self._refit = False
            left = -12.0 if self._labels else 0.0  # room for the row labels
            self.grid_box.setRange(xRange=(left, grid.shape[1]), yRange=(0, grid.shape[0]), padding=0.02)

    def _set_row_labels(self, labels: list[str]) -> None:
        for t in self._labels:
            self.grid_box.removeItem(t)
        self._labels = []
        h = self.shape[0]
        for r, text in enumerate(labels):
            t = pg.TextItem(text, color="#d8dde6", anchor=(1.0, 0.5))
            t.setPos(-2, 1 + r * (h + 1) + h / 2)
            self.grid_box.addItem(t)
            self._labels.append(t)

    def finish(self, images: np.ndarray | None, note: str) -> None:
        if images is not None:
            self.images = np.asarray(images)
            self.show_grid(self.images)
            self.save_btn.setEnabled(True)
            self.progress.setValue(self.progress.maximum())
            self.live.setText(f"{len(self.images)} × {self._unknown.sum()} pixels generated")
        self.progress.setFormat(note)
        self.grid_note.setText("Click a result to put it on the canvas." if images is not None else note)

    def _grid_clicked(self, ev) -> None:
        if self.images is None:
            return
        pt = self.grid_box.mapSceneToView(ev.scenePos())
        h, w = self.shape
        n = len(self.images)
        cols = grid_cols(n, self.cols)
        c, r = int(pt.x() // (w + 1)), int(pt.y() // (h + 1))
        i = r * cols + c
        if 0 <= c < cols and 0 <= i < n:
            self.useSampleRequested.emit(i)
