"""The live figures of the drawn digit: the heatmaps, the pixel inspector and the read-out (log p,
bits per pixel, the ensemble's log p and the percentile among test digits).

:class:`FiguresController` owns the requests behind them. Heatmaps go to the ``compute`` worker
(shared with loading and saving checkpoints, so a heatmap never runs beside a model being swapped
in) through ``figure_requests`` (:class:`app.latest.Latest`). While a stroke goes on they are
debounced; while one is in flight a newer canvas only marks the request dirty, and it is sent when
the running one ends, so the worker never queues stale work and the newest canvas always wins.
Every request carries (model key, ordering, canvas version) and its result is dropped when it
belongs to another model or ordering. The ensemble log p (order-agnostic models: n passes, on
its own worker so the next stroke's heatmaps never wait for it) and the test digits' log p for
the percentile (its own worker: the whole test split, measured once per checkpoint file and
ordering with its progress shown, cached on disk, and cancelled when the model or ordering
changes first) follow each new heatmap.
``last_latency`` is the time from the end of a stroke to its heatmaps on screen
(bench/gui_latency.py reports it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from engine.figures import EnsembleFigures, PixelFigures, ensemble_kind, ensemble_size, percentile

from . import jobs
from .latest import Latest
from .state import AppState
from .widgets.heatmaps import HeatmapPanel
from .widgets.inspector import Inspector, ReadOut
from .worker import Worker

__all__ = ["FiguresController", "DEBOUNCE_MS", "measuring_note", "checkpoint_path"]

DEBOUNCE_MS = 12


def measuring_note(frac: float) -> str:
    """What the read-out (and the Compress tab) says while the test digits are being measured."""
    return f"measuring the {jobs.REFERENCE_IMAGES:,} test digits: {frac:.0%}"


def checkpoint_path(state: AppState) -> Path | None:
    """The file the model shown was read from (the key of its cached figures); None for a model
    that was never saved (the untrained default)."""
    return state.entry.path if state.entry is not None and state.model is not None else None


class FiguresController(QObject):
    """Keeps the heatmaps, the inspector and the read-out up to date with the state."""

    percentileShown = Signal()
    ensembleShown = Signal()

    def __init__(self, state: AppState, compute: Worker, heatmaps: HeatmapPanel, readout: ReadOut, inspector: Inspector,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.heatmaps, self.readout, self.inspector = heatmaps, readout, inspector
        self.compute = compute
        self.ref_worker = Worker("reference", self, torch_threads=1)
        self.ens_worker = Worker("ensemble", self, torch_threads=1)
        self.figure_requests = Latest(compute, self._figures_fresh, replace=False, parent=self)
        self.reference_requests = Latest(self.ref_worker, parent=self)
        self.ensemble_requests = Latest(self.ens_worker, lambda key: key == self._ensemble_key(), parent=self)
        self.reference: dict[tuple, np.ndarray] = {}  #: log p of the test digits per (model key, ordering)
        self.last_latency: float | None = None
        self._stroke_t0: tuple[int, float] | None = None
        self._fig_dirty = False
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.request_figures)

        state.inkPainted.connect(self._on_ink)
        state.strokeFinished.connect(self._on_stroke_finished)
        state.canvasReplaced.connect(self.request_figures)
        state.modelChanged.connect(self._on_model_or_ordering)
        state.orderingChanged.connect(self._on_model_or_ordering)
        state.givenChanged.connect(self.request_figures)
        state.hoverChanged.connect(self._on_hover)
        state.pinChanged.connect(self._on_pin)
        state.closing.connect(self.shutdown)
        heatmaps.hovered.connect(state.set_hover)
        heatmaps.pinned.connect(state.toggle_pin)
        inspector.unpinRequested.connect(lambda: state.set_pin(-1))
        self.figure_requests.result.connect(self._show_figures)
        self.figure_requests.finished.connect(self._on_figures_finished)
        self.figure_requests.error.connect(lambda _k, m: state.show_error(m))
        self.ensemble_requests.result.connect(self._on_ensemble_result)
        self.ensemble_requests.error.connect(lambda _k, m: readout.show_ensemble(f"ensemble: unavailable ({m})"))
        self.reference_requests.progress.connect(lambda _k, frac: self._set_percentile(None, measuring_note(float(frac))))
        self.reference_requests.result.connect(self._on_ref_result)
        self.reference_requests.error.connect(lambda _k, m: self._set_percentile(None, f"unavailable ({m})"))

    def shutdown(self) -> None:
        for w in (self.ref_worker, self.ens_worker):
            w.shutdown(600_000)

    # -- the heatmaps ----------------------------------------------------------------------------
    def _on_ink(self) -> None:
        if not self._debounce.isActive():
            self._debounce.start()

    def _on_stroke_finished(self) -> None:
        self._debounce.stop()
        self._stroke_t0 = (self.state.session.version, time.perf_counter())
        self.request_figures()  # first, so the worker computes while the GUI repaints the canvas

    def _on_model_or_ordering(self) -> None:
        self.readout.set_model_text(self._model_text())
        self._refresh_inspector()
        self.request_figures()
        self.request_reference()

    def _model_text(self) -> str:
        st = self.state
        if st.model is None:
            return ""
        name = st.entry.name if st.entry else "untrained"
        ordering = st.ordering.label if st.ordering else ""
        return f"{name} · {st.model.family.upper()} · {st.model.num_parameters():,} parameters · {ordering}"

    @property
    def pending(self) -> bool:
        """Heatmaps are being computed (or waiting to be, for a newer canvas)."""
        return self.figure_requests.busy or self._fig_dirty

    def _figures_fresh(self, key: tuple) -> bool:
        # (model key, ordering, canvas version, picked class): an older canvas is still worth showing, another class is not
        return key[:2] == (self.state.model_key, self.state.ordering) and key[3] == self._given()

    def _given(self) -> int | None:
        """The class the heatmaps are conditioned on (a conditional model), None: the marginal."""
        return self.state.given if self.state.classes else None

    def request_figures(self) -> None:
        st = self.state
        if st.model is None or st.ordering is None:
            return
        if self.figure_requests.busy:
            self._fig_dirty = True
            return
        self._fig_dirty = False
        given = self._given()
        self.figure_requests.submit((*st.canvas_key(), given), jobs.figures_job, st.model, st.session.flat(), st.ordering,
                                    given)

    def _on_figures_finished(self, _key: tuple, _cancelled: bool) -> None:
        if self._fig_dirty:
            self.request_figures()

    def _show_figures(self, key: tuple, figs: PixelFigures) -> None:
        st = self.state
        st.set_figures(figs)
        self.heatmaps.show_figures(figs.prob, figs.nll, figs.levels)
        self.readout.set_figures(figs)
        self._update_percentile()
        self.request_ensemble(key)
        self._refresh_inspector()
        if key[2] == st.session.version:
            if self._stroke_t0 is not None and self._stroke_t0[0] <= key[2]:
                self.last_latency = time.perf_counter() - self._stroke_t0[1]
                self._stroke_t0 = None
            st.figures_shown()

    # -- the inspector ---------------------------------------------------------------------------
    def _on_hover(self, idx: int) -> None:
        self.heatmaps.set_marker(idx, "hover")
        if self.state.pinned < 0:
            self._refresh_inspector()

    def _on_pin(self, idx: int) -> None:
        self.heatmaps.set_marker(idx, "pin")
        self._refresh_inspector()

    def _refresh_inspector(self) -> None:
        st = self.state
        self.inspector.show_pixel(st.inspected, st.figures, st.session.canvas, st.ordering, st.pinned >= 0)

    # -- log p under an ensemble of orderings (order-agnostic models) ----------------------------
    def _ensemble_key(self) -> tuple:
        return (self.state.model_key, self.state.session.version)

    @property
    def ensemble_shown(self) -> bool:
        """The ensemble read-out belongs to the current model and canvas."""
        return self.ensemble_requests.shown == self._ensemble_key()

    def request_ensemble(self, key: tuple) -> None:
        st = self.state
        n = ensemble_size(st.model, st.meta) if st.model is not None else 0
        if n == 0 or key[2] != st.session.version:
            self.readout.set_ensemble(None, n)
            return
        ens_key = self._ensemble_key()
        if self.ensemble_requests.shown == ens_key:
            self._show_ensemble_text()  # same canvas and model, another ordering: only the tooltip changes
            return
        if not self.ensemble_requests.wanted(ens_key):
            return  # already being computed (the figures came again, for another ordering)
        self.readout.set_ensemble(None, n)
        self.ensemble_requests.submit(ens_key, jobs.ensemble_job, st.model, st.session.flat(), n)  # replaces older ones

    def _on_ensemble_result(self, _key: tuple, ens: object) -> None:
        assert isinstance(ens, EnsembleFigures)
        self.state.set_ensemble(ens)
        self._show_ensemble_text()
        self.ensembleShown.emit()

    def _show_ensemble_text(self) -> None:
        st = self.state
        ens = st.ensemble
        shown = st.figures.log_p if st.figures is not None else None
        kind = ensemble_kind(st.model) if st.model is not None else ""
        self.readout.set_ensemble(ens, len(ens.members) if ens is not None else 0, shown, kind or "orderings")

    # -- percentile among test digits ------------------------------------------------------------
    def _ref_key(self) -> tuple:
        return (self.state.model_key, self.state.ordering)

    def request_reference(self) -> None:
        """Measure the test digits for the model and ordering shown (once per checkpoint file and
        ordering: cached on disk); a measurement for another model or ordering is cancelled."""
        st = self.state
        key = self._ref_key()
        if self.reference_requests.pending not in (None, key):
            self.reference_requests.cancel()
        if st.model is None or key in self.reference:
            self._update_percentile()
            return
        if self.reference_requests.pending == key:
            return
        self._set_percentile(None, measuring_note(0.0))
        self.reference_requests.submit(key, jobs.reference_job, st.model, st.ordering, checkpoint_path(st), st.dataset)

    def _on_ref_result(self, key: tuple, logp: object) -> None:
        self.reference[key] = np.asarray(logp)
        self._update_percentile()

    def _set_percentile(self, pct: float | None, note: str, tooltip: str | None = None) -> None:
        self.state.set_percentile(pct, note)
        self.readout.set_percentile(pct, note)
        if tooltip is not None:
            self.readout.set_percentile_tooltip(tooltip)

    def _update_percentile(self) -> None:
        ref = self.reference.get(self._ref_key())
        figs = self.state.figures
        if ref is None or figs is None:
            return
        pct = percentile(figs.log_p, ref)
        self._set_percentile(pct, f"among the {len(ref):,} test digits", (
            f"log p(x) of the drawn digit compared with all {len(ref):,} test digits under the same model and ordering: "
            f"median {np.median(ref):.1f}, 5th–95th percentile {np.percentile(ref, 5):.1f} to {np.percentile(ref, 95):.1f} nats. "
            "Measured once per checkpoint and ordering, and cached."))
        self.percentileShown.emit()
