"""The main window: canvas, live heatmaps, pickers, inspector, sampling/inpainting and training.

What the window shows lives in one :class:`app.state.AppState` (``state``): the model, the
ordering, the canvas document (:class:`engine.session.Session`), the heatmaps and the sampling
run. The window changes it and reacts to its signals; the panels and dialogs built on top (fork,
compare, compress) are handed the state, not the window. Work runs on :class:`app.worker.Worker`
threads: ``compute`` (heatmaps, loading and saving checkpoints, test digits), ``reference`` (log p
of the test digits for the percentile), ``ensemble``, ``influence``, ``sample`` and ``train``.
Each kind of request goes through an :class:`app.latest.Latest`, so a stale result is never
shown. Heatmap requests are debounced while a stroke goes on and coalesced while one is in flight
(the newest canvas wins). Menus and the toolbar are built in :mod:`app.actions`; the live figures,
the editing commands and sampling runs are mixins in :mod:`app.figures`, :mod:`app.editing` and
:mod:`app.runs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.catalogue import ModelEntry, list_checkpoints
from engine.checkpoint import Checkpoint
from engine.document import Session
from engine.figures import PixelFigures
from engine.models.base import ARModel
from engine.ordering import Ordering

from . import actions, jobs
from . import settings as app_settings
from .editing import EditingMixin
from .figures import FiguresMixin
from .fork import ForkController
from .influence import InfluenceMixin
from .latest import Latest
from .runs import RunMixin
from .state import AppState
from .widgets.canvas import CanvasWidget
from .widgets.compare import install as install_compare
from .widgets.compress_panel import CompressPanel
from .widgets.heatmaps import HeatmapPanel
from .widgets.influence import InfluenceView
from .widgets.inspector import Inspector, ReadOut
from .widgets.legend import OrderLegend
from .widgets.model_info import ModelInfo
from .widgets.pickers import ModelPicker, OrderingPicker
from .widgets.sampling import SamplingPanel
from .widgets.training import TrainingPanel
from .worker import Worker

__all__ = ["MainWindow"]

DEBOUNCE_MS = 12


class MainWindow(FiguresMixin, InfluenceMixin, EditingMixin, RunMixin, QMainWindow):
    figuresShown = Signal()  #: heatmaps and read-out updated for the current canvas
    modelChanged = Signal()
    percentileShown = Signal()
    ensembleShown = Signal()
    influenceShown = Signal()  #: the pinned pixel's influence map is up to date
    runFinished = Signal(bool)  #: a sampling run ended (True: completed)

    def __init__(self, bundled: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("pixelchain — autoregressive models of binarized MNIST")
        self.settings = app_settings.make_settings()
        self.bundled_dir = app_settings.bundled_dir() if bundled is None else Path(bundled)
        self.state = AppState(Session(), self)
        self.reference: dict[tuple, np.ndarray] = {}
        self.last_latency: float | None = None
        self._stroke_t0: tuple[int, float] | None = None
        self._fig_dirty = False
        self._ens_figures = None
        self._hover = -1
        self.pinned = -1
        self.last_error = ""

        self.compute = Worker("compute", self, torch_threads=1)
        self.ref_worker = Worker("reference", self, torch_threads=1)
        self.ens_worker = Worker("ensemble", self, torch_threads=1)
        self.influence_worker = Worker("influence", self, torch_threads=1)
        self.sampler = Worker("sample", self, torch_threads=1)
        self.trainer = Worker("train", self)
        # one "latest request wins" per kind of request (the compute worker also loads and saves)
        self.figure_requests = Latest(self.compute, self._figures_fresh, replace=False)
        self.reference_requests = Latest(self.ref_worker)
        self.ensemble_requests = Latest(self.ens_worker, lambda key: key == self._ensemble_key())
        self.influence_requests = Latest(self.influence_worker, lambda key: key == self.influence_key())
        self.run_requests = Latest(self.sampler)

        # -- widgets ----------------------------------------------------------------------------
        self.canvas = CanvasWidget(self.session)
        self.heatmaps = HeatmapPanel()
        self.readout = ReadOut()
        self.model_picker = ModelPicker()
        self.ordering_picker = OrderingPicker()
        self.inspector = Inspector()
        self.influence_view = InfluenceView()
        self.model_info = ModelInfo()
        self.sampling = SamplingPanel()
        self.training = TrainingPanel(self.trainer, app_settings.models_dir())

        actions.build(self)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 8, 0)
        title = QLabel("Canvas  <span style='color:#8b95a5'>28 × 28 · left draws, right erases</span>")
        title.setObjectName("section")
        self.canvas_title = title
        ll.addWidget(title)
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.canvas_toolbar, 0, Qt.AlignTop)
        row.addWidget(self.canvas, 1)
        ll.addLayout(row, 1)
        self.legend = OrderLegend()
        ll.addWidget(self.legend)
        mid = QWidget()
        ml = QVBoxLayout(mid)
        ml.setContentsMargins(0, 0, 0, 0)
        t2 = QLabel("Conditionals  <span style='color:#8b95a5'>teacher-forced on the canvas</span>")
        t2.setObjectName("section")
        ml.addWidget(t2)
        ml.addWidget(self.heatmaps, 1)
        self.tabs = QTabWidget()
        insp = QWidget()
        il = QVBoxLayout(insp)
        self.inspector.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        il.addWidget(self.inspector)
        il.addWidget(self.influence_view)
        il.addWidget(self.model_info, 1)
        self.tabs.addTab(_scrolling(insp), "Inspect")
        self.tabs.addTab(_scrolling(self.sampling), "Sample && inpaint")
        self.tabs.addTab(_scrolling(self.training), "Train")
        self.compress_panel = CompressPanel(self.state)
        i = self.tabs.addTab(_scrolling(self.compress_panel), "Compress")
        # a short label, so that the four tabs fit the panel at its usual width; the tooltip says the rest
        self.tabs.setTabToolTip(i, "Compress & score: what the drawn digit costs to store, and how digit-like it is")
        self.tabs.setMinimumWidth(380)  # raised to the tab bar's width once styled (showEvent)
        split = QSplitter(Qt.Horizontal)
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

        # -- wiring -----------------------------------------------------------------------------
        st = self.state
        st.modelChanged.connect(self._on_model_changed)
        st.orderingChanged.connect(self._on_ordering_changed)
        st.canvasReplaced.connect(self._on_canvas_replaced)
        st.status.connect(lambda msg, ms: self.statusBar().showMessage(msg, ms))
        # the window's own signals repeat the state's, for scripts and tests that watch the window
        st.modelChanged.connect(self.modelChanged)
        st.figuresShown.connect(self.figuresShown)
        st.runFinished.connect(self.runFinished)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.request_figures)
        self.canvas.canvasChanged.connect(self._on_canvas_edit)
        self.canvas.strokeFinished.connect(self._on_stroke_finished)
        self.canvas.maskChanged.connect(self._update_inpaint_note)
        self.canvas.hovered.connect(self._on_hover)
        self.canvas.pinned.connect(self.pin)
        self.heatmaps.hovered.connect(self._on_hover)
        self.heatmaps.pinned.connect(lambda i: self.pin(-1 if i == self.pinned else i))
        self.influence_view.hovered.connect(self._on_influence_hover)
        self.inspector.unpin.clicked.connect(lambda: self.pin(-1))
        self.model_picker.entryChosen.connect(lambda e: self.open_checkpoint(e.path, e.source))
        self.ordering_picker.orderingChosen.connect(self.set_ordering)
        self.compute.result.connect(self._on_compute_result)
        self.compute.error.connect(self._on_compute_error)
        self.compute.finished.connect(self._on_compute_finished)
        self.figure_requests.result.connect(self._show_figures)
        self.figure_requests.finished.connect(self._on_figures_finished)
        self.figure_requests.error.connect(lambda _k, m: self.show_error(m))
        self.ensemble_requests.result.connect(self._on_ensemble_result)
        self.ensemble_requests.error.connect(self._on_ensemble_error)
        self.influence_requests.progress.connect(self._on_influence_progress)
        self.influence_requests.result.connect(self._on_influence_result)
        self.influence_requests.error.connect(self._on_influence_error)
        self.reference_requests.progress.connect(self._on_ref_progress)
        self.reference_requests.result.connect(self._on_ref_result)
        self.reference_requests.error.connect(lambda _k, m: self.readout.set_percentile(None, f"unavailable ({m})"))
        self.run_requests.progress.connect(self._on_frame)
        self.run_requests.result.connect(self._on_run_result)
        self.run_requests.error.connect(lambda _k, m: self.show_error(f"Sampling failed: {m}"))
        self.run_requests.finished.connect(self._on_run_finished)
        s = self.sampling
        s.runRequested.connect(self.start_run)
        s.stopRequested.connect(self.stop_run)
        s.pauseToggled.connect(st.pause_run)
        s.stepRequested.connect(self.step_run)
        s.speedChanged.connect(self._set_run_delay)
        s.saveGridRequested.connect(self.save_grid)
        s.useSampleRequested.connect(self.use_sample)
        s.maskToolRequested.connect(lambda: self.set_tool("mask"))
        s.clearMaskRequested.connect(self.clear_mask)
        s.maskHalfRequested.connect(self.mask_lower_half)
        s.mode_inpaint.toggled.connect(self._update_inpaint_note)
        self.training.checkpointReady.connect(self._on_trained)
        self.training.message.connect(self.show_error)
        # built last: they listen to the state after the window has reacted to it
        install_compare(self, self.state, lambda: self.model_picker.entries)
        self.fork = ForkController(self.state, self.sampling, self)
        self._pending_loads: dict[int, tuple[Path, str]] = {}
        self._pending_misc: dict[int, str] = {}
        self.populate_models()
        self._update_edit_actions()
        self.trainer.submit(jobs.warm_up_job, replace=False)

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
    def model_meta(self) -> dict:
        return self.state.meta

    @property
    def model_key(self) -> int:
        return self.state.model_key

    @property
    def ordering(self) -> Ordering | None:
        return self.state.ordering

    @property
    def figures(self) -> PixelFigures | None:
        return self.state.figures

    # ------------------------------------------------------------------------------------------
    # models
    def populate_models(self) -> None:
        entries, errors = list_checkpoints(self.bundled_dir, "bundled")
        for e in entries:
            self.model_picker.add_entry(e)
        self.training.set_recipes(entries)
        for p in app_settings.recent_files(self.settings):
            if p.is_file():
                try:
                    self.model_picker.add_entry(ModelEntry.from_file(p, "recent"))
                except Exception:  # noqa: BLE001 -- an unreadable recent file is skipped
                    continue
        for msg in errors:
            self.statusBar().showMessage(msg, 8000)
        actions.refresh_model_menus(self)

    def start_default(self) -> None:
        """Open the best bundled model, else the most recent one, else an untrained FVSBN."""
        entries = [e for e in self.model_picker.entries if e.source == "bundled"]
        if entries:
            best = min(entries, key=lambda e: e.test_nll if e.test_nll is not None else float("inf"))
            self.open_checkpoint(best.path, "bundled")
        elif self.model_picker.entries:
            e = self.model_picker.entries[0]
            self.open_checkpoint(e.path, e.source)
        else:
            job = self.compute.submit(jobs.default_model_job, replace=False)
            self._pending_misc[job.id] = "default"
            self.statusBar().showMessage("No checkpoints yet: building an untrained FVSBN…")

    def open_checkpoint(self, path: Path, source: str = "opened") -> None:
        job = self.compute.submit(jobs.load_job, Path(path), replace=False)
        self._pending_loads[job.id] = (Path(path), source)
        self.statusBar().showMessage(f"Loading {Path(path).name}…")

    def set_model(self, model: ARModel, entry: ModelEntry | None, meta: dict | None = None) -> None:
        c = model.config
        if (c.height, c.width) != (self.session.height, self.session.width):
            raise ValueError(f"the app shows {self.session.height}x{self.session.width} digits; "
                             f"this model is for {c.height}x{c.width} images")
        if self.state.running:
            self.stop_run()
        self.state.set_model(model, entry, meta, self.ordering_picker.set_model(model))

    def _on_model_changed(self) -> None:
        cur, entry, model = self.ordering, self.entry, self.model
        self.canvas.set_ordering(cur)
        self.legend.show_for(self.canvas.overlay, cur)
        if entry is not None:
            self.model_picker.drop_placeholder()
            self.model_picker.select_path(entry.path)
        else:
            self.model_picker.set_placeholder("untrained FVSBN (pixel marginals) · use Train… or File ▸ Open…")
        self.model_info.show_model(model, entry, self.model_meta)
        self.readout.set_model_text(self._model_text())
        actions.update_model_actions(self)
        self._update_inpaint_note()
        self.request_figures()
        self.request_reference()

    def _model_text(self) -> str:
        if self.model is None:
            return ""
        name = self.entry.name if self.entry else "untrained"
        ordering = self.ordering.label if self.ordering else ""
        return f"{name} · {self.model.family.upper()} · {self.model.num_parameters():,} parameters · {ordering}"

    def set_ordering(self, ordering: Ordering) -> None:
        if self.model is None:
            return
        ok, why = self.model.supports(ordering)
        if not ok:
            self.statusBar().showMessage(why, 6000)
            self.ordering_picker.select(self.ordering)
            return
        if self.state.running:
            self.stop_run()
        self.state.set_ordering(ordering)

    def _on_ordering_changed(self) -> None:
        ordering = self.ordering
        self.canvas.set_ordering(ordering)
        self.legend.show_for(self.canvas.overlay, ordering)
        self.readout.set_model_text(self._model_text())
        self._update_inpaint_note()
        self._refresh_inspector()
        self.request_figures()
        self.request_reference()

    # ------------------------------------------------------------------------------------------
    # compute worker results
    def _on_compute_result(self, job_id: int, value: object) -> None:
        if job_id in self._pending_loads:
            path, source = self._pending_loads[job_id]
            ck: Checkpoint = value  # type: ignore[assignment]
            try:
                entry = ModelEntry.from_file(path, source)
                c = ck.model.config
                if (c.height, c.width) != (self.session.height, self.session.width):
                    raise ValueError(f"the app shows {self.session.height}x{self.session.width} digits; "
                                     f"this model is for {c.height}x{c.width} images")
                self.model_picker.add_entry(entry)
                self.set_model(ck.model, entry, ck.meta)
            except Exception as exc:  # noqa: BLE001
                self.show_error(f"Cannot use {path.name}: {exc}")
                return
            if source != "bundled":
                app_settings.add_recent(self.settings, path)
                actions.refresh_model_menus(self)
            self.statusBar().showMessage(f"Loaded {entry.name} ({entry.family}) from {path}", 6000)
            return
        kind = self._pending_misc.get(job_id)
        if kind == "default":
            self.set_model(value, None, {})  # type: ignore[arg-type]
            self.statusBar().showMessage("No checkpoints found: showing an untrained FVSBN. "
                                         "Train one (Train tab) or open one (File ▸ Open Checkpoint…).")
        elif kind == "digit":
            index, img = value  # type: ignore[misc]
            if self.canvas.locked:  # a run started while the digit was loading: the run owns the canvas
                self.statusBar().showMessage(f"Test digit #{index} not drawn: a sampling run started first", 6000)
                return
            self.state.replace_canvas(img)
            self.statusBar().showMessage(f"Test digit #{index}", 4000)
        elif kind == "save":
            app_settings.add_recent(self.settings, Path(value))  # type: ignore[arg-type]
            actions.refresh_model_menus(self)
            self.statusBar().showMessage(f"Saved {value}", 6000)
        # the heatmaps computed on this worker reach _show_figures through figure_requests

    def _on_compute_error(self, job_id: int, msg: str) -> None:
        if job_id in self._pending_loads:
            path, _ = self._pending_loads[job_id]
            self.show_error(f"Cannot open {path.name}:\n{msg}")
        elif job_id in self._pending_misc:
            self.show_error(msg)
        # (a failed heatmap request reports through figure_requests)

    def _on_compute_finished(self, job_id: int, _cancelled: bool) -> None:
        self._pending_loads.pop(job_id, None)
        self._pending_misc.pop(job_id, None)

    def show_error(self, msg: str) -> None:
        self.statusBar().showMessage(msg.replace("\n", " "), 15000)
        box = QMessageBox(QMessageBox.Warning, "pixelchain", msg, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()  # window-modal, does not block the event loop
        self.last_error = msg

    # ------------------------------------------------------------------------------------------
    # inspector
    def _on_hover(self, idx: int) -> None:
        self._hover = idx
        self.heatmaps.set_marker(idx, "hover")
        if self.pinned < 0:
            self._refresh_inspector()

    def pin(self, idx: int) -> None:
        self.pinned = idx
        self.canvas.set_pinned(idx)
        self.heatmaps.set_marker(idx, "pin")
        self._refresh_inspector()
        self.request_influence()

    def _refresh_inspector(self) -> None:
        idx = self.pinned if self.pinned >= 0 else self._hover
        self.inspector.show_pixel(idx, self.figures, self.session.canvas, self.ordering, self.pinned >= 0)

    # ------------------------------------------------------------------------------------------
    # training and checkpoints
    def _on_trained(self, path: Path, how: str) -> None:
        try:
            entry = ModelEntry.from_file(path, "trained")
        except Exception as exc:  # noqa: BLE001
            self.show_error(f"The trained checkpoint cannot be read: {exc}")
            return
        self.model_picker.add_entry(entry)
        app_settings.add_recent(self.settings, path)
        actions.refresh_model_menus(self)
        self.statusBar().showMessage(f"Training {how}: {path.name} is in the model picker", 8000)

    def save_checkpoint_as(self, path: str | Path) -> None:
        if self.model is None:
            return
        meta = {k: v for k, v in self.model_meta.items() if k not in ("family", "config", "ordering", "parameters")}
        meta["name"] = Path(path).stem
        job = self.compute.submit(jobs.save_job, Path(path), self.model, meta, replace=False)
        self._pending_misc[job.id] = "save"

    def show_panel(self, panel: QWidget) -> None:
        """Bring the tab holding ``panel`` (the sampling, training or compress panel) to the front."""
        self.tabs.setCurrentIndex(self.panel_tab(panel))

    def panel_tab(self, panel: QWidget) -> int:
        """The index of the tab holding ``panel`` (each page sits in a scroll area), -1 if none."""
        for i in range(self.tabs.count()):
            page = self.tabs.widget(i)
            if page is panel or page.isAncestorOf(panel):
                return i
        return -1

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        # wide enough for every tab's label and every panel (known once the style sheet has been
        # applied): a narrow window shrinks the canvas column instead of hiding tabs behind scroll
        # arrows or cutting a panel off; a short one scrolls the panel (_scrolling)
        pages = [self.tabs.widget(i) for i in range(self.tabs.count())]
        widest = max((p.widget().minimumSizeHint().width() + p.verticalScrollBar().sizeHint().width()
                      for p in pages if isinstance(p, QScrollArea)), default=0)
        self.tabs.setMinimumWidth(max(380, self.tabs.tabBar().sizeHint().width() + 8, widest + 4))
        if not getattr(self, "_sized", False):
            self._sized = True
            total = max(self.splitter.width(), 900)
            self.splitter.setSizes([int(total * 0.45), int(total * 0.27), int(total * 0.28)])

    def closeEvent(self, ev) -> None:
        self.stop_run()
        if self.training.running:
            self.training.stop()
        # A deep model's minibatch (or a panel's pass over the test digits) can take seconds on a
        # CPU: vanish at once, then let the threads end (between minibatches/pixels; files are
        # only ever written atomically).
        self.hide()
        self.state.closing.emit()  # the panels and dialogs stop their own workers
        workers = (self.sampler, self.trainer, self.ref_worker, self.ens_worker, self.influence_worker, self.compute)
        for w in workers:
            w.shutdown(600_000)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(ev)


class _PageScroll(QScrollArea):
    """A tab page that fills the panel like an ordinary page (a results grid takes the height
    there is) and scrolls only when the panel is shorter than the page's minimum (a short screen).

    A plain resizable QScrollArea sizes a page with word-wrapped labels to its *preferred* height
    for the width, which scrolls panels that would fit."""

    def __init__(self, page: QWidget):
        super().__init__()
        self.setWidget(page)
        self.setWidgetResizable(False)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def _fit(self) -> None:
        page = self.widget()
        bar = self.verticalScrollBar().sizeHint().width()
        width = self.width() - 2 * self.frameWidth()
        lay = page.layout()

        def need(w: int) -> int:
            if lay is not None and lay.hasHeightForWidth():
                return lay.totalMinimumHeightForWidth(w)
            return page.minimumSizeHint().height()

        height = self.height() - 2 * self.frameWidth()
        if need(width) > height:  # it scrolls: the bar takes its width
            width -= bar
        page.resize(max(width, page.minimumSizeHint().width()), max(height, need(width)))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._fit()

    def eventFilter(self, obj, e) -> bool:  # noqa: N802 (Qt)
        if obj is self.widget() and e.type() == QEvent.LayoutRequest:  # its contents changed (a note shown)
            self._fit()
        return super().eventFilter(obj, e)

    def setWidget(self, page: QWidget) -> None:  # noqa: N802 (Qt)
        super().setWidget(page)
        page.installEventFilter(self)


def _scrolling(page: QWidget) -> QScrollArea:
    """``page`` in a vertical scroll area, so that a tall panel (training) never sets the window's
    minimum height: on a short screen the panel scrolls instead."""
    return _PageScroll(page)
