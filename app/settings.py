"""Persistent settings (QSettings) and the app's folders.

``PIXELCHAIN_SETTINGS`` -- a path to an ``.ini`` file -- replaces the user's settings (the tests set
it for every test, so they never touch the real ones); models trained in the app then go to a
``pixelchain-models`` folder beside that file instead of the user's data folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

__all__ = ["make_settings", "models_dir", "bundled_dir", "recent_files", "add_recent", "MAX_RECENT", "last_folder",
           "remember_folder"]

MAX_RECENT = 8


def make_settings() -> QSettings:
    path = os.environ.get("PIXELCHAIN_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "pixelchain", "pixelchain")


def models_dir() -> Path:
    path = os.environ.get("PIXELCHAIN_SETTINGS")
    if path:
        return Path(path).resolve().parent / "pixelchain-models"
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation) or str(Path.home() / ".pixelchain")
    return Path(base) / "models"


def bundled_dir() -> Path:
    import resources

    return Path(resources.__file__).resolve().parent / "checkpoints"


def recent_files(settings: QSettings) -> list[Path]:
    raw = settings.value("recent/checkpoints", [])
    if isinstance(raw, str):
        raw = [raw] if raw else []
    if not isinstance(raw, (list, tuple)):
        return []
    return [Path(p) for p in raw if isinstance(p, str) and p]


def add_recent(settings: QSettings, path: Path) -> list[Path]:
    path = Path(path).resolve()
    items = [p for p in recent_files(settings) if p.resolve() != path]
    items.insert(0, path)
    items = items[:MAX_RECENT]
    settings.setValue("recent/checkpoints", [str(p) for p in items])
    settings.sync()
    return items


def last_folder(settings: QSettings) -> Path:
    """The folder of the last file chosen in a file dialog (the home folder before any, or when
    that folder is gone): every dialog starts there."""
    raw = settings.value("dialogs/folder", "")
    if isinstance(raw, str) and raw:
        folder = Path(raw)
        if folder.is_dir():
            return folder
    return Path.home()


def remember_folder(settings: QSettings, chosen: str | Path) -> None:
    """A file was chosen in a dialog: the next dialog starts in its folder."""
    settings.setValue("dialogs/folder", str(Path(chosen).parent))
    settings.sync()
