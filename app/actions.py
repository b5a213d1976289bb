"""Menus, shortcuts and the toolbars of the main window.

:func:`build` puts them on the window and returns them as one :class:`Actions` object (the window
keeps it as ``acts``). The actions call the state's editing commands and the two controllers that
read and write files (:class:`Checkpoints` and :class:`Files`, protocols: what they offer, not the
modules that define them), and follow the state's signals to stay checked and enabled as it
changes (tool, overlay, undo history, model).
"""

from __future__ import annotations

import html
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Protocol

from PySide6.QtCore import QObject, QSettings, Qt, QUrl
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from engine.catalogue import ModelEntry

from . import settings as app_settings
from .state import AppState

__all__ = ["Actions", "Checkpoints", "Files", "build", "app_version", "recent_labels", "CKPT_FILTER", "IMAGE_FILTER", "DOCS_DIR"]

#: the documentation (docs/ beside app/ in the repository, and in an editable install)
DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"

CKPT_FILTER = "pixelchain checkpoints (*.safetensors);;All files (*)"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.pgm *.ppm);;All files (*)"


class Checkpoints(Protocol):
    """Opening and saving checkpoints (:class:`app.checkpoints.CheckpointController`)."""

    def open_checkpoint(self, path: Path, source: str = "opened") -> None: ...
    def save_checkpoint_as(self, path: str | Path) -> None: ...
    def make_ensemble(self, paths: list[Path], out: Path) -> None: ...


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

    def __init__(self, win: QMainWindow, state: AppState, checkpoints: Checkpoints, files: Files, settings: QSettings | None = None):
        super().__init__(win)
        self.win, self.state, self.checkpoints, self.files = win, state, checkpoints, files
        self.settings = app_settings.make_settings() if settings is None else settings
        mb = win.menuBar()
        f = mb.addMenu("&File")
        self.act_open = _act(win, "&Open Checkpoint…", self.open_dialog, QKeySequence.StandardKey.Open, "Open a .safetensors checkpoint")
        f.addAction(self.act_open)
        self.recent_menu: QMenu = f.addMenu("Open &Recent")
        self.bundled_menu: QMenu = f.addMenu("&Bundled Models")
        self.act_save = _act(win, "&Save Checkpoint As…", self.save_dialog, "Ctrl+Shift+S", "Save the current model")
        f.addAction(self.act_save)
        self.act_ensemble = _act(win, "Make &Ensemble…", self.ensemble_dialog, None,
                                 "Combine two or more trained checkpoints of the same data into one model: their mixture, "
                                 "p(x) the mean of theirs")
        f.addAction(self.act_ensemble)
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
        self.act_shortcuts = _act(win, "&Keyboard Shortcuts", self.shortcuts_dialog, None, "Every shortcut of the menus")
        self.act_docs = _act(win, "&Documentation", self.open_docs, None, f"The guides in {DOCS_DIR}")
        self.act_about = _act(win, "&About pixelchain", self.about)
        for a in (self.act_shortcuts, self.act_docs, self.act_about):
            h.addAction(a)

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
        self.ink = QSpinBox()  # a grey model's soft brush: its intensity (hidden for a binary model)
        self.ink.setRange(5, 100)
        self.ink.setSingleStep(5)
        self.ink.setValue(round(state.ink * 100))
        self.ink.setPrefix("ink ")
        self.ink.setSuffix("%")
        self.ink.setFixedWidth(86)
        self.ink.setToolTip("Intensity of the soft grey brush at the stroke's centre")
        self.ink.valueChanged.connect(lambda v: state.set_ink(v / 100))
        self.ink_action = ct.addWidget(self.ink)
        self.ink_action.setVisible(False)
        state.modelChanged.connect(lambda: self.ink_action.setVisible(state.levels > 2))
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
        for p, label in zip(recent, recent_labels(recent), strict=True):
            a = self.recent_menu.addAction(label)
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
    def _start(self, name: str = "") -> str:
        """Where a file dialog starts: the folder last used (persisted in the settings)."""
        folder = app_settings.last_folder(self.settings)
        return str(folder / name) if name else str(folder)

    def _chosen(self, path: str) -> str:
        if path:
            app_settings.remember_folder(self.settings, path)
        return path

    def open_dialog(self) -> None:
        path = self._chosen(QFileDialog.getOpenFileName(self.win, "Open checkpoint", self._start(), CKPT_FILTER)[0])
        if path:
            self.checkpoints.open_checkpoint(Path(path), "opened")

    def save_dialog(self) -> None:
        if self.state.model is None:
            return
        path = self._chosen(QFileDialog.getSaveFileName(self.win, "Save checkpoint as", self._start("model.safetensors"), CKPT_FILTER)[0])
        if path:
            if not path.endswith(".safetensors"):
                path += ".safetensors"
            self.checkpoints.save_checkpoint_as(path)

    def ensemble_dialog(self) -> None:
        paths = QFileDialog.getOpenFileNames(self.win, "Choose the ensemble's members: two or more checkpoints",
                                             self._start(), CKPT_FILTER)[0]
        if not paths:
            return
        self._chosen(paths[0])
        if len(paths) < 2:
            self.state.show_error("An ensemble needs two or more checkpoints: select them together (Ctrl+click).")
            return
        out = self._chosen(QFileDialog.getSaveFileName(self.win, "Save the ensemble as", self._start("ensemble.safetensors"),
                                                       CKPT_FILTER)[0])
        if out:
            if not out.endswith(".safetensors"):
                out += ".safetensors"
            self.checkpoints.make_ensemble([Path(p) for p in paths], Path(out))

    def import_dialog(self) -> None:
        path = self._chosen(QFileDialog.getOpenFileName(self.win, "Import image", self._start(), IMAGE_FILTER)[0])
        if path:
            self.files.import_image_file(path)

    def export_dialog(self) -> None:
        path = self._chosen(QFileDialog.getSaveFileName(self.win, "Export canvas as PNG", self._start("digit.png"),
                                                        "PNG images (*.png)")[0])
        if path:
            self.files.export_image_file(path)

    def export_conditionals_dialog(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self.win, "Export the conditionals", self._start("conditionals.csv"),
            "CSV table, one row per pixel (*.csv);;PNG image of the heatmaps (*.png)")
        if self._chosen(path):
            if Path(path).suffix.lower() not in (".csv", ".png"):
                path += ".png" if "PNG" in chosen else ".csv"
            self.files.export_conditionals(path)

    # -- help ------------------------------------------------------------------------------------
    def shortcuts(self) -> list[tuple[str, str, str]]:
        """(menu, action, keys) of every action with a shortcut, in the order of the menus, from
        the actions themselves (so the list never falls behind them)."""
        rows: list[tuple[str, str, str]] = []

        def walk(menu: QMenu, where: str) -> None:
            for a in menu.actions():
                sub = a.menu()
                if isinstance(sub, QMenu):
                    walk(sub, f"{where} ▸ {_bare(sub.title())}")
                elif not a.shortcut().isEmpty():
                    rows.append((where, _bare(a.text()), a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)))

        for top in self.win.menuBar().actions():
            menu = top.menu()
            if isinstance(menu, QMenu):
                walk(menu, _bare(menu.title()))
        return rows

    def shortcuts_dialog(self) -> QDialog:
        """A window listing :meth:`shortcuts` (not modal: it can stay open beside the canvas)."""
        dlg = QDialog(self.win)
        dlg.setWindowTitle("Keyboard shortcuts")
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        lay = QVBoxLayout(dlg)
        rows = self.shortcuts()
        table = QTableWidget(len(rows), 3)
        table.setHorizontalHeaderLabels(["Menu", "Action", "Shortcut"])
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(text))
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        lay.addWidget(table)
        note = QLabel("Ctrl+click pins a pixel with any tool; the right mouse button erases (or removes mask).")
        note.setObjectName("hint")
        note.setWordWrap(True)
        lay.addWidget(note)
        dlg.resize(520, 560)
        dlg.show()
        self.shortcuts_window = dlg
        return dlg

    def open_docs(self) -> bool:
        """Open the documentation folder (docs/) in the desktop's file browser; where that fails,
        say where it is."""
        if DOCS_DIR.is_dir() and QDesktopServices.openUrl(QUrl.fromLocalFile(str(DOCS_DIR))):
            self.state.show_status(f"Opened {DOCS_DIR}", 6000)
            return True
        where = DOCS_DIR if DOCS_DIR.is_dir() else "the docs/ folder of the pixelchain repository"
        self.state.show_status(f"The documentation is in {where} (start with README.md beside it)", 15000)
        return False

    def about(self) -> None:
        QMessageBox.about(
            self.win, "About pixelchain",
            f"<b>pixelchain</b> {html.escape(app_version())}<br>Explore autoregressive models of binarized MNIST: "
            "log p(x) = Σ<sub>t</sub> log p(x<sub>o<sub>t</sub></sub> | x<sub>o<sub>&lt;t</sub></sub>).<br><br>"
            "Draw on the canvas to see every pixel's conditional; pick an ordering; sample, inpaint and train models.<br><br>"
            f"Documentation: <a href='{QUrl.fromLocalFile(str(DOCS_DIR)).toString()}'>{html.escape(str(DOCS_DIR))}</a> "
            "· shortcuts: Help ▸ Keyboard Shortcuts",
        )


def _bare(text: str) -> str:
    """A menu text without its mnemonic ampersands and dots ("&Open Checkpoint…" -> "Open Checkpoint")."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…").rstrip(".")


def app_version() -> str:
    """The installed package's version ("0.1.0"), or "(version unknown)" when run from a tree that
    is not installed."""
    try:
        return version("pixelchain")
    except PackageNotFoundError:
        return "(version unknown)"


def recent_labels(paths: list[Path]) -> list[str]:
    """Menu texts of the recent files: the file name, and where two share one, as many of the
    last folders of each as tell them apart ("best.safetensors — runs/a")."""
    labels = [p.name for p in paths]
    for name in set(labels):
        same = [i for i, lab in enumerate(labels) if lab == name]
        if len(same) < 2:
            continue
        parents = [paths[i].parent.parts for i in same]
        depth = max(len(p) for p in parents)
        k = 1
        while k < depth and len({p[-k:] for p in parents}) < len(parents):
            k += 1
        for i, parts in zip(same, parents, strict=True):
            where = "/".join(parts[-k:]) if parts[-k:] else "/"
            labels[i] = f"{name} — {where}"
    return labels


def build(win: QMainWindow, state: AppState, checkpoints: Checkpoints, files: Files, model_picker: QWidget,
          ordering_picker: QWidget, settings: QSettings | None = None) -> Actions:
    """The menus of ``win`` and its toolbars, as one :class:`Actions`."""
    acts = Actions(win, state, checkpoints, files, settings)
    acts.add_toolbars(model_picker, ordering_picker)
    return acts
