"""Sampling and inpainting runs from the main window (a mixin of the main window).

A run is :func:`app.widgets.sampling.sample_job` on the ``sample`` worker. While it goes the canvas
is locked and shows the first image of the batch with the pixels not generated yet greyed and the
current pixel outlined; pause, single steps, speed and stop act on the running
:class:`app.worker.Job` between two pixels. The run in progress is ``state.run``
(:class:`app.state.Run`); its frames reach the state's listeners (the fork) through
``state.runFrame``. A completed run puts its first image on the canvas (one
undo step); a stopped run leaves the canvas as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog

from engine.images import save_grid

from .state import Run
from .widgets.sampling import sample_job

__all__ = ["RunMixin"]


class RunMixin:
    def _update_inpaint_note(self, *_: object) -> None:
        if self.model is None or self.ordering is None:
            return
        known = self.session.known
        n_unknown = int((~known).sum())
        if n_unknown == 0:
            text = "Paint a mask (Mask brush, or “Mask lower half”) to choose the pixels to regenerate."
        elif self.model.inpaint_is_exact(known, self.ordering):
            if self.model.any_order:
                order = self.model.known_first_ordering(known, self.ordering)
                if order in self.model.trained_orderings() and order != self.ordering:
                    how = f"the {int(known.sum())} known pixels come first in the {order.label} ordering, one it was trained on,"
                elif order == self.ordering:
                    how = f"the {self.ordering.label} ordering already puts the {int(known.sum())} known pixels first"
                else:
                    how = f"this model takes any ordering, so the {int(known.sum())} known pixels go first"
                text = f"<b>Exact</b>: {how} and every masked pixel is conditioned on all of them."
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
        return self.state.running

    def start_run(self, mode: str, paused: bool = False) -> None:
        if self.model is None or self.state.running:
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
        n, seed, temperature = s.count.value(), s.seed.value(), s.temperature.value()
        self.canvas.locked = True
        s.set_running(True)
        s.begin(n, unknown, (self.session.height, self.session.width))
        pending = unknown.copy()
        self.canvas.show_run(np.where(unknown, 0, self.session.flat()), pending)
        job = self.run_requests.submit(mode, sample_job, self.model, n, known, values, self.ordering, temperature, seed,
                                       start_paused=paused)
        job.delay = s.delay()
        if paused:
            s.pause_btn.setChecked(True)
            job.step()
        self.state.start_run(Run(job, mode, n, seed, temperature, unknown))
        self.statusBar().showMessage("Inpainting…" if mode == "inpaint" else "Sampling…")

    def stop_run(self) -> None:
        self.state.stop_run()

    def step_run(self) -> None:
        run = self.state.run
        if run is None:
            self.start_run(self.sampling.mode, paused=True)
        else:
            if not run.job.paused:
                self.sampling.pause_btn.setChecked(True)
            run.job.set_paused(True)
            run.job.step()

    def _set_run_delay(self, delay: float) -> None:
        if self.state.run is not None:
            self.state.run.job.delay = delay

    def _on_frame(self, _mode: str, fr: object) -> None:
        run = self.state.run
        if run is None:
            return
        h, w = self.session.height, self.session.width
        pending = np.zeros(h * w, bool)
        pending[fr.order.perm[fr.step + 1:]] = True  # type: ignore[attr-defined]
        self.canvas.show_run(fr.x[0], pending & run.unknown, fr.pixel)  # type: ignore[attr-defined]
        self.sampling.show_frame(fr)  # type: ignore[arg-type]
        self.state.show_frame(fr)

    def _on_run_result(self, mode: str, x: object) -> None:
        images = np.asarray(x)
        self.sampling.finish(images, f"done: {len(images)} {'completions' if mode == 'inpaint' else 'samples'}")
        self.session.set_canvas(images[0])
        if mode == "sample":
            self.sampling.seed.setValue(self.sampling.seed.value() + 1)

    def _on_run_finished(self, _mode: str, cancelled: bool) -> None:
        if self.state.run is None:
            return
        self.state.end_run()
        self.canvas.locked = False
        self.canvas.show_run(None)
        self.sampling.set_running(False)
        if cancelled:
            self.sampling.finish(None, "stopped")
            self.statusBar().showMessage("Stopped; the canvas is as before the run", 4000)
        else:
            self.statusBar().showMessage("Done", 3000)
        self.canvas_replaced()
        self.state.run_finished(not cancelled)

    def use_sample(self, i: int) -> None:
        if self.sampling.images is not None and not self.canvas.locked:
            self.state.replace_canvas(self.sampling.images[i])

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
