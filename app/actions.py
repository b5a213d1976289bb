"""Menus, shortcuts and the toolbars of the main window.

:func:`build` puts them on the window and returns them as one :class:`Actions` object (the window
keeps it as ``acts``). The actions call the state's editing commands and the two controllers that
read and write files (:class:`Checkpoints` and :class:`Files`, protocols: what they offer, not the
modules that define them), and follow the state's signals to stay checked and enabled as it
changes (tool, overlay, undo history, model).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Protocol

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QMainWindow, QMenu, QMessageBox, QSizePolicy, QSpinBox, QToolBar, QWidget

from engine.catalogue import ModelEntry

from .state import AppState

__all__ = ["Actions", "Checkpoints", "Files", "build", "CKPT_FILTER", "IMAGE_FILTER"]

CKPT_FILTER = "pixelchain checkpoints (*.safetensors);;All files (*)"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.pgm *.ppm);;All files (*)"


class Checkpoints(Protocol):
    """Opening and saving checkpoints (:class:`app.checkpoints.CheckpointController`)."""

    def open_checkpoint(self, path: Path, source: str = "opened") -> None: ...
    def save_checkpoint_as(self, path: str | Path) -> None: ...


class Files(Protocol):
    """Images in and out of the canvas (:class:`app.editing.EditingController`)."""

    def import_image_file(self, path: str | Path) -> bool: ...
    def export_image_file(self, path: str | Path, scale: int = 10) -> bool: ...
    def export_conditionals(self, path: str | Path) -> bool: ...
    def load_test_digit(self, index: int | None = None) -> None: ...


def _act(parent: QObject, text: str, slot: Callable[[], object], shortcut: object = None, tip: str = "") -> QAction:
    a = QAction(text, parent)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))  # type: ignore[call-overload]
    if tip:
        a.setStatusTip(tip)
        a.setToolTip(tip + (f"  ({a.shortcut().toString()})" if shortcut is not None else ""))
    a.triggered.connect(lambda _checked=False: slot())
    return a


class Actions(QObject):
    """The window's actions, menus and toolbars (made by :func:`build`)."""

    def __init__(self, win: QMainWindow, state: AppState, checkpoints: Checkpoints, files: Files):
        super().__init__(win)
        self.win, self.state, self.checkpoints, self.files = win, state, checkpoints, files
        mb = win.menuBar()
        f = mb.addMenu("&File")
        self.act_open = _act(win, "&Open Checkpoint…", self.open_dialog, QKeySequence.StandardKey.Open, "Open a .safetensors checkpoint")
        f.addAction(self.act_open)
        self.recent_menu: QMenu = f.addMenu("Open &Recent")
        self.bundled_menu: QMenu = f.addMenu("&Bundled Models")
        self.act_save = _act(win, "&Save Checkpoint As…", self.save_dialog, "Ctrl+Shift+S", "Save the current model")
        f.addAction(self.act_save)
        f.addSeparator()
        self.act_import = _act(win, "&Import Image…", self.import_dialog, "Ctrl+I", "Any image: scaled, centred and binarised like MNIST")
        self.act_export = _act(win, "&Export Image…", self.export_dialog, "Ctrl+E", "Save the canvas as a PNG")
        self.act_export_conditionals = _act(
            win, "Export &Conditionals…", self.export_conditionals_dialog, "Ctrl+Shift+E",
            "Save every pixel's conditional as a CSV table (step, pixel, value, p, NLL), or the heatmaps as a PNG")
        f.addAction(self.act_import)
        f.addAction(self.act_export)
        f.addAction(self.act_export_conditionals)
        f.addSeparator()
        f.addAction(_act(win, "&Quit", win.close, QKeySequence.StandardKey.Quit))

        e = mb.addMenu("&Edit")
        self.act_undo = _act(win, "&Undo", state.undo, "Ctrl+Z", "Undo")
        self.act_redo = _act(win, "&Redo", state.redo, "Ctrl+Shift+Z", "Redo")
        self.act_clear = _act(win, "&Clear", state.clear_canvas, "Ctrl+Backspace", "Clear the canvas")
        self.act_invert = _act(win, "&Invert", state.invert_canvas, "Ctrl+Shift+I", "Swap ink and paper")
        self.act_random = _act(win, "Random &Test Digit", lambda: files.load_test_digit(None), "Ctrl+R",
                               "Load a random digit from the test split")
        for a in (self.act_undo, self.act_redo, None, self.act_clear, self.act_invert, self.act_random):
            e.addSeparator() if a is None else e.addAction(a)
        e.addSeparator()
        e.addAction(_act(win, "Clear &Mask", state.clear_mask, None, "Remove the inpainting mask"))

        v = mb.addMenu("&View")
        self.overlay_group = QActionGroup(win)
        self.overlay_actions: dict[str, QAction] = {}
        overlays = (("off", "No Ordering Overlay", "Ctrl+0"), ("steps", "Ordering as Step Gradient", "Ctrl+1"),
                    ("path", "Ordering as Path", "Ctrl+2"))
        for key, text, sc in overlays:
            a = _act(win, text, partial(state.set_overlay, key), sc)
            a.setCheckable(True)
            self.overlay_group.addAction(a)
            self.overlay_actions[key] = a
            v.addAction(a)
        self.overlay_actions["off"].setChecked(True)

        t = mb.addMenu("&Tools")
        self.tool_group = QActionGroup(win)
        self.tool_actions: dict[str, QAction] = {}
        for key, text, sc, tip in (("draw", "&Draw", "D", "Left button draws, right erases"),
                                   ("mask", "&Mask", "M", "Paint the region to inpaint (right button removes)"),
                                   ("inspect", "I&nspect", "N", "Click a pixel to pin it and see what it is conditioned on")):
            a = _act(win, text, partial(state.set_tool, key), sc, tip)
            a.setCheckable(True)
            self.tool_group.addAction(a)
            self.tool_actions[key] = a
            t.addAction(a)
        self.tool_actions["draw"].setChecked(True)

        h = mb.addMenu("&Help")
        h.addAction(_act(win, "&About pixelchain", self.about))

        state.toolChanged.connect(lambda tool: self.tool_actions[tool].setChecked(True))
        state.overlayChanged.connect(self._show_overlay)
        state.canvasReplaced.connect(self.update_edit_actions)
        state.strokeFinished.connect(self.update_edit_actions)
        state.modelChanged.connect(lambda: self.act_save.setEnabled(state.model is not None))

    def add_toolbars(self, model_picker: QWidget, ordering_picker: QWidget) -> None:
        """The main toolbar (pickers, overlay) on the window, and the canvas toolbar (``canvas_toolbar``),
        for the window to place beside the canvas."""
        win, state = self.win, self.state
        tb = QToolBar("Main")
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        win.addToolBar(tb)
        lab = QLabel("Model")
        lab.setObjectName("tblabel")
        tb.addWidget(lab)
        tb.addWidget(model_picker)
        tb.addAction(self.act_open)
        tb.addSeparator()
        tb.addWidget(ordering_picker)
        self.overlay_combo = QComboBox()
        for key, text in (("off", "overlay off"), ("steps", "step gradient"), ("path", "path")):
            self.overlay_combo.addItem(text, key)
        self.overlay_combo.setToolTip("Show the ordering over the canvas (View menu: Ctrl+0/1/2)")
        self.overlay_combo.activated.connect(lambda i: state.set_overlay(self.overlay_combo.itemData(i)))
        tb.addWidget(self.overlay_combo)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        spacer.setStyleSheet("background: transparent")  # not a dark box at the toolbar's end
        tb.addWidget(spacer)

        ct = QToolBar("Canvas")
        ct.setObjectName("canvas-toolbar")
        ct.setMovable(False)
        ct.setOrientation(Qt.Orientation.Vertical)
        for key in ("draw", "mask", "inspect"):
            ct.addAction(self.tool_actions[key])
        self.brush = QSpinBox()
        self.brush.setRange(1, 5)
        self.brush.setValue(state.brush)
        self.brush.setPrefix("brush ")
        self.brush.setFixedWidth(86)
        self.brush.setToolTip("Brush size in pixels")
        self.brush.valueChanged.connect(state.set_brush)
        ct.addWidget(self.brush)
        ct.addSeparator()
        for a in (self.act_undo, self.act_redo, self.act_clear, self.act_invert):
            ct.addAction(a)
        ct.addSeparator()
        self.act_random.setIconText("Test digit")
        self.act_import.setIconText("Import…")
        self.act_export.setIconText("Export…")
        for a in (self.act_random, self.act_import, self.act_export):
            ct.addAction(a)
        self.canvas_toolbar = ct

    # -- following the state -----------------------------------------------------------------------
    def _show_overlay(self, key: str) -> None:
        self.overlay_actions[key].setChecked(True)
        if hasattr(self, "overlay_combo"):
            self.overlay_combo.setCurrentIndex(self.overlay_combo.findData(key))

    def update_edit_actions(self) -> None:
        self.act_undo.setEnabled(self.state.session.can_undo)
        self.act_redo.setEnabled(self.state.session.can_redo)

    def show_models(self, recent: list[Path], entries: list[ModelEntry]) -> None:
        """List the recent checkpoints and the bundled models among ``entries`` in the File menu."""
        open_ = self.checkpoints.open_checkpoint
        self.recent_menu.clear()
        for p in recent:
            a = self.recent_menu.addAction(p.name)
            a.setToolTip(str(p))
            a.setStatusTip(str(p))
            a.triggered.connect(lambda _c=False, p=p: open_(p, "recent"))
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        self.bundled_menu.clear()
        bundled = [e for e in entries if e.source == "bundled"]
        for e in bundled:
            a = self.bundled_menu.addAction(e.label)
            a.triggered.connect(lambda _c=False, e=e: open_(e.path, "bundled"))
        if not bundled:
            self.bundled_menu.addAction("(none bundled)").setEnabled(False)

    # -- dialogs -----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.win, "Open checkpoint", str(Path.home()), CKPT_FILTER)
        if path:
            self.checkpoints.open_checkpoint(Path(path), "opened")

    def save_dialog(self) -> None:
        if self.state.model is None:
            return
        path, _ = QFileDialog.getSaveFileName(self.win, "Save checkpoint as", str(Path.home() / "model.safetensors"), CKPT_FILTER)
        if path:
            if not path.endswith(".safetensors"):
                path += ".safetensors"
            self.checkpoints.save_checkpoint_as(path)

    def import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.win, "Import image", str(Path.home()), IMAGE_FILTER)
        if path:
            self.files.import_image_file(path)

    def export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.win, "Export canvas as PNG", str(Path.home() / "digit.png"), "PNG images (*.png)")
        if path:
            self.files.export_image_file(path)

    def export_conditionals_dialog(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self.win, "Export the conditionals", str(Path.home() / "conditionals.csv"),
            "CSV table, one row per pixel (*.csv);;PNG image of the heatmaps (*.png)")
        if path:
            if Path(path).suffix.lower() not in (".csv", ".png"):
                path += ".png" if "PNG" in chosen else ".csv"
            self.files.export_conditionals(path)

    def about(self) -> None:
        QMessageBox.about(
            self.win, "About pixelchain",
            "<b>pixelchain</b><br>Explore autoregressive models of binarized MNIST: "
            "log p(x) = Σ<sub>t</sub> log p(x<sub>o<sub>t</sub></sub> | x<sub>o<sub>&lt;t</sub></sub>).<br><br>"
            "Draw on the canvas to see every pixel's conditional; pick an ordering; sample, inpaint and train models.",
        )


def build(win: QMainWindow, state: AppState, checkpoints: Checkpoints, files: Files, model_picker: QWidget,
          ordering_picker: QWidget) -> Actions:
    """The menus of ``win`` and its toolbars, as one :class:`Actions`."""
    acts = Actions(win, state, checkpoints, files)
    acts.add_toolbars(model_picker, ordering_picker)
    return acts
