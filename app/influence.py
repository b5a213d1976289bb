"""The pinned pixel's influence map (a mixin of :class:`app.main_window.MainWindow`).

When a pixel is pinned, or new heatmaps arrive while one is, the influence of every earlier pixel
on its conditional is computed on its own worker (one pass per earlier pixel, in batches: up to a
second for the deep families on a CPU, so neither the heatmaps nor the GUI wait for it). A request
carries (model key, ordering, heatmaps shown, pixel) and replaces the previous one; a result for
anything else than what is shown now is dropped. It uses the canvas the heatmaps were computed
for, so the map always belongs to the heatmaps beside it."""

from __future__ import annotations

from engine.session import PixelInfluence

from . import jobs

__all__ = ["InfluenceMixin"]


class InfluenceMixin:
    def _influence_key(self) -> tuple:
        return (self.model_key, self.ordering, self._shown_id, self.pinned)

    def request_influence(self) -> None:
        figs = self.figures
        if self.pinned < 0 or self.model is None or figs is None or "image" not in figs.extra:
            self.influence_worker.cancel_all()
            self._influence_pending = self._influence_shown = None
            if self.pinned < 0:
                self.influence_view.clear()
            return
        key = self._influence_key()
        if key in (self._influence_pending, self._influence_shown):
            return
        self._influence_pending = key
        self.influence_view.show_progress(self.pinned, figs.prob.shape[1], 0.0)
        self.influence_worker.submit(jobs.influence_job, self.model, figs.extra["image"], self.pinned, figs.ordering, key)

    def _on_influence_progress(self, _job_id: int, frac: object) -> None:
        if self._influence_pending is not None and self.figures is not None:
            self.influence_view.show_progress(self._influence_pending[3], self.figures.prob.shape[1], float(frac))

    def _on_influence_result(self, _job_id: int, value: object) -> None:
        key, inf = value
        if key == self._influence_pending:
            self._influence_pending = None
        if key != self._influence_key():
            return  # another model, ordering, canvas or pixel by now
        assert isinstance(inf, PixelInfluence)
        self._influence_shown = key
        self.influence_view.show_influence(inf, self.figures.extra.get("image") if self.figures is not None else None)
        self.influenceShown.emit()

    def _on_influence_hover(self, idx: int) -> None:
        """Point at the pixel under the mouse on the influence map on the canvas and the heatmaps."""
        self.canvas.set_hover(idx)
        self.heatmaps.set_marker(idx, "hover")

    def _on_influence_error(self, _job_id: int, message: str) -> None:
        self._influence_pending = None
        self.influence_view.clear(f"The influence map is unavailable: {message}")
