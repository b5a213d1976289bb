"""Menus, shortcuts and the toolbar of the main window (kept apart to keep the window readable).

The functions here are handed the window as a :class:`Host`: they know what it offers, not the
module that defines it, so the window imports this module and never the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QMessageBox, QSizePolicy, QSpinBox, QToolBar, QWidget

from . import settings as app_settings

__all__ = ["Host", "build", "refresh_model_menus", "update_edit_actions", "update_model_actions", "sync_tool"]


class Host(Protocol):
    """What the menus and toolbars need of the window they are built on. Besides these, the window
    is a QMainWindow with the widgets ``model_picker``, ``ordering_picker``, ``canvas`` and
    ``legend``; :func:`build` adds the actions (``act_open``, ``act_save``, ...) to it."""

    model: Any
    ordering: Any
    session: Any
    settings: Any

    def open_checkpoint(self, path: Path, source: str = "opened") -> None: ...
    def save_checkpoint_as(self, path: str | Path) -> None: ...
    def import_image_file(self, path: str | Path) -> bool: ...
    def export_image_file(self, path: str | Path, scale: int = 10) -> bool: ...
    def export_conditionals(self, path: str | Path) -> bool: ...
    def undo(self) -> None: ...
    def redo(self) -> None: ...
    def clear_canvas(self) -> None: ...
    def invert_canvas(self) -> None: ...
    def clear_mask(self) -> None: ...
    def load_test_digit(self, index: int | None = None) -> None: ...
    def set_tool(self, tool: str) -> None: ...

CKPT_FILTER = "pixelchain checkpoints (*.safetensors);;All files (*)"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.pgm *.ppm);;All files (*)"


def _act(win: "Host", text: str, slot, shortcut=None, tip: str = "") -> QAction:
    a = QAction(text, win)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    if tip:
        a.setStatusTip(tip)
        a.setToolTip(tip + (f"  ({a.shortcut().toString()})" if shortcut is not None else ""))
    a.triggered.connect(lambda _checked=False: slot())
    return a


def open_dialog(win: "Host") -> None:
    path, _ = QFileDialog.getOpenFileName(win, "Open checkpoint", str(Path.home()), CKPT_FILTER)
    if path:
        win.open_checkpoint(Path(path), "opened")


def save_dialog(win: "Host") -> None:
    if win.model is None:
        return
    path, _ = QFileDialog.getSaveFileName(win, "Save checkpoint as", str(Path.home() / "model.safetensors"), CKPT_FILTER)
    if path:
        if not path.endswith(".safetensors"):
            path += ".safetensors"
        win.save_checkpoint_as(path)


def import_dialog(win: "Host") -> None:
    path, _ = QFileDialog.getOpenFileName(win, "Import image", str(Path.home()), IMAGE_FILTER)
    if path:
        win.import_image_file(path)


def export_dialog(win: "Host") -> None:
    path, _ = QFileDialog.getSaveFileName(win, "Export canvas as PNG", str(Path.home() / "digit.png"), "PNG images (*.png)")
    if path:
        win.export_image_file(path)


def export_conditionals_dialog(win: "Host") -> None:
    path, chosen = QFileDialog.getSaveFileName(
        win, "Export the conditionals", str(Path.home() / "conditionals.csv"),
        "CSV table, one row per pixel (*.csv);;PNG image of the heatmaps (*.png)")
    if path:
        if Path(path).suffix.lower() not in (".csv", ".png"):
            path += ".png" if "PNG" in chosen else ".csv"
        win.export_conditionals(path)


def about(win: "Host") -> None:
    QMessageBox.about(
        win, "About pixelchain",
        "<b>pixelchain</b><br>Explore autoregressive models of binarized MNIST: "
        "log p(x) = Σ<sub>t</sub> log p(x<sub>o<sub>t</sub></sub> | x<sub>o<sub>&lt;t</sub></sub>).<br><br>"
        "Draw on the canvas to see every pixel's conditional; pick an ordering; sample, inpaint and train models.",
    )


def build(win: "Host") -> None:
    mb = win.menuBar()
    f = mb.addMenu("&File")
    win.act_open = _act(win, "&Open Checkpoint…", lambda: open_dialog(win), QKeySequence.Open, "Open a .safetensors checkpoint")
    f.addAction(win.act_open)
    win.recent_menu = f.addMenu("Open &Recent")
    win.bundled_menu = f.addMenu("&Bundled Models")
    win.act_save = _act(win, "&Save Checkpoint As…", lambda: save_dialog(win), "Ctrl+Shift+S", "Save the current model")
    f.addAction(win.act_save)
    f.addSeparator()
    win.act_import = _act(win, "&Import Image…", lambda: import_dialog(win), "Ctrl+I",
                          "Any image: scaled, centred and binarised like MNIST")
    win.act_export = _act(win, "&Export Image…", lambda: export_dialog(win), "Ctrl+E", "Save the canvas as a PNG")
    win.act_export_conditionals = _act(
        win, "Export &Conditionals…", lambda: export_conditionals_dialog(win), "Ctrl+Shift+E",
        "Save every pixel's conditional as a CSV table (step, pixel, value, p, NLL), or the heatmaps as a PNG")
    f.addAction(win.act_import)
    f.addAction(win.act_export)
    f.addAction(win.act_export_conditionals)
    f.addSeparator()
    f.addAction(_act(win, "&Quit", win.close, QKeySequence.Quit))

    e = mb.addMenu("&Edit")
    win.act_undo = _act(win, "&Undo", win.undo, "Ctrl+Z", "Undo")
    win.act_redo = _act(win, "&Redo", win.redo, "Ctrl+Shift+Z", "Redo")
    win.act_clear = _act(win, "&Clear", win.clear_canvas, "Ctrl+Backspace", "Clear the canvas")
    win.act_invert = _act(win, "&Invert", win.invert_canvas, "Ctrl+Shift+I", "Swap ink and paper")
    win.act_random = _act(win, "Random &Test Digit", lambda: win.load_test_digit(None), "Ctrl+R", "Load a random digit from the test split")
    for a in (win.act_undo, win.act_redo, None, win.act_clear, win.act_invert, win.act_random):
        e.addSeparator() if a is None else e.addAction(a)
    e.addSeparator()
    e.addAction(_act(win, "Clear &Mask", win.clear_mask, None, "Remove the inpainting mask"))

    v = mb.addMenu("&View")
    win.overlay_group = QActionGroup(win)
    win.overlay_actions = {}
    overlays = (("off", "No Ordering Overlay", "Ctrl+0"), ("steps", "Ordering as Step Gradient", "Ctrl+1"),
                ("path", "Ordering as Path", "Ctrl+2"))
    for key, text, sc in overlays:
        a = _act(win, text, lambda k=key: set_overlay(win, k), sc)
        a.setCheckable(True)
        win.overlay_group.addAction(a)
        win.overlay_actions[key] = a
        v.addAction(a)
    win.overlay_actions["off"].setChecked(True)

    t = mb.addMenu("&Tools")
    win.tool_group = QActionGroup(win)
    win.tool_actions = {}
    for key, text, sc, tip in (("draw", "&Draw", "D", "Left button draws, right erases"),
                               ("mask", "&Mask", "M", "Paint the region to inpaint (right button removes)"),
                               ("inspect", "I&nspect", "N", "Click a pixel to pin it and see what it is conditioned on")):
        a = _act(win, text, lambda k=key: win.set_tool(k), sc, tip)
        a.setCheckable(True)
        win.tool_group.addAction(a)
        win.tool_actions[key] = a
        t.addAction(a)
    win.tool_actions["draw"].setChecked(True)

    h = mb.addMenu("&Help")
    h.addAction(_act(win, "&About pixelchain", lambda: about(win)))

    tb = QToolBar("Main")
    tb.setObjectName("main-toolbar")
    tb.setMovable(False)
    win.addToolBar(tb)
    lab = QLabel("Model")
    lab.setObjectName("tblabel")
    tb.addWidget(lab)
    tb.addWidget(win.model_picker)
    tb.addAction(win.act_open)
    tb.addSeparator()
    tb.addWidget(win.ordering_picker)
    win.overlay_combo = QComboBox()
    for key, text in (("off", "overlay off"), ("steps", "step gradient"), ("path", "path")):
        win.overlay_combo.addItem(text, key)
    win.overlay_combo.setToolTip("Show the ordering over the canvas (View menu: Ctrl+0/1/2)")
    win.overlay_combo.activated.connect(lambda i: set_overlay(win, win.overlay_combo.itemData(i)))
    tb.addWidget(win.overlay_combo)
    spacer = QWidget()
    spacer.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
    spacer.setStyleSheet("background: transparent")  # not a dark box at the toolbar's end
    tb.addWidget(spacer)

    ct = QToolBar("Canvas")
    ct.setObjectName("canvas-toolbar")
    ct.setMovable(False)
    ct.setOrientation(Qt.Vertical)
    for key in ("draw", "mask", "inspect"):
        ct.addAction(win.tool_actions[key])
    win.brush = QSpinBox()
    win.brush.setRange(1, 5)
    win.brush.setValue(2)
    win.brush.setPrefix("brush ")
    win.brush.setFixedWidth(86)
    win.brush.setToolTip("Brush size in pixels")
    win.brush.valueChanged.connect(lambda v: setattr(win.canvas, "brush", v))
    win.canvas.brush = 2
    ct.addWidget(win.brush)
    ct.addSeparator()
    for a in (win.act_undo, win.act_redo, win.act_clear, win.act_invert):
        ct.addAction(a)
    ct.addSeparator()
    win.act_random.setIconText("Test digit")
    win.act_import.setIconText("Import…")
    win.act_export.setIconText("Export…")
    for a in (win.act_random, win.act_import, win.act_export):
        ct.addAction(a)
    win.canvas_toolbar = ct


def set_overlay(win: "Host", key: str) -> None:
    win.canvas.set_overlay(key)
    win.legend.show_for(key, win.ordering)
    win.overlay_actions[key].setChecked(True)
    win.overlay_combo.setCurrentIndex(win.overlay_combo.findData(key))


def sync_tool(win: "Host", tool: str) -> None:
    win.tool_actions[tool].setChecked(True)
    hints = {"draw": "left draws, right erases", "mask": "painting the inpainting mask (right removes)",
             "inspect": "click a pixel to pin it"}
    win.canvas_title.setText(f"Canvas  <span style='color:#8b95a5'>28 × 28 · {hints[tool]}</span>")


def refresh_model_menus(win: "Host") -> None:
    win.recent_menu.clear()
    recent = [p for p in app_settings.recent_files(win.settings)]
    for p in recent:
        a = win.recent_menu.addAction(p.name)
        a.setToolTip(str(p))
        a.setStatusTip(str(p))
        a.triggered.connect(lambda _c=False, p=p: win.open_checkpoint(p, "recent"))
    if not recent:
        win.recent_menu.addAction("(none yet)").setEnabled(False)
    win.bundled_menu.clear()
    bundled = [e for e in win.model_picker.entries if e.source == "bundled"]
    for e in bundled:
        a = win.bundled_menu.addAction(e.label)
        a.triggered.connect(lambda _c=False, e=e: win.open_checkpoint(e.path, "bundled"))
    if not bundled:
        win.bundled_menu.addAction("(none bundled)").setEnabled(False)


def update_edit_actions(win: "Host") -> None:
    win.act_undo.setEnabled(win.session.can_undo)
    win.act_redo.setEnabled(win.session.can_redo)


def update_model_actions(win: "Host") -> None:
    win.act_save.setEnabled(win.model is not None)
