"""The main window: it builds the widgets and the controllers, lays them out and wires them.

What the window shows lives in one :class:`app.state.AppState` (``state``), each change announced
by a signal. The window holds no state and does no work: each concern is a controller handed the
state and its own widgets, owning its workers and requests (:class:`app.latest.Latest`):
``checkpoints`` (:mod:`app.checkpoints`: the model picker, opening and saving), ``live``
(:mod:`app.figures`: heatmaps, inspector, read-out), ``influence`` (:mod:`app.influence`),
``runs`` (:mod:`app.runs`: sampling and inpainting), ``editing`` (:mod:`app.editing`: test
digits and image files), ``fork`` (:mod:`app.fork`) and ``classes`` (:mod:`app.classes`: the
class panel of a class-conditional model, under the canvas). Menus and toolbars are an
:class:`app.actions.Actions` (``acts``). Heatmaps, loading and saving share the ``compute`` worker.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.catalogue import ModelEntry
from engine.document import Session
from engine.figures import PixelFigures
from engine.models.base import ARModel
from engine.ordering import Ordering

from . import actions, jobs
from . import settings as app_settings
from .checkpoints import CheckpointController
from .classes import ClassesController, conditionals_title
from .editing import EditingController
from .figures import FiguresController
from .fork import ForkController
from .influence import InfluenceController
from .runs import RunController
from .state import AppState
from .widgets.canvas import CanvasWidget
from .widgets.classes import ClassPanel
from .widgets.compare import install as install_compare
from .widgets.compress_panel import CompressPanel
from .widgets.heatmaps import HeatmapPanel
from .widgets.influence import InfluenceView
from .widgets.inspector import Inspector, ReadOut
from .widgets.legend import OrderLegend
from .widgets.model_info import ModelInfo
from .widgets.pages import scrolling, tab_of, tabs_min_width
from .widgets.pickers import ModelPicker, OrderingPicker
from .widgets.sampling import SamplingPanel
from .widgets.training import TrainingPanel
from .worker import Worker

__all__ = ["MainWindow"]

TOOL_HINTS = {"draw": "left draws, right erases", "mask": "painting the inpainting mask (right removes)",
              "inspect": "click a pixel to pin it"}


class MainWindow(QMainWindow):
    # the state's and the controllers' signals, repeated for scripts and tests that watch the window
    figuresShown = Signal()  #: heatmaps and read-out updated for the current canvas
    modelChanged = Signal()
    percentileShown = Signal()
    ensembleShown = Signal()
    influenceShown = Signal()  #: the pinned pixel's influence map is up to date
    runFinished = Signal(bool)  #: a sampling run ended (True: completed)
    classesShown = Signal()  #: a conditional model's class panel shows the figures on screen

    def __init__(self, bundled: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("pixelchain — autoregressive models of binarized MNIST")
        self.settings = app_settings.make_settings()
        self.bundled_dir = app_settings.bundled_dir() if bundled is None else Path(bundled)
        self.state = st = AppState(Session(), self)
        self.last_error = ""
        self.compute = Worker("compute", self, torch_threads=1)
        self.trainer = Worker("train", self)

        # -- widgets and controllers -------------------------------------------------------------
        self.canvas = CanvasWidget(st)
        self.heatmaps = HeatmapPanel()
        self.readout = ReadOut()
        self.model_picker = ModelPicker()
        self.ordering_picker = OrderingPicker()
        self.inspector = Inspector()
        self.influence_view = InfluenceView()
        self.model_info = ModelInfo()
        self.sampling = SamplingPanel()
        self.training = TrainingPanel(self.trainer, app_settings.models_dir())
        self.legend = OrderLegend()
        self.class_panel = ClassPanel()
        self.maps_title = QLabel()
        self.checkpoints = CheckpointController(st, self.compute, self.model_picker, self.ordering_picker, self.model_info,
                                                self.settings, self.bundled_dir, self)
        self.live = FiguresController(st, self.compute, self.heatmaps, self.readout, self.inspector, self)
        self.influence = InfluenceController(st, self.influence_view, self)
        self.runs = RunController(st, self.canvas, self.sampling, self)
        self.editing = EditingController(st, self.compute, self.heatmaps, self)
        self.classes = ClassesController(st, self.class_panel, self.maps_title, self)
        self.acts = actions.build(self, st, self.checkpoints, self.editing, self.model_picker, self.ordering_picker, self.settings)
        self._lay_out()

        # -- wiring -----------------------------------------------------------------------------
        st.modelChanged.connect(self._show_ordering)
        st.orderingChanged.connect(self._show_ordering)
        st.overlayChanged.connect(lambda key: self.legend.show_for(key, st.ordering))
        st.toolChanged.connect(self._show_tool)
        st.status.connect(lambda msg, ms: self.statusBar().showMessage(msg, ms))
        st.error.connect(self.show_error)
        st.modelChanged.connect(self.modelChanged)
        st.figuresShown.connect(self.figuresShown)
        st.runFinished.connect(self.runFinished)
        self.classes.shown.connect(self.classesShown)
        self.live.percentileShown.connect(self.percentileShown)
        self.live.ensembleShown.connect(self.ensembleShown)
        self.influence.shown.connect(self.influenceShown)
        self.influence.pointed.connect(self.canvas.set_hover)
        self.influence.pointed.connect(lambda i: self.heatmaps.set_marker(i, "hover"))
        self.canvas.hovered.connect(st.set_hover)
        self.canvas.pinned.connect(st.set_pin)
        self.checkpoints.listChanged.connect(lambda: self.acts.show_models(self.checkpoints.recent, self.model_picker.entries))
        self.training.checkpointReady.connect(self.checkpoints.add_trained)
        self.training.message.connect(self.show_error)
        # built last: they listen to the state after the window has reacted to it
        self.compare = install_compare(self, st, lambda: self.model_picker.entries)
        self.fork = ForkController(st, self.sampling, self)
        self.training.set_recipes(self.checkpoints.populate())
        self.acts.update_edit_actions()
        self.trainer.submit(jobs.warm_up_job, replace=False)

    def _lay_out(self) -> None:
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 8, 0)
        self.canvas_title = QLabel()
        self.canvas_title.setObjectName("section")
        self._show_tool(self.state.tool)
        ll.addWidget(self.canvas_title)
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.acts.canvas_toolbar, 0, Qt.AlignmentFlag.AlignTop)
        under = QVBoxLayout()  # the class panel under the canvas, right of the toolbar: it keeps its height
        under.setContentsMargins(0, 0, 0, 0)
        under.addWidget(self.canvas, 1)
        under.addWidget(self.class_panel)  # shown for a class-conditional model only
        row.addLayout(under, 1)
        ll.addLayout(row, 1)
        ll.addWidget(self.legend)
        mid = QWidget()
        ml = QVBoxLayout(mid)
        ml.setContentsMargins(0, 0, 0, 0)
        t2 = self.maps_title
        t2.setText(conditionals_title(self.state))
        t2.setObjectName("section")
        t2.setWordWrap(True)  # wraps in a narrow column instead of setting its width
        t2.setMinimumWidth(10)
        ml.addWidget(t2)
        ml.addWidget(self.heatmaps, 1)
        self.tabs = QTabWidget()
        insp = QWidget()
        il = QVBoxLayout(insp)
        self.inspector.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        il.addWidget(self.inspector)
        il.addWidget(self.influence_view)
        il.addWidget(self.model_info, 1)
        self.tabs.addTab(scrolling(insp), "Inspect")
        self.tabs.addTab(scrolling(self.sampling), "Sample && inpaint")
        self.tabs.addTab(scrolling(self.training), "Train")
        self.compress_panel = CompressPanel(self.state)
        i = self.tabs.addTab(scrolling(self.compress_panel), "Compress")
        # a short label, so that the four tabs fit the panel at its usual width; the tooltip says the rest
        self.tabs.setTabToolTip(i, "Compress & score: what the drawn digit costs to store, and how digit-like it is")
        self.tabs.setMinimumWidth(380)  # raised to the tab bar's width once styled (showEvent)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(mid)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 4)
        split.setStretchFactor(2, 3)
        split.setChildrenCollapsible(False)
        self.splitter = split
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(10, 6, 10, 6)
        cl.addWidget(split, 1)
        cl.addWidget(self.readout)
        self.setCentralWidget(central)
        self.statusBar().showMessage("Ready")

    # -- what the window shows: read from the state -----------------------------------------------
    @property
    def session(self) -> Session:
        return self.state.session

    @property
    def model(self) -> ARModel | None:
        return self.state.model

    @property
    def entry(self) -> ModelEntry | None:
        return self.state.entry

    @property
    def ordering(self) -> Ordering | None:
        return self.state.ordering

    @property
    def figures(self) -> PixelFigures | None:
        return self.state.figures

    def _show_ordering(self) -> None:
        self.canvas.set_ordering(self.state.ordering)
        self.legend.show_for(self.state.overlay, self.state.ordering)

    def _show_tool(self, tool: str) -> None:
        self.canvas_title.setText(f"Canvas  <span style='color:#8b95a5'>28 × 28 · {TOOL_HINTS[tool]}</span>")

    def show_error(self, msg: str) -> None:
        self.statusBar().showMessage(msg.replace("\n", " "), 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, "pixelchain", msg, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()  # window-modal, does not block the event loop
        self.last_error = msg

    def show_panel(self, panel: QWidget) -> None:
        """Bring the tab holding ``panel`` (the sampling, training or compress panel) to the front."""
        self.tabs.setCurrentIndex(self.panel_tab(panel))

    def panel_tab(self, panel: QWidget) -> int:
        """The index of the tab holding ``panel`` (each page sits in a scroll area), -1 if none."""
        return tab_of(self.tabs, panel)

    def showEvent(self, ev: QShowEvent) -> None:  # noqa: N802 (Qt)
        super().showEvent(ev)
        self.tabs.setMinimumWidth(tabs_min_width(self.tabs))  # known once the style sheet has been applied
        if not getattr(self, "_sized", False):
            self._sized = True
            total = max(self.splitter.width(), 900)
            self.splitter.setSizes([int(total * 0.45), int(total * 0.27), int(total * 0.28)])

    def confirm_quit(self) -> bool:
        """Quitting during training asks first (the run would stop; its best checkpoint so far is kept)."""
        if not self.training.running:
            return True
        answer = QMessageBox.question(
            self, "Quit pixelchain?",
            "A model is training. Quitting stops the run; the best checkpoint so far is kept.\n\nQuit anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802 (Qt)
        if not self.confirm_quit():
            ev.ignore()
            return
        self.state.stop_run()
        if self.training.running:
            self.training.stop()
        # A deep model's minibatch (or a panel's pass over the test digits) can take seconds on a
        # CPU: vanish at once, then let the threads end (between minibatches/pixels; files are
        # only ever written atomically).
        self.hide()
        self.state.closing.emit()  # the controllers, panels and dialogs stop their own workers
        for w in (self.trainer, self.compute):
            w.shutdown(600_000)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(ev)
