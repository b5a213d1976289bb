"""Start the desktop app: ``pixelchain [--model NAME] [--ordering NAME] [--data DIR] [--screenshot PATH]``.

``--model`` takes a bundled model's name (see File ▸ Bundled Models) or a checkpoint path.
``--screenshot PATH`` runs offscreen: it opens the model, draws a test digit, waits for the
heatmaps and the percentile, pins a pixel so the inspector has something to show, saves a PNG of
the whole window (``--window-size WxH``, 1600x1000 by default) and exits 0 (1 with a message if
anything failed). ``--data DIR`` is where the binarized MNIST files are (as ``PIXELCHAIN_DATA``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, cast

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

__all__ = ["main", "build_parser", "make_app", "use_data_dir", "window_size"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelchain", description="Desktop explorer of autoregressive models of binarized MNIST.")
    p.add_argument("--model", default=None, help="bundled model name or path to a .safetensors checkpoint")
    p.add_argument("--ordering", default=None, help="ordering to show, e.g. raster, snake, random:3 (if the model allows it)")
    p.add_argument("--screenshot", default=None, metavar="PATH", help="render offscreen, save a PNG of the window, exit")
    p.add_argument("--digit", type=int, default=3010, help="test digit drawn for --screenshot (index in the test split)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder holding binarized_mnist_{train,valid,test}.amat (as PIXELCHAIN_DATA; else the per-user cache)")
    p.add_argument("--window-size", "--size", dest="size", default="1600x1000", metavar="WxH",
                   help="window size for --screenshot, e.g. 1024x700 (--size is the old name)")
    p.add_argument("--tab", default="inspect", choices=["inspect", "sample", "train"], help="side panel shown in --screenshot")
    p.add_argument("--overlay", default="off", choices=["off", "steps", "path"], help="ordering overlay on the canvas in --screenshot")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the model (and, with --screenshot, its figures) before --ordering or --screenshot give up")
    return p


def make_app(argv: Sequence[str] = ()) -> QApplication:
    import pyqtgraph as pg
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    # Hand the GIL to the GUI thread sooner when a worker runs Python code (default: every 5 ms).
    sys.setswitchinterval(0.001)
    app = cast(QApplication, QApplication.instance() or QApplication(["pixelchain", *argv]))
    app.setApplicationName("pixelchain")
    app.setOrganizationName("pixelchain")
    res = Path(__file__).resolve().parents[1] / "resources"
    style = res / "style.qss"
    if style.is_file():
        app.setStyleSheet(style.read_text(encoding="utf-8"))
    icon = res / "pixelchain.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    pg.setConfigOptions(antialias=True, foreground="#c9d1dc")
    return app


def default_size(app: QApplication) -> tuple[int, int]:
    """The first window's size: 1500 x 940, or the screen's free area where that is smaller (a
    1280 x 720 laptop), never below the window's minimum (Qt keeps that anyway)."""
    from .screen import fitted_size

    return fitted_size(1500, 940)


def window_size(text: str) -> tuple[int, int]:
    """``"1024x700"`` -> (1024, 700); ValueError with a one-line reason otherwise."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit() or not (100 <= int(w) <= 10_000 and 100 <= int(h) <= 10_000):
        raise ValueError(f"--window-size wants WIDTHxHEIGHT in pixels, each 100 to 10000, e.g. 1024x700 (got {text!r})")
    return int(w), int(h)


def use_data_dir(folder: str) -> None:
    """``--data DIR``: the test digits, the percentile and training read the binarized MNIST files
    from ``folder`` (the app's jobs find it as PIXELCHAIN_DATA, as the command line does);
    ValueError when it is not a folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"--data {folder}: not a folder; give the folder that holds binarized_mnist_*.amat")
    os.environ["PIXELCHAIN_DATA"] = str(path.resolve())


def _run_window(a: argparse.Namespace) -> int:
    from engine.catalogue import resolve_model_name
    from engine.ordering import parse_ordering

    from .main_window import MainWindow
    from .screenshot import Waiter, take_screenshot

    app = make_app()
    win = MainWindow()
    if a.screenshot:
        win.resize(*window_size(a.size))
    else:
        geo = win.settings.value("window/geometry")
        if geo is not None:
            win.restoreGeometry(geo)
        else:
            win.resize(*default_size(app))
    waiter = Waiter(win.state)  # records every error the window reports from now on
    if a.model:
        try:
            path = resolve_model_name(a.model, win.model_picker.entries)
        except FileNotFoundError as exc:
            print(f"pixelchain: error: {exc}", file=sys.stderr)
            return 2
        win.checkpoints.open_checkpoint(path, "bundled" if path.parent == win.bundled_dir else "opened")
    else:
        win.checkpoints.start_default()
    win.show()

    if a.ordering:
        if not waiter.wait_for(lambda: win.model is not None, a.timeout):
            print(f"pixelchain: error: no model could be opened: {'; '.join(waiter.errors)}", file=sys.stderr)
            return 1
        try:
            o = parse_ordering(a.ordering)
        except ValueError as exc:
            print(f"pixelchain: error: {exc}", file=sys.stderr)
            return 2
        assert win.model is not None
        ok, why = win.model.supports(o)
        if not ok:
            print(f"pixelchain: error: ordering {a.ordering!r}: {why}", file=sys.stderr)
            return 2
        win.ordering_picker.select(o)
        win.checkpoints.set_ordering(o)
    if not a.screenshot:
        return app.exec()
    return take_screenshot(app, win, waiter, a)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        window_size(a.size)
        if a.data is not None:
            use_data_dir(a.data)
    except ValueError as exc:
        parser.exit(2, f"pixelchain: error: {exc}\n")
    if a.screenshot and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    rc = _run_window(a)
    # Leave without running Qt/pyqtgraph destructors in an arbitrary order at interpreter exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
