"""Window sizes that fit the screen they open on."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication

__all__ = ["fitted_size"]


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """``width`` x ``height``, or the primary screen's free area (less its window frame) where
    that is smaller: a 1280 x 720 laptop gets a window it can show whole. Qt still keeps a
    window at its minimum size."""
    screen = QGuiApplication.primaryScreen()
    if screen is None:
        return width, height
    free = screen.availableGeometry()
    return min(width, free.width()), min(height, free.height())
