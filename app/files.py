"""Files the app writes: through the engine's atomic writer, so a failed or interrupted save leaves
the old file (if any) as it was and no half-written one."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QBuffer, QIODevice
from PySide6.QtGui import QPixmap

from engine.atomic import atomic_write

__all__ = ["save_pixmap", "save_text"]


def save_pixmap(pixmap: QPixmap, path: str | Path) -> Path:
    """Encode ``pixmap`` as PNG in memory, then write it atomically; OSError when it cannot."""
    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if not pixmap.save(buf, "PNG"):
        raise OSError("the image could not be encoded as PNG")
    return atomic_write(path, bytes(buf.data().data()))


def save_text(text: str, path: str | Path) -> Path:
    """Write ``text`` as UTF-8 atomically."""
    return atomic_write(path, text)
