"""Fixtures of the app tests: small checkpoints in a private "bundled" folder and a shown window."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.worker import Worker
from engine.checkpoint import save_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering


def _save(folder: Path, name: str, family: str, config: dict, ordering: str = "raster", test_nll: float = 100.0) -> Path:
    torch.manual_seed(len(name))
    model = build_model(family, config, make_ordering(ordering))
    # larger random weights than the init, so the conditionals clearly depend on the drawing
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return save_checkpoint(folder / f"{name}.safetensors", model, {"name": name, "metrics": {"test_nll": test_nll}})


@pytest.fixture(autouse=True)
def _own_settings(tmp_path, monkeypatch):
    """Settings (recent files) and trained models private to each app test."""
    monkeypatch.setenv("PIXELCHAIN_SETTINGS", str(tmp_path / "settings" / "pixelchain.ini"))


@pytest.fixture(autouse=True)
def _questions_answered_yes(monkeypatch):
    """A modal question (quitting during training) would wait forever offscreen: answered Yes
    unless a test patches it itself (and records that it was asked)."""
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


@pytest.fixture(scope="session")
def bundled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundled")
    _save(folder, "made-raster", "made", {"hidden": (48,)}, test_nll=90.0)
    _save(folder, "made-any", "made", {"hidden": (48,), "order_agnostic": True, "num_masks": 0}, test_nll=95.0)
    _save(folder, "fvsbn-snake", "fvsbn", {}, ordering="snake", test_nll=99.0)
    return folder


@pytest.fixture
def make_window(qtbot):
    from app.main_window import MainWindow

    def make(folder: Path, start: bool = True) -> MainWindow:
        win = MainWindow(bundled=folder)
        qtbot.addWidget(win)
        win.resize(1400, 900)
        win.show()
        if start:
            with qtbot.waitSignal(win.figuresShown, timeout=20000):
                win.checkpoints.start_default()
        return win

    return make


@pytest.fixture
def win(make_window, bundled):
    return make_window(bundled)


def pytest_collection_modifyitems(config, items):
    # The offscreen platform plugin warns that it cannot resize native windows to fit; harmless
    # there and absent on real screens, so it alone is ignored (every other Qt warning fails).
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints"))


@pytest.fixture
def worker(qtbot):
    """A worker thread of its own, stopped (and checked to stop) after the test."""
    w = Worker("test")
    yield w
    assert w.shutdown(10000)
