"""Live figures of the main window (a mixin of :class:`app.main_window.MainWindow`): the heatmaps
and the read-out of the drawn digit, and its percentile among test digits.

Requests go to the ``compute`` worker. While a stroke goes on they are debounced; while one is
in flight a newer canvas only marks the request dirty, and it is sent when the running one ends,
so the worker never queues stale work and the newest canvas always wins. Every result carries
(model key, ordering, canvas version) and is dropped when it belongs to another model or
ordering or is older than what is shown. ``last_latency`` is the time from the end of a stroke
to its heatmaps on screen (bench/gui_latency.py reports it).
"""

from __future__ import annotations

import time

import numpy as np

from engine.session import PixelFigures, ensemble_kind, ensemble_size, percentile

from . import jobs

__all__ = ["FiguresMixin"]


class FiguresMixin:
    def _on_canvas_edit(self) -> None:
        if not self._debounce.isActive():
            self._debounce.start()

    def _on_stroke_finished(self) -> None:
        self._debounce.stop()
        self._stroke_t0 = (self.session.version, time.perf_counter())
        self.request_figures()  # first, so the worker computes while the GUI repaints the canvas
        self._update_edit_actions()

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
        self.request_ensemble(key)
        self._refresh_inspector()
        self.request_influence()
        if key[2] == self.session.version:
            if self._stroke_t0 is not None and self._stroke_t0[0] <= key[2]:
                self.last_latency = time.perf_counter() - self._stroke_t0[1]
                self._stroke_t0 = None
            self.figuresShown.emit()

    # ------------------------------------------------------------------------------------------
    # log p under an ensemble of orderings (order-agnostic models), on its own worker: it costs
    # n passes, and the heatmaps of the next stroke must not wait for it
    def request_ensemble(self, key: tuple) -> None:
        n = ensemble_size(self.model, self.model_meta) if self.model is not None else 0
        if n == 0 or key[2] != self.session.version:
            self.readout.set_ensemble(None, n)
            return
        ens_key = (self.model_key, self.session.version)
        if self._ens_shown == ens_key:
            self._show_ensemble_text()  # same canvas and model, another ordering: only the tooltip changes
            return
        if self._ens_pending == ens_key:
            return  # already being computed (the figures came again, for another ordering)
        self.readout.set_ensemble(None, n)
        self._ens_pending = ens_key
        self.ens_worker.submit(jobs.ensemble_job, self.model, self.session.flat(), n, ens_key)  # replaces older ones

    def _on_ensemble_result(self, _job_id: int, value: object) -> None:
        key, ens = value
        if self._ens_pending == key:
            self._ens_pending = None
        if key != (self.model_key, self.session.version):
            return  # another model, or an older canvas
        self._ens_shown, self._ens_figures = key, ens
        self._show_ensemble_text()
        self.ensembleShown.emit()

    def _on_ensemble_error(self, _job_id: int, message: str) -> None:
        self._ens_pending = None
        self.readout.ens.setText(f"ensemble: unavailable ({message})")

    def _show_ensemble_text(self) -> None:
        ens = self._ens_figures
        shown = self.figures.log_p if self.figures is not None else None
        kind = ensemble_kind(self.model) if self.model is not None else ""
        self.readout.set_ensemble(ens, len(ens.members) if ens is not None else 0, shown, kind or "orderings")

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
