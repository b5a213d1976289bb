"""The main window: canvas, live heatmaps, pickers, inspector, sampling/inpainting and training.

The window owns one :class:`engine.session.Session` (the drawn digit, mask and history) and four
:class:`app.worker.Worker` threads: ``compute`` (heatmaps, loading and saving checkpoints, test
digits), ``reference`` (log p of the test digits for the percentile), ``sample`` and ``train``.
Heatmap requests are debounced while a stroke goes on, coalesced while one is in flight (the
newest canvas wins) and tagged with the model, ordering and canvas version so a stale result is
never shown. Menus and the toolbar are built in :mod:`app.actions`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog, QHBoxLayout, QLabel, QSizePolicy, QMainWindow, QMessageBox, QSplitter, QTabWidget, QVBoxLayout, QWidget,
)

from engine.checkpoint import Checkpoint
from engine.images import import_image, save_grid, save_png
from engine.models.base import ARModel
from engine.ordering import Ordering
from engine.session import ModelEntry, PixelFigures, Session, list_checkpoints, percentile

from . import actions, jobs, settings as app_settings
from .widgets.canvas import CanvasWidget
from .widgets.heatmaps import HeatmapPanel
from .widgets.inspector import Inspector, ReadOut
from .widgets.model_info import ModelInfo
from .widgets.pickers import ModelPicker, OrderingPicker
from .widgets.sampling import SamplingPanel, sample_job
from .widgets.training import TrainingPanel
from .worker import Worker

__all__ = ["MainWindow"]

DEBOUNCE_MS = 12


class _OrderLegend(QWidget):
    """The colour key of the ordering overlay: first step to last step."""

    def __init__(self) -> None:
        super().__init__()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(96, 2, 8, 2)
        self.first = QLabel("step 1")
        self.bar = QLabel()
        self.bar.setFixedHeight(10)
        self.last = QLabel("step 784")
        self.note = QLabel()
        for lab in (self.first, self.last, self.note):
            lab.setObjectName("legend")
        lay.addWidget(self.first)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.last)
        lay.addWidget(self.note)
        from .widgets.colors import lookup_table

        lut = lookup_table(9)
        stops = ", ".join(f"stop:{i / 8:.3f} rgb({r},{g},{b})" for i, (r, g, b) in enumerate(lut.tolist()))
        self.bar.setStyleSheet(f"background: qlineargradient(x1:0, y1:0, x2:1, y2:0, {stops}); border-radius: 3px;")
        self.setVisible(False)

    def show_for(self, mode: str, ordering: Ordering | None) -> None:
        self.setVisible(mode != "off" and ordering is not None)
        if ordering is not None:
            self.last.setText(f"step {ordering.size}")
            self.note.setText(f"  {ordering.label}" + ("  (green dot: first, red: last)" if mode == "path" else ""))


class MainWindow(QMainWindow):
    figuresShown = Signal()  #: heatmaps and read-out updated for the current canvas
    modelChanged = Signal()
    percentileShown = Signal()
    runFinished = Signal(bool)  #: a sampling run ended (True: completed)

    def __init__(self, bundled: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("pixelchain — autoregressive models of binarized MNIST")
        self.settings = app_settings.make_settings()
        self.bundled_dir = app_settings.bundled_dir() if bundled is None else Path(bundled)
        self.session = Session()
        self.model: ARModel | None = None
        self.entry: ModelEntry | None = None
        self.model_meta: dict = {}
        self.model_key = 0
        self.ordering: Ordering | None = None
        self.figures: PixelFigures | None = None
        self.reference: dict[tuple, np.ndarray] = {}
        self.last_latency: float | None = None
        self._stroke_t0: tuple[int, float] | None = None
        self._fig_job = None
        self._fig_dirty = False
        self._shown_id = 0
        self._run = None
        self._run_mode = ""
        self._hover = -1
        self.pinned = -1

        self.compute = Worker("compute", self, torch_threads=1)
        self.ref_worker = Worker("reference", self, torch_threads=1)
        self.sampler = Worker("sample", self, torch_threads=1)
        self.trainer = Worker("train", self)

        # -- widgets ----------------------------------------------------------------------------
        self.canvas = CanvasWidget(self.session)
        self.heatmaps = HeatmapPanel()
        self.readout = ReadOut()
        self.model_picker = ModelPicker()
        self.ordering_picker = OrderingPicker()
        self.inspector = Inspector()
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
        self.legend = _OrderLegend()
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
        il.addWidget(self.model_info, 1)
        self.tabs.addTab(insp, "Inspect")
        self.tabs.addTab(self.sampling, "Sample && inpaint")
        self.tabs.addTab(self.training, "Train")
        self.tabs.setMinimumWidth(380)
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
        self.inspector.unpin.clicked.connect(lambda: self.pin(-1))
        self.model_picker.entryChosen.connect(lambda e: self.open_checkpoint(e.path, e.source))
        self.ordering_picker.orderingChosen.connect(self.set_ordering)
        self.compute.result.connect(self._on_compute_result)
        self.compute.error.connect(self._on_compute_error)
        self.compute.finished.connect(self._on_compute_finished)
        self.ref_worker.progress.connect(self._on_ref_progress)
        self.ref_worker.result.connect(self._on_ref_result)
        self.ref_worker.error.connect(lambda _i, m: self.readout.set_percentile(None, f"unavailable ({m})"))
        self.sampler.progress.connect(self._on_frame)
        self.sampler.result.connect(self._on_run_result)
        self.sampler.error.connect(lambda _i, m: self.show_error(f"Sampling failed: {m}"))
        self.sampler.finished.connect(self._on_run_finished)
        s = self.sampling
        s.runRequested.connect(self.start_run)
        s.stopRequested.connect(self.stop_run)
        s.pauseToggled.connect(lambda on: self._run is not None and self._run.set_paused(on))
        s.stepRequested.connect(self.step_run)
        s.speedChanged.connect(lambda d: self._run is not None and setattr(self._run, "delay", d))
        s.saveGridRequested.connect(self.save_grid)
        s.useSampleRequested.connect(self.use_sample)
        s.maskToolRequested.connect(lambda: self.set_tool("mask"))
        s.clearMaskRequested.connect(self.clear_mask)
        s.maskHalfRequested.connect(self.mask_lower_half)
        s.mode_inpaint.toggled.connect(self._update_inpaint_note)
        self.training.checkpointReady.connect(self._on_trained)
        self.training.message.connect(self.show_error)
        self._pending_loads: dict[int, tuple[Path, str]] = {}
        self._pending_misc: dict[int, str] = {}
        self.populate_models()
        self._update_edit_actions()
        self.trainer.submit(jobs.warm_up_job, replace=False)

    # ------------------------------------------------------------------------------------------
    # models
    def populate_models(self) -> None:
        entries, errors = list_checkpoints(self.bundled_dir, "bundled")
        for e in entries:
            self.model_picker.add_entry(e)
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
            raise ValueError(f"the app shows {self.session.height}x{self.session.width} digits; this model is for {c.height}x{c.width} images")
        if self._run is not None:
            self.stop_run()
        self.model = model
        self.entry = entry
        self.model_meta = dict(meta or {})
        self.model_key += 1
        cur = self.ordering_picker.set_model(model)
        self.ordering = cur
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
        self.modelChanged.emit()
        self.request_figures()
        self.request_reference()

    def _model_text(self) -> str:
        if self.model is None:
            return ""
        name = self.entry.name if self.entry else "untrained"
        return f"{name} · {self.model.family.upper()} · {self.model.num_parameters():,} parameters · {self.ordering.label if self.ordering else ''}"

    def set_ordering(self, ordering: Ordering) -> None:
        if self.model is None:
            return
        ok, why = self.model.supports(ordering)
        if not ok:
            self.statusBar().showMessage(why, 6000)
            self.ordering_picker.select(self.ordering)
            return
        if self._run is not None:
            self.stop_run()
        self.ordering = ordering
        self.canvas.set_ordering(ordering)
        self.legend.show_for(self.canvas.overlay, ordering)
        self.readout.set_model_text(self._model_text())
        self._update_inpaint_note()
        self._refresh_inspector()
        self.request_figures()
        self.request_reference()

    # ------------------------------------------------------------------------------------------
    # heatmaps
    def _on_canvas_edit(self) -> None:
        if not self._debounce.isActive():
            self._debounce.start()

    def _on_stroke_finished(self) -> None:
        self._debounce.stop()
        self._stroke_t0 = (self.session.version, time.perf_counter())
        self._update_edit_actions()
        self.request_figures()

    def canvas_replaced(self) -> None:
        """The whole canvas changed (load, clear, undo...): refresh everything that shows it."""
        self.canvas.update()
        self._update_edit_actions()
        self._update_inpaint_note()
        self.request_figures()

    def request_figures(self) -> None:
        if self.model is None or self.ordering is None:
            return
        if self._fig_job is not None:
            self._fig_dirty = True
            return
        self._fig_dirty = False
        key = (self.model_key, self.ordering, self.session.version)
        self._fig_job = self.compute.submit(jobs.figures_job, self.model, self.session.flat(), self.ordering, key, replace=False)

    def _show_figures(self, job_id: int, key: tuple, figs: PixelFigures) -> None:
        if key[0] != self.model_key or key[1] != self.ordering or job_id < self._shown_id:
            return  # stale: another model or ordering, or older than what is shown
        self._shown_id = job_id
        self.figures = figs
        self.heatmaps.show_figures(figs.prob, figs.nll)
        self.readout.set_figures(figs)
        self._update_percentile()
        self._refresh_inspector()
        if key[2] == self.session.version:
            if self._stroke_t0 is not None and self._stroke_t0[0] <= key[2]:
                self.last_latency = time.perf_counter() - self._stroke_t0[1]
                self._stroke_t0 = None
            self.figuresShown.emit()

    # ------------------------------------------------------------------------------------------
    # percentile among test digits
    def _ref_key(self) -> tuple:
        return (self.model_key, self.ordering)

    def request_reference(self) -> None:
        if self.model is None or self._ref_key() in self.reference:
            self._update_percentile()
            return
        self.readout.set_percentile(None, "computing on the test digits…")
        self.ref_worker.submit(jobs.reference_job, self.model, self.ordering, self._ref_key())

    def _on_ref_progress(self, _job_id: int, frac: object) -> None:
        self.readout.set_percentile(None, f"measuring the test digits… {float(frac):.0%}")

    def _on_ref_result(self, _job_id: int, value: object) -> None:
        key, logp = value
        self.reference[key] = logp
        self._update_percentile()

    def _update_percentile(self) -> None:
        ref = self.reference.get(self._ref_key())
        if ref is None or self.figures is None:
            return
        pct = percentile(self.figures.log_p, ref)
        subset = "" if len(ref) >= jobs.REFERENCE_IMAGES else " (random subset)"
        self.readout.set_percentile(pct, f"among {len(ref):,} test digits{subset}")
        self.readout.pct.setToolTip(
            f"log p(x) of the drawn digit compared with {len(ref):,} test digits under the same model and ordering: "
            f"median {np.median(ref):.1f}, 5th–95th percentile {np.percentile(ref, 5):.1f} to {np.percentile(ref, 95):.1f} nats"
            + ("" if not subset else ". This model is slow to score, so a fixed random subset of the test split is used."))
        self.percentileShown.emit()

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
            self.statusBar().showMessage("No checkpoints found: showing an untrained FVSBN. Train one (Train tab) or open one (File ▸ Open Checkpoint…).")
        elif kind == "digit":
            index, img = value  # type: ignore[misc]
            self.session.set_canvas(img)
            self.canvas_replaced()
            self.statusBar().showMessage(f"Test digit #{index}", 4000)
        elif kind == "save":
            app_settings.add_recent(self.settings, Path(value))  # type: ignore[arg-type]
            actions.refresh_model_menus(self)
            self.statusBar().showMessage(f"Saved {value}", 6000)
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], PixelFigures):
            self._show_figures(job_id, value[0], value[1])

    def _on_compute_error(self, job_id: int, msg: str) -> None:
        if job_id in self._pending_loads:
            path, _ = self._pending_loads[job_id]
            self.show_error(f"Cannot open {path.name}:\n{msg}")
        else:
            self.show_error(msg)

    def _on_compute_finished(self, job_id: int, _cancelled: bool) -> None:
        self._pending_loads.pop(job_id, None)
        self._pending_misc.pop(job_id, None)
        if self._fig_job is not None and job_id == self._fig_job.id:
            self._fig_job = None
            if self._fig_dirty:
                self.request_figures()

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

    def _refresh_inspector(self) -> None:
        idx = self.pinned if self.pinned >= 0 else self._hover
        self.inspector.show_pixel(idx, self.figures, self.session.canvas, self.ordering, self.pinned >= 0)

    # ------------------------------------------------------------------------------------------
    # editing
    def set_tool(self, tool: str) -> None:
        self.canvas.tool = tool
        actions.sync_tool(self, tool)

    def undo(self) -> None:
        if not self.canvas.locked and self.session.undo():
            self.canvas_replaced()

    def redo(self) -> None:
        if not self.canvas.locked and self.session.redo():
            self.canvas_replaced()

    def clear_canvas(self) -> None:
        if not self.canvas.locked:
            self.session.clear()
            self.canvas_replaced()

    def invert_canvas(self) -> None:
        if not self.canvas.locked:
            self.session.invert()
            self.canvas_replaced()

    def clear_mask(self) -> None:
        self.session.clear_mask()
        self.canvas.update()
        self._update_inpaint_note()

    def mask_lower_half(self) -> None:
        m = np.zeros_like(self.session.mask)
        m[self.session.height // 2:] = True
        self.session.set_mask(m)
        self.canvas.update()
        self.sampling.mode_inpaint.setChecked(True)
        self._update_inpaint_note()

    def load_test_digit(self, index: int | None = None) -> None:
        if self.canvas.locked:
            return
        job = self.compute.submit(jobs.test_digit_job, index, replace=False)
        self._pending_misc[job.id] = "digit"

    def _update_edit_actions(self) -> None:
        actions.update_edit_actions(self)

    def import_image_file(self, path: str | Path) -> bool:
        if self.canvas.locked:
            self.statusBar().showMessage("Stop the sampling run first", 4000)
            return False
        try:
            img = import_image(path)
        except Exception as exc:  # noqa: BLE001 -- ImageError and anything pillow raises
            self.show_error(str(exc))
            return False
        self.session.set_canvas(img)
        self.canvas_replaced()
        self.statusBar().showMessage(f"Imported {Path(path).name}", 4000)
        return True

    def export_image_file(self, path: str | Path, scale: int = 10) -> bool:
        try:
            save_png(self.session.canvas, path, scale=scale)
        except (OSError, ValueError) as exc:
            self.show_error(f"Cannot save {path}: {exc}")
            return False
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    # ------------------------------------------------------------------------------------------
    # sampling and inpainting
    def _update_inpaint_note(self, *_: object) -> None:
        if self.model is None or self.ordering is None:
            return
        known = self.session.known
        n_unknown = int((~known).sum())
        if n_unknown == 0:
            text = "Paint a mask (Mask brush, or “Mask lower half”) to choose the pixels to regenerate."
        elif self.model.inpaint_is_exact(known, self.ordering):
            if self.model.any_order:
                text = f"<b>Exact</b>: this model takes any ordering, so the {int(known.sum())} known pixels go first and every masked pixel is conditioned on all of them."
            else:
                text = "<b>Exact</b>: every known pixel comes before the masked region in this ordering."
        else:
            perm = self.ordering.perm
            in_order = known[perm]
            first = int(np.argmin(in_order))
            ignored = int(in_order[first:].sum())
            text = (f"<b>Approximate</b>: this {self.model.family.upper()} is tied to the {self.ordering.label} ordering, so the "
                    f"{ignored} known pixels that come after the first masked pixel in it are ignored when filling the region.")
        self.sampling.exactness.setText(text)

    @property
    def running(self) -> bool:
        return self._run is not None

    def start_run(self, mode: str, paused: bool = False) -> None:
        if self.model is None or self._run is not None:
            return
        s = self.sampling
        known = None
        values = None
        if mode == "inpaint":
            known = self.session.known.copy()
            if known.all():
                self.show_error("Inpainting needs a mask: paint the region to regenerate with the Mask brush first.")
                return
            values = self.session.flat()
        unknown = np.ones(self.model.size, bool) if known is None else ~known
        self._run_mode = mode
        self._run_base = self.session.flat().copy()
        self.canvas.locked = True
        s.set_running(True)
        s.begin(s.count.value(), unknown, (self.session.height, self.session.width))
        pending = unknown.copy()
        self.canvas.show_run(np.where(unknown, 0, self._run_base), pending)
        job = self.sampler.submit(sample_job, self.model, s.count.value(), known, values, self.ordering, s.temperature.value(),
                                  s.seed.value(), start_paused=paused)
        job.delay = s.delay()
        if paused:
            s.pause_btn.setChecked(True)
            job.step()
        self._run = job
        self.statusBar().showMessage("Inpainting…" if mode == "inpaint" else "Sampling…")

    def stop_run(self) -> None:
        if self._run is not None:
            self._run.cancel()

    def step_run(self) -> None:
        if self._run is None:
            self.start_run(self.sampling.mode, paused=True)
        else:
            if not self._run.paused:
                self.sampling.pause_btn.setChecked(True)
            self._run.set_paused(True)
            self._run.step()

    def _on_frame(self, job_id: int, fr: object) -> None:
        if self._run is None or job_id != self._run.id:
            return
        h, w = self.session.height, self.session.width
        unknown = self.sampling._unknown
        pending = np.zeros(h * w, bool)
        pending[fr.order.perm[fr.step + 1:]] = True  # type: ignore[attr-defined]
        self.canvas.show_run(fr.x[0], pending & unknown, fr.pixel)  # type: ignore[attr-defined]
        self.sampling.show_frame(fr)  # type: ignore[arg-type]

    def _on_run_result(self, job_id: int, x: object) -> None:
        if self._run is None or job_id != self._run.id:
            return
        images = np.asarray(x)
        self.sampling.finish(images, f"done: {len(images)} {'completions' if self._run_mode == 'inpaint' else 'samples'}")
        self.session.set_canvas(images[0])
        if self._run_mode == "sample":
            self.sampling.seed.setValue(self.sampling.seed.value() + 1)

    def _on_run_finished(self, job_id: int, cancelled: bool) -> None:
        if self._run is None or job_id != self._run.id:
            return
        self._run = None
        self.canvas.locked = False
        self.canvas.show_run(None)
        self.sampling.set_running(False)
        if cancelled:
            self.sampling.finish(None, "stopped")
            self.statusBar().showMessage("Stopped; the canvas is as before the run", 4000)
        else:
            self.statusBar().showMessage("Done", 3000)
        self.canvas_replaced()
        self.runFinished.emit(not cancelled)

    def use_sample(self, i: int) -> None:
        if self.sampling.images is not None and not self.canvas.locked:
            self.session.set_canvas(self.sampling.images[i])
            self.canvas_replaced()

    def save_grid(self, path: str | None = None) -> None:
        if self.sampling.images is None:
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save samples as PNG", str(Path.home() / "samples.png"), "PNG images (*.png)")
            if not path:
                return
        h, w = self.session.height, self.session.width
        try:
            save_grid(self.sampling.images.reshape(-1, h, w).astype(np.uint8), path, scale=6)
        except (OSError, ValueError) as exc:
            self.show_error(f"Cannot save {path}: {exc}")
            return
        self.statusBar().showMessage(f"Saved {path}", 4000)

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

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        if not getattr(self, "_sized", False):
            self._sized = True
            total = max(self.splitter.width(), 900)
            self.splitter.setSizes([int(total * 0.45), int(total * 0.27), int(total * 0.28)])

    def closeEvent(self, ev) -> None:
        self.stop_run()
        if self.training.running:
            self.training.stop()
        for w in (self.sampler, self.trainer, self.ref_worker, self.compute):
            w.shutdown()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(ev)
