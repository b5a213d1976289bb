"""The pinned pixel's influence map (a mixin of the main window).

When a pixel is pinned, or new heatmaps arrive while one is, the influence of every earlier pixel
on its conditional is computed on its own worker (one pass per earlier pixel, in batches: up to a
second for the deep families on a CPU, so neither the heatmaps nor the GUI wait for it). A request
carries (model key, ordering, heatmaps shown, pixel) and replaces the previous one; a result for
anything else than what is shown now is dropped (``influence_requests``, an
:class:`app.latest.Latest`). It uses the canvas the heatmaps were computed for, so the map always
belongs to the heatmaps beside it."""

from __future__ import annotations

from engine.figures import PixelInfluence

from . import jobs

__all__ = ["InfluenceMixin"]


class InfluenceMixin:
    def influence_key(self) -> tuple:
        """What the influence map on screen should belong to now."""
        return (self.model_key, self.ordering, self.state.figures_serial, self.pinned)

    @property
    def influence_shown(self) -> bool:
        """The influence map on screen belongs to the pinned pixel and the heatmaps shown."""
        return self.influence_requests.shown == self.influence_key()

    def request_influence(self) -> None:
        figs = self.figures
        req = self.influence_requests
        if self.pinned < 0 or self.model is None or figs is None or "image" not in figs.extra:
            req.cancel()
            req.forget()
            if self.pinned < 0:
                self.influence_view.clear()
            return
        key = self.influence_key()
        if not req.wanted(key):
            return
        self.influence_view.show_progress(self.pinned, figs.prob.shape[1], 0.0)
        req.submit(key, jobs.influence_job, self.model, figs.extra["image"], self.pinned, figs.ordering)

    def _on_influence_progress(self, key: tuple, frac: object) -> None:
        if self.figures is not None:
            self.influence_view.show_progress(key[3], self.figures.prob.shape[1], float(frac))

    def _on_influence_result(self, _key: tuple, inf: object) -> None:
        assert isinstance(inf, PixelInfluence)
        self.influence_view.show_influence(inf, self.figures.extra.get("image") if self.figures is not None else None)
        self.influenceShown.emit()

    def _on_influence_hover(self, idx: int) -> None:
        """Point at the pixel under the mouse on the influence map on the canvas and the heatmaps."""
        self.canvas.set_hover(idx)
        self.heatmaps.set_marker(idx, "hover")

    def _on_influence_error(self, _key: tuple, message: str) -> None:
        self.influence_view.clear(f"The influence map is unavailable: {message}")
