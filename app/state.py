"""What the app is showing, in one object the widgets are handed and listen to.

:class:`AppState` holds the model (with its picker entry and checkpoint metadata), the ordering,
the canvas document (:class:`engine.document.Session`) and the commands that edit it, the tool,
brush and overlay, the hovered and pinned pixel, the heatmaps computed for the canvas with their
ensemble and percentile read-outs, and the sampling/inpainting run in progress (which locks the
canvas), and says through its signals when each changes: nothing the window shows changes
silently. The controllers (:mod:`app.figures`, :mod:`app.influence`, :mod:`app.runs`,
:mod:`app.editing`, :mod:`app.checkpoints`, :mod:`app.fork`) change it and the widgets follow its
signals; panels and dialogs (fork, compare, compress) read it and connect to its signals instead
of reaching into the window, so they can be built and tested against a state alone and never
depend on how the window is put together.

``model_key`` increases with every model set, so a request can name "this model" even when the
same checkpoint is opened twice. :meth:`canvas_key` is (model key, ordering, canvas version): the
tag of everything computed from the canvas (see :class:`app.latest.Latest`).

Grey models: the document holds the levels 0 .. K-1 of the model shown over the intensities drawn
(:class:`engine.document.Session`); :meth:`AppState.set_model` re-quantises the drawing at the new
model's K (``canvasReplaced`` follows when that changes the canvas), and ``ink`` is the soft brush's
intensity (0..1) at K > 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.catalogue import ModelEntry
from engine.datasets import DEFAULT_DATASET, dataset_of
from engine.document import Session
from engine.errors import PixelchainError
from engine.figures import EnsembleFigures, PixelFigures
from engine.models.base import ARModel
from engine.ordering import Ordering

from .worker import Job

__all__ = ["AppState", "Run"]


@dataclass
class Run:
    """A sampling or inpainting run in progress."""

    job: Job  #: the worker job drawing the pixels (pause, step, delay, cancel act on it)
    mode: str  #: "sample" or "inpaint"
    n: int  #: images in the batch
    seed: int
    temperature: float
    unknown: np.ndarray  #: (D,) bool: the pixels the run generates
    frame: Any = None  #: the latest :class:`app.jobs.Frame` shown
    #: a class-conditional model: the class the run was given (one, or one per image); None when it
    #: drew each image's class itself (and for an unconditional model)
    given: Any = None

    @property
    def paused(self) -> bool:
        return self.job.paused


class AppState(QObject):
    """What the app shows and the commands that change it (see the module docstring)."""

    modelChanged = Signal()  #: model, entry or metadata replaced (``model_key`` increased)
    orderingChanged = Signal()
    canvasChanged = Signal()  #: the ink changed: during a stroke, or the canvas was replaced
    canvasReplaced = Signal()  #: the whole canvas (and perhaps the mask) was set at once
    inkPainted = Signal()  #: a stroke changed the ink (``canvasChanged`` follows)
    strokeFinished = Signal()  #: the mouse button went up at the end of a stroke
    maskChanged = Signal()  #: the inpainting mask changed (painted, cleared or set)
    pinChanged = Signal(int)  #: the pinned pixel (raster index, -1: none)
    hoverChanged = Signal(int)  #: the pixel under the mouse on the canvas or the heatmaps (-1: none)
    toolChanged = Signal(str)  #: "draw", "mask" or "inspect"
    overlayChanged = Signal(str)  #: the ordering overlay on the canvas: "off", "steps" or "path"
    figuresChanged = Signal()  #: new heatmaps (``figures``; maybe of an older canvas)
    figuresShown = Signal()  #: heatmaps and read-out are up to date for the current canvas
    ensembleChanged = Signal()  #: the ensemble read-out (``ensemble``) changed
    percentileChanged = Signal()  #: the percentile read-out (``percentile``) changed
    runChanged = Signal()  #: a run started, ended, paused or resumed
    lockChanged = Signal(bool)  #: a run took the canvas (True) or gave it back (False)
    runFrame = Signal(object)  #: a frame of the current run (:class:`app.jobs.Frame`)
    runFinished = Signal(bool)  #: the current run ended (True: completed)
    status = Signal(str, int)  #: a message for the status bar and how long to show it (ms)
    error = Signal(str)  #: something failed that the user must be told about (a message box)
    closing = Signal()  #: the app is closing: stop your workers
    givenChanged = Signal()  #: the picked class (``given``) of a class-conditional model changed
    pairChanged = Signal()  #: the two classes of the evidence map (``evidence_pair``) changed

    def __init__(self, session: Session | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session if session is not None else Session()
        self.model: ARModel | None = None
        self.entry: ModelEntry | None = None
        self.meta: dict = {}
        self.model_key = 0
        self.ordering: Ordering | None = None
        self.tool = "draw"
        self.brush = 2
        self.ink = 1.0  #: the soft brush's intensity at the stroke's centre (0..1), for a grey model
        self.overlay = "off"
        self.pinned = -1
        self.hover = -1
        self.figures: PixelFigures | None = None  #: the heatmaps shown (maybe of an older canvas)
        self.figures_serial = 0  #: increases with every heatmaps shown
        self.ensemble: EnsembleFigures | None = None  #: log p under an ensemble of orderings, when shown
        self.percentile: float | None = None  #: the drawn digit's percentile among test digits, when known
        self.percentile_note = ""  #: which digits, or why there is no percentile
        self.run: Run | None = None
        #: a class-conditional model's picked class: the heatmaps and the inspector show p(x | y = given)
        #: and sampling draws from it; None: the marginal over classes ("any", sampling draws the class)
        self.given: int | None = None
        #: the classes (a, b) of the evidence map as picked; None in place of the most probable one
        #: (a) and of the most probable other one (b)
        self.evidence_pair: tuple[int | None, int | None] = (None, None)

    # -- model and ordering ------------------------------------------------------------------------
    def set_model(self, model: ARModel, entry: ModelEntry | None, meta: dict | None = None,
                  ordering: Ordering | None = None) -> None:
        """Show ``model`` (in ``ordering``, default its own); emits ``modelChanged``."""
        self.model = model
        self.entry = entry
        self.meta = dict(meta or {})
        self.model_key += 1
        self.ordering = ordering if ordering is not None else model.ordering
        if self.given is not None and self.given >= model.classes:
            self.given = None  # (changed with the model: modelChanged tells the listeners)
        if any(c is not None and c >= model.classes for c in self.evidence_pair):
            self.evidence_pair = (None, None)
        requantised = self.session.set_levels(model.levels)
        self.modelChanged.emit()
        if requantised:  # the same drawing at the new model's levels
            self.canvas_replaced()

    @property
    def dataset(self) -> str:
        """The data set the model shown was trained on (its checkpoint says; the untrained default
        and an unreadable entry: binarized MNIST, or the grey MNIST for a model of K > 2 levels)."""
        try:
            return dataset_of(self.meta)
        except PixelchainError:
            return DEFAULT_DATASET if self.levels == 2 else "mnist"

    @property
    def levels(self) -> int:
        """K, the pixel levels of the model shown (and of the canvas): 2 for a binary model."""
        return self.session.levels

    def set_ordering(self, ordering: Ordering) -> None:
        self.ordering = ordering
        self.orderingChanged.emit()

    @property
    def classes(self) -> int:
        """The classes of the model shown (0: none, or an unconditional model)."""
        return self.model.classes if self.model is not None else 0

    def set_given(self, cls: int | None) -> None:
        """Condition the heatmaps, the inspector and sampling on class ``cls`` (None: the marginal)."""
        cls = None if cls is None else int(cls)
        if cls is not None and not 0 <= cls < self.classes:
            raise ValueError(f"a class must be in 0..{self.classes - 1}")
        if cls != self.given:
            self.given = cls
            self.givenChanged.emit()

    def set_evidence_pair(self, pair: tuple[int | None, int | None]) -> None:
        """The evidence map's two classes (None for either: the most probable one)."""
        a, b = (None if c is None else int(c) for c in pair)
        if any(c is not None and not 0 <= c < self.classes for c in (a, b)):
            raise ValueError(f"a class must be in 0..{self.classes - 1}")
        pair = (a, b)
        if pair != self.evidence_pair:
            self.evidence_pair = pair
            self.pairChanged.emit()

    # -- canvas -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.session.height, self.session.width

    def canvas_key(self) -> tuple:
        """(model key, ordering, canvas version): what a result computed from the canvas belongs to."""
        return (self.model_key, self.ordering, self.session.version)

    def replace_canvas(self, image: np.ndarray, mask: np.ndarray | None = None, record: bool = True) -> None:
        """Put ``image`` (levels 0 .. K-1 of the model shown; 0/1 for a binary model) on the canvas
        (one undo step unless ``record`` is False) and, if given, ``mask`` as the inpainting mask
        (in the same step)."""
        self.session.set_canvas(np.asarray(image).reshape(self.shape), record=record)
        if mask is not None:
            self.session.set_mask(np.asarray(mask, bool).reshape(self.shape), record=False)
        self.canvas_replaced()

    def replace_intensity(self, intensity: np.ndarray, record: bool = True) -> None:
        """Put a grey picture (0-255, ink high) on the canvas, quantised at the model's levels (one undo step)."""
        self.session.set_intensity(np.asarray(intensity).reshape(self.shape), record=record)
        self.canvas_replaced()

    def canvas_replaced(self) -> None:
        """Tell the listeners that the session was changed as a whole (undo, clear, load...)."""
        self.canvasReplaced.emit()
        self.canvasChanged.emit()

    def canvas_edited(self) -> None:
        """Tell the listeners that a stroke changed the ink."""
        self.canvasChanged.emit()

    # -- editing commands: every change of the document goes through these ------------------------
    def begin_stroke(self) -> bool:
        """Start a stroke (one undo step); False while a run owns the canvas."""
        if self.locked:
            return False
        self.session.begin_stroke()
        return True

    def paint(self, row: int, col: int, value: int, *, mask: bool = False, from_point: tuple[int, int] | None = None) -> bool:
        """Paint with the current brush on the ink (or the mask) from ``from_point`` to ``(row,
        col)``; emits ``inkPainted`` and ``canvasChanged`` (or ``maskChanged``) when something
        changed, and returns whether it did."""
        changed = self.session.paint(row, col, value, self.brush, mask=mask, from_point=from_point, strength=self.ink)
        if changed:
            if mask:
                self.maskChanged.emit()
            else:
                self.inkPainted.emit()
                self.canvas_edited()
        return changed

    def end_stroke(self) -> None:
        self.session.end_stroke()
        self.strokeFinished.emit()

    def undo(self) -> None:
        if not self.locked and self.session.undo():
            self.canvas_replaced()

    def redo(self) -> None:
        if not self.locked and self.session.redo():
            self.canvas_replaced()

    def clear_canvas(self) -> None:
        if not self.locked:
            self.session.clear()
            self.canvas_replaced()

    def invert_canvas(self) -> None:
        if not self.locked:
            self.session.invert()
            self.canvas_replaced()

    def set_mask(self, mask: np.ndarray) -> None:
        """Set the inpainting mask (one undo step)."""
        self.session.set_mask(np.asarray(mask, bool).reshape(self.shape))
        self.maskChanged.emit()

    def clear_mask(self) -> None:
        self.session.clear_mask()
        self.maskChanged.emit()

    def mask_lower_half(self) -> None:
        m = np.zeros(self.shape, bool)
        m[self.session.height // 2:] = True
        self.set_mask(m)

    # -- tool, brush, overlay -----------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self.toolChanged.emit(tool)

    def set_brush(self, size: int) -> None:
        self.brush = int(size)

    def set_ink(self, strength: float) -> None:
        """The grey brush's intensity, 0..1 (a binary model's brush is always full ink)."""
        self.ink = float(min(max(strength, 0.0), 1.0))

    def set_overlay(self, overlay: str) -> None:
        self.overlay = overlay
        self.overlayChanged.emit(overlay)

    # -- the pixel pointed at -----------------------------------------------------------------------
    def set_pin(self, idx: int) -> None:
        """Pin pixel ``idx`` (-1: unpin); emits ``pinChanged`` every time (a pin asked again
        refreshes what shows it)."""
        self.pinned = int(idx)
        self.pinChanged.emit(self.pinned)

    def toggle_pin(self, idx: int) -> None:
        """Pin ``idx``, or unpin it if it is the pinned pixel."""
        self.set_pin(-1 if idx == self.pinned else idx)

    def set_hover(self, idx: int) -> None:
        self.hover = int(idx)
        self.hoverChanged.emit(self.hover)

    @property
    def inspected(self) -> int:
        """The pixel the inspector shows: the pinned one, else the hovered one (-1: none)."""
        return self.pinned if self.pinned >= 0 else self.hover

    # -- heatmaps and read-outs ---------------------------------------------------------------------
    def set_figures(self, figures: PixelFigures) -> None:
        self.figures = figures
        self.figures_serial += 1
        self.figuresChanged.emit()

    def figures_shown(self) -> None:
        self.figuresShown.emit()

    def set_ensemble(self, ensemble: EnsembleFigures | None) -> None:
        self.ensemble = ensemble
        self.ensembleChanged.emit()

    def set_percentile(self, pct: float | None, note: str) -> None:
        self.percentile, self.percentile_note = pct, note
        self.percentileChanged.emit()

    # -- the run ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.run is not None

    @property
    def locked(self) -> bool:
        """No editing: a sampling run owns the canvas (it shows the run's image)."""
        return self.run is not None

    def start_run(self, run: Run) -> None:
        self.run = run
        self.lockChanged.emit(True)
        self.runChanged.emit()

    def show_frame(self, frame: object) -> None:
        if self.run is not None:
            self.run.frame = frame
            self.runFrame.emit(frame)

    def pause_run(self, paused: bool) -> None:
        if self.run is not None:
            self.run.job.set_paused(paused)
            self.runChanged.emit()

    def stop_run(self) -> None:
        """Ask the run to stop (it ends between two pixels; ``runFinished`` follows)."""
        if self.run is not None:
            self.run.job.cancel()

    def end_run(self) -> None:
        """The run's job ended: there is no run any more (call :meth:`run_finished` once the
        canvas shows the outcome)."""
        self.run = None
        self.lockChanged.emit(False)
        self.runChanged.emit()

    def run_finished(self, completed: bool) -> None:
        self.runFinished.emit(completed)

    # -- messages ---------------------------------------------------------------------------------
    def show_status(self, message: str, ms: int = 0) -> None:
        self.status.emit(message, ms)

    def show_error(self, message: str) -> None:
        self.error.emit(message)
