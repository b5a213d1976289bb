"""The pinned pixel's influence map.

When a pixel is pinned, or new heatmaps arrive while one is, the influence of every earlier pixel
on its conditional is computed on its own worker (one pass per earlier pixel, in batches: up to a
second for the deep families on a CPU, so neither the heatmaps nor the GUI wait for it). A request
carries (model key, ordering, heatmaps shown, pixel) and replaces the previous one; a result for
anything else than what is shown now is dropped (``requests``, an :class:`app.latest.Latest`). It
uses the canvas the heatmaps were computed for, so the map always belongs to the heatmaps beside
it. :class:`InfluenceController` follows the state's pin and heatmaps and owns the worker.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.figures import PixelInfluence

from . import jobs
from .latest import Latest
from .state import AppState
from .widgets.influence import InfluenceView
from .worker import Worker

__all__ = ["InfluenceController"]


class InfluenceController(QObject):
    """Keeps the influence map of the pinned pixel up to date (see the module docstring)."""

    shown = Signal()  #: the pinned pixel's influence map is up to date
    pointed = Signal(int)  #: the mouse is over this pixel on the map (-1: off it): outline it elsewhere

    def __init__(self, state: AppState, view: InfluenceView, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.view = view
        self.worker = Worker("influence", self, torch_threads=1)
        self.requests = Latest(self.worker, lambda key: key == self.key(), parent=self)
        state.figuresChanged.connect(self.request)
        state.pinChanged.connect(lambda _i: self.request())
        state.closing.connect(lambda: self.worker.shutdown(600_000))
        view.hovered.connect(self.pointed)
        self.requests.progress.connect(self._on_progress)
        self.requests.result.connect(self._on_result)
        self.requests.error.connect(lambda _k, m: view.clear(f"The influence map is unavailable: {m}"))

    def key(self) -> tuple:
        """What the influence map on screen should belong to now."""
        st = self.state
        return (st.model_key, st.ordering, st.figures_serial, st.pinned)

    @property
    def up_to_date(self) -> bool:
        """The influence map on screen belongs to the pinned pixel and the heatmaps shown."""
        return self.requests.shown == self.key()

    def request(self) -> None:
        st = self.state
        figs = st.figures
        req = self.requests
        if st.pinned < 0 or st.model is None or figs is None or "image" not in figs.extra:
            req.cancel()
            req.forget()
            if st.pinned < 0:
                self.view.clear()
            return
        key = self.key()
        if not req.wanted(key):
            return
        self.view.show_progress(st.pinned, figs.prob.shape[1], 0.0)
        req.submit(key, jobs.influence_job, st.model, figs.extra["image"], st.pinned, figs.ordering, figs.given)

    def _on_progress(self, key: tuple, frac: object) -> None:
        figs = self.state.figures
        if figs is not None:
            self.view.show_progress(key[3], figs.prob.shape[1], float(frac))  # type: ignore[arg-type]

    def _on_result(self, _key: tuple, inf: object) -> None:
        assert isinstance(inf, PixelInfluence)
        figs = self.state.figures
        self.view.show_influence(inf, figs.extra.get("image") if figs is not None else None)
        self.shown.emit()
