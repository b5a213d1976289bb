"""What the app is showing, in one object the widgets are handed and listen to.

:class:`AppState` holds the model (with its picker entry and checkpoint metadata), the ordering,
the canvas document (:class:`engine.session.Session`), the heatmaps computed for it and the
sampling/inpainting run in progress, and says through its signals when each changes. The main
window changes it; panels and dialogs (fork, compare, compress) read it and connect to its
signals instead of reaching into the window, so they can be built and tested against a state
alone and never depend on how the window is put together.

``model_key`` increases with every model set, so a request can name "this model" even when the
same checkpoint is opened twice. :meth:`canvas_key` is (model key, ordering, canvas version): the
tag of everything computed from the canvas (see :class:`app.latest.Latest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.catalogue import ModelEntry
from engine.document import Session
from engine.figures import PixelFigures
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
    frame: Any = None  #: the latest :class:`app.widgets.sampling.Frame` shown

    @property
    def paused(self) -> bool:
        return self.job.paused


class AppState(QObject):
    """The model, ordering, canvas, heatmaps and run the app shows (see the module docstring)."""

    modelChanged = Signal()  #: model, entry or metadata replaced (``model_key`` increased)
    orderingChanged = Signal()
    canvasChanged = Signal()  #: the ink changed: during a stroke, or the canvas was replaced
    canvasReplaced = Signal()  #: the whole canvas (and perhaps the mask) was set at once
    figuresShown = Signal()  #: heatmaps and read-out are up to date for the current canvas
    runChanged = Signal()  #: a run started, ended, paused or resumed
    runFrame = Signal(object)  #: a frame of the current run (:class:`app.widgets.sampling.Frame`)
    runFinished = Signal(bool)  #: the current run ended (True: completed)
    status = Signal(str, int)  #: a message for the status bar and how long to show it (ms)
    closing = Signal()  #: the app is closing: stop your workers

    def __init__(self, session: Session | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session if session is not None else Session()
        self.model: ARModel | None = None
        self.entry: ModelEntry | None = None
        self.meta: dict = {}
        self.model_key = 0
        self.ordering: Ordering | None = None
        self.figures: PixelFigures | None = None  #: the heatmaps shown (maybe of an older canvas)
        self.figures_serial = 0  #: increases with every heatmaps shown
        self.run: Run | None = None

    # -- model and ordering ------------------------------------------------------------------------
    def set_model(self, model: ARModel, entry: ModelEntry | None, meta: dict | None = None,
                  ordering: Ordering | None = None) -> None:
        """Show ``model`` (in ``ordering``, default its own); emits ``modelChanged``."""
        self.model = model
        self.entry = entry
        self.meta = dict(meta or {})
        self.model_key += 1
        self.ordering = ordering if ordering is not None else model.ordering
        self.modelChanged.emit()

    def set_ordering(self, ordering: Ordering) -> None:
        self.ordering = ordering
        self.orderingChanged.emit()

    # -- canvas -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.session.height, self.session.width

    def canvas_key(self) -> tuple:
        """(model key, ordering, canvas version): what a result computed from the canvas belongs to."""
        return (self.model_key, self.ordering, self.session.version)

    def replace_canvas(self, image: np.ndarray, mask: np.ndarray | None = None, record: bool = True) -> None:
        """Put ``image`` on the canvas (one undo step unless ``record`` is False) and, if given,
        ``mask`` as the inpainting mask (in the same step)."""
        self.session.set_canvas(np.asarray(image).reshape(self.shape), record=record)
        if mask is not None:
            self.session.set_mask(np.asarray(mask, bool).reshape(self.shape), record=False)
        self.canvas_replaced()

    def canvas_replaced(self) -> None:
        """Tell the listeners that the session was changed as a whole (undo, clear, load...)."""
        self.canvasReplaced.emit()
        self.canvasChanged.emit()

    def canvas_edited(self) -> None:
        """Tell the listeners that a stroke changed the ink."""
        self.canvasChanged.emit()

    # -- heatmaps ---------------------------------------------------------------------------------
    def set_figures(self, figures: PixelFigures) -> None:
        self.figures = figures
        self.figures_serial += 1

    def figures_shown(self) -> None:
        self.figuresShown.emit()

    # -- the run ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.run is not None

    def start_run(self, run: Run) -> None:
        self.run = run
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
        self.runChanged.emit()

    def run_finished(self, completed: bool) -> None:
        self.runFinished.emit(completed)

    def show_status(self, message: str, ms: int = 0) -> None:
        self.status.emit(message, ms)
