"""Editing the canvas from the main window: tools, undo/redo, clear, invert, the inpainting
mask, test digits, image import and export. A mixin of the main window; the document itself lives
in :class:`engine.session.Session` (``state.session``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.figures import conditionals_csv
from engine.images import import_image, save_png

from . import actions, jobs
from .files import save_pixmap, save_text

__all__ = ["EditingMixin"]


class EditingMixin:
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

    def export_conditionals(self, path: str | Path) -> bool:
        """Save what the heatmaps show: a CSV table of every pixel's conditional (``.csv``), or
        the heatmap panel as an image (``.png``). The table belongs to the canvas the heatmaps
        were computed for, so it always agrees with what is on screen."""
        figs = self.figures
        if figs is None or "image" not in figs.extra:
            self.show_error("There are no conditionals to export yet: draw a digit or open a model first.")
            return False
        path = Path(path)
        try:
            if path.suffix.lower() == ".png":
                save_pixmap(self.heatmaps.grab(), path)
            else:
                name, family = self.model_meta.get("name", ""), self.model.family
                label = f"{name} ({family})" if name else family
                save_text(conditionals_csv(figs, figs.extra["image"].reshape(figs.prob.shape), label), path)
        except (OSError, ValueError) as exc:
            self.show_error(f"Cannot save {path}: {exc}")
            return False
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def export_image_file(self, path: str | Path, scale: int = 10) -> bool:
        try:
            save_png(self.session.canvas, path, scale=scale)
        except (OSError, ValueError) as exc:
            self.show_error(f"Cannot save {path}: {exc}")
            return False
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True
