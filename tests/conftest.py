"""Shared test set-up: Qt offscreen, the shared data folder, a private cache, small thread counts."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data" / "binarized_mnist").resolve()
if "PIXELCHAIN_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["PIXELCHAIN_DATA"] = str(SHARED_DATA)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own download/parse cache and Qt settings; the user's are never touched."""
    cache = tmp_path_factory.getbasetemp() / "pixelchain-cache"
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(cache))
    monkeypatch.setenv("PIXELCHAIN_SETTINGS", str(tmp_path_factory.getbasetemp() / "settings.ini"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of both data sets (``binarized_mnist/`` and ``mnist/``), as ``--data`` takes it."""
    if not SHARED_DATA.is_dir() or not (SHARED_DATA.parent / "mnist").is_dir():
        pytest.skip(f"the shared data folders {SHARED_DATA} and {SHARED_DATA.parent / 'mnist'} are missing")
    return SHARED_DATA.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is missing")
    return SHARED_DATA
