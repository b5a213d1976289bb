"""Sampling and inpainting runs.

A run is :func:`app.jobs.sample_job` on the ``sample`` worker. While it goes the state is locked
(no editing) and the canvas shows the first image of the batch with the pixels not generated yet
greyed and the current pixel outlined; pause, single steps, speed and stop act on the running
:class:`app.worker.Job` between two pixels. The run in progress is ``state.run``
(:class:`app.state.Run`); its frames reach the state's listeners (the fork) through
``state.runFrame``. A completed run puts its first image on the canvas (one undo step); a
stopped run leaves the canvas as it was. :class:`RunController` drives the sampling panel, owns
the worker, and keeps the panel's note on how exact inpainting is under the model and ordering.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from engine.images import save_grid

from .jobs import Frame, sample_job
from .latest import Latest
from .state import AppState, Run
from .widgets.canvas import CanvasWidget
from .widgets.sampling import SamplingPanel
from .worker import Worker

__all__ = ["RunController", "inpaint_note", "sample_note", "drawn_note"]


def sample_note(state: AppState) -> str | None:
    """What "Sample new digits" does in the state's ordering (None: no model): the note on
    inpainting would be stale there."""
    if state.model is None or state.ordering is None:
        return None
    return (f"Draws new digits pixel by pixel in the {state.ordering.label} ordering; the canvas and "
            "its mask are not used (choose Inpaint to regenerate a masked region)." + class_note(state, "sample"))


def class_note(state: AppState, mode: str) -> str:
    """What a class-conditional model draws from ("" for an unconditional one)."""
    if not state.classes:
        return ""
    if state.given is not None:
        y = state.given
        return f" Every image is drawn from p(x | y = {y})" + (f": the canvas completed as a {y}." if mode == "inpaint" else ".")
    if mode == "inpaint":
        return " The digit is drawn first from p(y | the known pixels before the first masked one), then the pixels given it."
    return " Each image's digit is drawn first from p(y), then its pixels from p(x | y)."


def inpaint_note(state: AppState) -> str | None:
    """How exactly the model fills the masked region in the state's ordering (None: no model)."""
    model, ordering = state.model, state.ordering
    if model is None or ordering is None:
        return None
    known = state.session.known
    if int((~known).sum()) == 0:
        return "Paint a mask (Mask brush, or “Mask lower half”) to choose the pixels to regenerate."
    if model.inpaint_is_exact(known, ordering):
        if model.any_order:
            order = model.known_first_ordering(known, ordering)
            if order in model.trained_orderings() and order != ordering:
                how = f"the {int(known.sum())} known pixels come first in the {order.label} ordering, one it was trained on,"
            elif order == ordering:
                how = f"the {ordering.label} ordering already puts the {int(known.sum())} known pixels first"
            else:
                how = f"this model takes any ordering, so the {int(known.sum())} known pixels go first"
            return f"<b>Exact</b>: {how} and every masked pixel is conditioned on all of them."
        return "<b>Exact</b>: every known pixel comes before the masked region in this ordering."
    in_order = known[ordering.perm]
    first = int(np.argmin(in_order))
    ignored = int(in_order[first:].sum())
    return (f"<b>Approximate</b>: this {model.family.upper()} is tied to the {ordering.label} ordering, so the "
            f"{ignored} known pixels that come after the first masked pixel in it are ignored when filling the region.")


def drawn_note(drawn: np.ndarray | None, given: int | None) -> str:
    """What the run's classes were: the digit asked for, or those the model drew ("" unconditional)."""
    if drawn is None or len(drawn) == 0:
        return ""
    if given is not None:
        return f" of a {given}"
    shown = ", ".join(str(int(c)) for c in drawn[:12]) + (", …" if len(drawn) > 12 else "")
    return f"; digits drawn: {shown}"


class RunController(QObject):
    """Starts, steps, pauses and stops runs from the sampling panel (see the module docstring)."""

    def __init__(self, state: AppState, canvas: CanvasWidget, panel: SamplingPanel, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.canvas = canvas
        self.panel = panel
        self.worker = Worker("sample", self, torch_threads=1)
        self.requests = Latest(self.worker, parent=self)
        self._result: np.ndarray | None = None  #: the completed run's first image, for the canvas
        p = panel
        p.runRequested.connect(self.start_run)
        p.stopRequested.connect(state.stop_run)
        p.pauseToggled.connect(state.pause_run)
        p.stepRequested.connect(self.step_run)
        p.speedChanged.connect(self._set_delay)
        p.saveGridRequested.connect(self.save_grid)
        p.useSampleRequested.connect(self.use_sample)
        p.maskToolRequested.connect(lambda: state.set_tool("mask"))
        p.clearMaskRequested.connect(state.clear_mask)
        p.maskHalfRequested.connect(self.mask_lower_half)
        p.modeChanged.connect(self.update_note)
        p.classPicked.connect(state.set_given)
        p.classGridRequested.connect(self.start_class_grid)
        state.givenChanged.connect(lambda: p.set_class(state.given))
        state.modelChanged.connect(self._on_model)
        for sig in (state.modelChanged, state.orderingChanged, state.maskChanged, state.canvasReplaced, state.givenChanged):
            sig.connect(self.update_note)
        state.closing.connect(lambda: self.worker.shutdown(600_000))
        self.requests.progress.connect(self._on_frame)
        self.requests.result.connect(self._on_result)
        self.requests.error.connect(lambda _k, m: state.show_error(f"Sampling failed: {m}"))
        self.requests.finished.connect(self._on_finished)

    def _on_model(self) -> None:
        self.panel.set_classes(self.state.classes)
        self.panel.set_class(self.state.given)

    def update_note(self, *_: object) -> None:
        text = sample_note(self.state) if self.panel.mode == "sample" else inpaint_note(self.state)
        if text is not None and self.panel.mode == "inpaint":
            text += class_note(self.state, "inpaint")
        if text is not None:
            self.panel.set_inpaint_note(text)

    def mask_lower_half(self) -> None:
        self.state.mask_lower_half()
        self.panel.set_mode("inpaint")

    # -- the run ---------------------------------------------------------------------------------
    def start_run(self, mode: str, paused: bool = False) -> None:
        """Sample ("sample") or inpaint ("inpaint") as the panel says; a class-conditional model
        draws (or completes the canvas as) the picked digit, or with none picked draws the digit too."""
        st = self.state
        if st.model is None or st.running:
            return
        known = None
        values = None
        if mode == "inpaint":
            known = st.session.known.copy()
            if known.all():
                st.show_error("Inpainting needs a mask: paint the region to regenerate with the Mask brush first.")
                return
            values = st.session.flat()
        unknown = np.ones(st.model.size, bool) if known is None else ~known
        n, seed, temperature = self.panel.settings()
        self.panel.set_running(True)
        self.panel.begin(n, unknown, st.shape, st.levels)
        self.canvas.show_run(np.where(unknown, 0, st.session.flat()), unknown.copy())
        self._result = None
        y = st.given if st.classes else None
        job = self.requests.submit(mode, sample_job, st.model, n, known, values, st.ordering, temperature, seed, y,
                                   start_paused=paused)
        job.delay = self.panel.delay()
        if paused:
            self.panel.set_paused(True)
            job.step()
        st.start_run(Run(job, mode, n, seed, temperature, unknown, given=y))
        st.show_status("Inpainting…" if mode == "inpaint" else "Sampling…")

    def start_class_grid(self, per_class: int) -> None:
        """Sample ``per_class`` digits of every class of a conditional model, from p(x | y), into a
        grid with one row per class: a run like any other (progress, pause, stop), whose images stay
        in the grid (the canvas is left as it was)."""
        st = self.state
        if st.model is None or st.running or not st.classes:
            return
        c = st.classes
        n = c * per_class
        _, seed, temperature = self.panel.settings()
        unknown = np.ones(st.model.size, bool)
        self.panel.set_running(True)
        self.panel.begin(n, unknown, st.shape, st.levels, cols=per_class, row_labels=[str(k) for k in range(c)])
        self.canvas.show_run(np.zeros(st.model.size), unknown.copy())
        self._result = None
        y = np.repeat(np.arange(c), per_class)
        job = self.requests.submit("grid", sample_job, st.model, n, None, None, st.ordering, temperature, seed, y)
        job.delay = self.panel.delay()
        st.start_run(Run(job, "grid", n, seed, temperature, unknown, given=y))
        st.show_status(f"Sampling {per_class} of each digit…")

    def step_run(self) -> None:
        run = self.state.run
        if run is None:
            self.start_run(self.panel.mode, paused=True)
        else:
            if not run.job.paused:
                self.panel.set_paused(True)
            run.job.set_paused(True)
            run.job.step()

    def _set_delay(self, delay: float) -> None:
        if self.state.run is not None:
            self.state.run.job.delay = delay

    def _on_frame(self, _mode: str, fr: object) -> None:
        run = self.state.run
        if run is None:
            return
        assert isinstance(fr, Frame)
        pending = np.zeros(run.unknown.size, bool)
        pending[fr.order.perm[fr.step + 1:]] = True
        self.canvas.show_run(fr.x[0], pending & run.unknown, fr.pixel)
        self.panel.show_frame(fr)
        self.state.show_frame(fr)

    def _on_result(self, mode: str, x: object) -> None:
        images = np.asarray(x)
        if mode == "grid":
            per = len(images) // max(self.state.classes, 1)
            self.panel.finish(images, f"done: {per} samples of p(x | y) for each digit y, one row per digit")
            self.panel.advance_seed()
            return
        self.panel.finish(images, f"done: {len(images)} {'completions' if mode == 'inpaint' else 'samples'}"
                          + drawn_note(self.panel.classes_drawn, self.state.given))
        self._result = images[0]
        if mode == "sample":
            self.panel.advance_seed()

    def _on_finished(self, _mode: str, cancelled: bool) -> None:
        st = self.state
        if st.run is None:
            return
        st.end_run()
        self.canvas.show_run(None)
        self.panel.set_running(False)
        if cancelled:
            self.panel.finish(None, "stopped")
            st.show_status("Stopped; the canvas is as before the run", 4000)
        else:
            st.show_status("Done", 3000)
        result, self._result = self._result, None
        if result is not None:
            st.replace_canvas(result)  # one undo step
        else:
            st.canvas_replaced()
        st.run_finished(not cancelled)

    # -- the results -----------------------------------------------------------------------------
    def use_sample(self, i: int) -> None:
        if self.panel.images is not None and not self.state.locked:
            self.state.replace_canvas(self.panel.images[i])

    def save_grid(self, path: str | None = None) -> None:
        if self.panel.images is None:
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.panel, "Save samples as PNG", str(Path.home() / "samples.png"),
                                                  "PNG images (*.png)")
            if not path:
                return
        h, w = self.state.shape
        try:
            save_grid(self.panel.images.reshape(-1, h, w).astype(np.uint8), path, scale=6, levels=self.state.levels)
        except (OSError, ValueError) as exc:
            self.state.show_error(f"Cannot save {path}: {exc}")
            return
        self.state.show_status(f"Saved {path}", 4000)
