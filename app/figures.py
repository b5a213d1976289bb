"""Live figures of the main window (a mixin of the main window): the heatmaps and the read-out of
the drawn digit, and its percentile among test digits.

Requests go to the ``compute`` worker through ``figure_requests`` (:class:`app.latest.Latest`).
While a stroke goes on they are debounced; while one is in flight a newer canvas only marks the
request dirty, and it is sent when the running one ends, so the worker never queues stale work and
the newest canvas always wins. Every request carries (model key, ordering, canvas version) and its
result is dropped when it belongs to another model or ordering. ``last_latency`` is the time from
the end of a stroke to its heatmaps on screen (bench/gui_latency.py reports it).
"""

from __future__ import annotations

import time

import numpy as np

from engine.figures import PixelFigures, ensemble_kind, ensemble_size, percentile

from . import jobs

__all__ = ["FiguresMixin"]


class FiguresMixin:
    def _on_canvas_edit(self) -> None:
        self.state.canvas_edited()
        if not self._debounce.isActive():
            self._debounce.start()

    def _on_stroke_finished(self) -> None:
        self._debounce.stop()
        self._stroke_t0 = (self.session.version, time.perf_counter())
        self.request_figures()  # first, so the worker computes while the GUI repaints the canvas
        self._update_edit_actions()

    def canvas_replaced(self) -> None:
        """The whole canvas changed (load, clear, undo...): refresh everything that shows it."""
        self.state.canvas_replaced()

    def _on_canvas_replaced(self) -> None:
        self.canvas.update()
        self._update_edit_actions()
        self._update_inpaint_note()
        self.request_figures()

    @property
    def figures_pending(self) -> bool:
        """Heatmaps are being computed (or waiting to be, for a newer canvas)."""
        return self.figure_requests.busy or self._fig_dirty

    def _figures_fresh(self, key: tuple) -> bool:
        return key[:2] == (self.model_key, self.ordering)

    def request_figures(self) -> None:
        if self.model is None or self.ordering is None:
            return
        if self.figure_requests.busy:
            self._fig_dirty = True
            return
        self._fig_dirty = False
        self.figure_requests.submit(self.state.canvas_key(), jobs.figures_job, self.model, self.session.flat(), self.ordering)

    def _on_figures_finished(self, _key: tuple, _cancelled: bool) -> None:
        if self._fig_dirty:
            self.request_figures()

    def _show_figures(self, key: tuple, figs: PixelFigures) -> None:
        self.state.set_figures(figs)
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
            self.state.figures_shown()

    # ------------------------------------------------------------------------------------------
    # log p under an ensemble of orderings (order-agnostic models), on its own worker: it costs
    # n passes, and the heatmaps of the next stroke must not wait for it
    def _ensemble_key(self) -> tuple:
        return (self.model_key, self.session.version)

    @property
    def ensemble_shown(self) -> bool:
        """The ensemble read-out belongs to the current model and canvas."""
        return self.ensemble_requests.shown == self._ensemble_key()

    def request_ensemble(self, key: tuple) -> None:
        n = ensemble_size(self.model, self.model_meta) if self.model is not None else 0
        if n == 0 or key[2] != self.session.version:
            self.readout.set_ensemble(None, n)
            return
        ens_key = self._ensemble_key()
        if self.ensemble_requests.shown == ens_key:
            self._show_ensemble_text()  # same canvas and model, another ordering: only the tooltip changes
            return
        if not self.ensemble_requests.wanted(ens_key):
            return  # already being computed (the figures came again, for another ordering)
        self.readout.set_ensemble(None, n)
        self.ensemble_requests.submit(ens_key, jobs.ensemble_job, self.model, self.session.flat(), n)  # replaces older ones

    def _on_ensemble_result(self, _key: tuple, ens: object) -> None:
        self._ens_figures = ens
        self._show_ensemble_text()
        self.ensembleShown.emit()

    def _on_ensemble_error(self, _key: tuple, message: str) -> None:
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
        self.reference_requests.submit(self._ref_key(), jobs.reference_job, self.model, self.ordering)

    def _on_ref_progress(self, _key: tuple, frac: object) -> None:
        self.readout.set_percentile(None, f"measuring the test digits… {float(frac):.0%}")

    def _on_ref_result(self, key: tuple, logp: object) -> None:
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
