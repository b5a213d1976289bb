"""The canvas and files: test digits, image import and export, and the conditionals' export.

The editing commands themselves (strokes, undo/redo, clear, invert, the inpainting mask) are
methods of :class:`app.state.AppState`, which owns the document (:class:`engine.document.Session`)
and announces every change. :class:`EditingController` adds what needs a worker or a file: a
test digit is read on the ``compute`` worker (its result is dropped if a run took the canvas in
the meantime), images are imported and exported, and the heatmaps' conditionals saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
from PySide6.QtCore import QObject

from engine.figures import conditionals_csv
from engine.images import import_image, save_png

from . import jobs
from .files import save_pixmap, save_text
from .state import AppState
from .widgets.heatmaps import HeatmapPanel
from .worker import Worker

__all__ = ["EditingController"]


class EditingController(QObject):
    """Test digits, image files and the conditionals' export (see the module docstring)."""

    def __init__(self, state: AppState, compute: Worker, heatmaps: HeatmapPanel, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.compute = compute
        self.heatmaps = heatmaps
        self._digits: set[int] = set()  #: ids of the test digit jobs in flight
        compute.result.connect(self._on_result)
        compute.error.connect(self._on_error)
        compute.finished.connect(lambda job_id, _c: self._digits.discard(job_id))

    def load_test_digit(self, index: int | None = None) -> None:
        if self.state.locked:
            return
        st = self.state  # (a grey model's digits come from the grey data set, at its levels)
        self._digits.add(self.compute.submit(jobs.test_digit_job, index, None, st.dataset, st.levels, replace=False).id)

    def _on_result(self, job_id: int, value: object) -> None:
        if job_id not in self._digits:
            return
        index, img = cast(tuple[int, np.ndarray], value)
        if self.state.locked:  # a run started while the digit was loading: the run owns the canvas
            self.state.show_status(f"Test digit #{index} not drawn: a sampling run started first", 6000)
            return
        self.state.replace_canvas(img)
        self.state.show_status(f"Test digit #{index}", 4000)

    def _on_error(self, job_id: int, message: str) -> None:
        if job_id in self._digits:
            self.state.show_error(message)

    def import_image_file(self, path: str | Path) -> bool:
        st = self.state
        if st.locked:
            st.show_status("Stop the sampling run first", 4000)
            return False
        try:
            img = import_image(path, grey=st.levels > 2)
        except Exception as exc:  # noqa: BLE001 -- ImageError and anything pillow raises
            st.show_error(str(exc))
            return False
        if st.levels > 2:
            st.replace_intensity(img)  # keeps its grey levels, quantised at the model's
        else:
            st.replace_canvas(img)
        st.show_status(f"Imported {Path(path).name}", 4000)
        return True

    def export_conditionals(self, path: str | Path) -> bool:
        """Save what the heatmaps show: a CSV table of every pixel's conditional (``.csv``), or
        the heatmap panel as an image (``.png``). The table belongs to the canvas the heatmaps
        were computed for, so it always agrees with what is on screen."""
        st = self.state
        figs = st.figures
        if figs is None or "image" not in figs.extra or st.model is None:
            st.show_error("There are no conditionals to export yet: draw a digit or open a model first.")
            return False
        path = Path(path)
        try:
            if path.suffix.lower() == ".png":
                save_pixmap(self.heatmaps.grab(), path)
            else:
                name, family = st.meta.get("name", ""), st.model.family
                label = f"{name} ({family})" if name else family
                save_text(conditionals_csv(figs, figs.extra["image"].reshape(figs.prob.shape), label), path)
        except (OSError, ValueError) as exc:
            st.show_error(f"Cannot save {path}: {exc}")
            return False
        st.show_status(f"Saved {path}", 4000)
        return True

    def export_image_file(self, path: str | Path, scale: int = 10) -> bool:
        try:
            save_png(self.state.session.canvas, path, scale=scale, levels=self.state.levels)
        except (OSError, ValueError) as exc:
            self.state.show_error(f"Cannot save {path}: {exc}")
            return False
        self.state.show_status(f"Saved {path}", 4000)
        return True
