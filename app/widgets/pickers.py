"""The model picker and the ordering picker of the toolbar.

The model picker lists checkpoints (bundled, opened, trained) with their family and measured test
NLL; it holds :class:`engine.catalogue.ModelEntry` objects and emits the chosen one. The ordering
picker offers every ordering of :data:`engine.ordering.ORDERING_NAMES` (``random`` with a seed)
and the line scans started from the other corners; orderings the current model cannot use are
disabled, with the model's reason as the tooltip
(:meth:`engine.models.base.ARModel.supports`).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from engine.catalogue import ModelEntry
from engine.datasets import describe
from engine.models.base import ARModel
from engine.ordering import ORDERING_DESCRIPTIONS, ORDERING_NAMES, SCAN_VARIANT_NAMES, SEEDED_NAMES, Ordering, make_ordering

from .model_info import head_name
from .text import rich

#: what the ordering picker lists: the named orderings, then the line scans from the other corners
PICKER_NAMES: tuple[str, ...] = ORDERING_NAMES + SCAN_VARIANT_NAMES

__all__ = ["ModelPicker", "OrderingPicker"]


class ModelPicker(QComboBox):
    entryChosen = Signal(object)  #: a ModelEntry

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(44)
        self.setToolTip("The model whose conditionals are shown. Bundled, opened and trained checkpoints.")
        self._entries: list[ModelEntry] = []
        self._placeholder: str | None = None
        self.activated.connect(self._on_activated)

    @property
    def entries(self) -> list[ModelEntry]:
        return list(self._entries)

    def add_entry(self, entry: ModelEntry, select: bool = False) -> int:
        """Add (or refresh) an entry; returns its row."""
        for i, e in enumerate(self._entries):
            if Path(e.path).resolve() == Path(entry.path).resolve():
                self._entries[i] = entry
                row = self._row(i)
                self.setItemText(row, entry.label)
                self.setItemData(row, self._tip(entry), Qt.ItemDataRole.ToolTipRole)
                if select:
                    self.setCurrentIndex(row)
                return row
        self.drop_placeholder()
        self._entries.append(entry)
        self.addItem(entry.label)
        row = self.count() - 1
        self.setItemData(row, self._tip(entry), Qt.ItemDataRole.ToolTipRole)
        if select:
            self.setCurrentIndex(row)
        return row

    def set_placeholder(self, text: str) -> None:
        """Show a model that is not a file (the untrained default) as the current item."""
        self.drop_placeholder()
        self.insertItem(0, text)
        self._placeholder = text
        self.setCurrentIndex(0)

    def drop_placeholder(self) -> None:
        if self._placeholder is not None:
            self.removeItem(0)
            self._placeholder = None

    def _row(self, i: int) -> int:
        return i + (1 if self._placeholder is not None else 0)

    def select_path(self, path: Path) -> None:
        for i, e in enumerate(self._entries):
            if Path(e.path).resolve() == Path(path).resolve():
                self.setCurrentIndex(self._row(i))
                return

    @staticmethod
    def _tip(e: ModelEntry) -> str:
        # a rich-text tooltip: the strings from the file are escaped (a name may hold markup)
        parts = [f"<b>{rich(e.name)}</b> ({e.source})", f"family: {rich(e.family)}", f"ordering: {rich(e.ordering)}"]
        if e.levels > 2:
            parts.append(f"pixels: {e.levels} levels, {rich(head_name(e.head))}"
                         + (f" · {rich(describe(e.dataset, e.levels))}" if e.dataset else ""))
        if e.test_nll is not None:
            parts.append(f"test NLL: {e.test_nll:.3f} nats" + (" (the model's own ordering)" if e.ensemble else ""))
        if e.ensemble is not None:
            parts.append(f"test NLL of an ensemble of {e.ensemble[0]}: {e.ensemble[1]:.3f} nats")
        if e.valid_nll is not None:
            parts.append(f"validation NLL: {e.valid_nll:.3f} nats")
        parts.append(rich(e.path, 400))
        return "<br>".join(parts)

    def _on_activated(self, row: int) -> None:
        i = row - (1 if self._placeholder is not None else 0)
        if 0 <= i < len(self._entries):
            self.entryChosen.emit(self._entries[i])


class OrderingPicker(QWidget):
    """A combo box of orderings plus the seed of the random one."""

    orderingChosen = Signal(object)  #: an Ordering

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.combo = QComboBox()
        self.combo.setMinimumWidth(130)
        self.seed = QSpinBox()
        self.seed.setRange(0, 999_999)
        self.seed.setPrefix("seed ")
        self.seed.setToolTip("Seed of the random ordering (or of the random row directions)")
        self.extra: Ordering | None = None  # a model's own ordering that has no name in the list
        for i, name in enumerate(PICKER_NAMES):
            if name == SCAN_VARIANT_NAMES[0]:
                self.combo.insertSeparator(i)
            self.combo.addItem(name, name)
            self.combo.setItemData(self.combo.count() - 1, ORDERING_DESCRIPTIONS.get(name, ""), Qt.ItemDataRole.ToolTipRole)
        lay.addWidget(QLabel("Ordering"))
        lay.addWidget(self.combo)
        lay.addWidget(self.seed)
        self.height_, self.width_ = 28, 28
        self._model: ARModel | None = None
        self.combo.activated.connect(lambda _i: self._emit())
        self.seed.editingFinished.connect(self._emit)
        self._sync_seed()

    def current(self) -> Ordering:
        name = self.combo.currentData()
        if name == "__model__" and self.extra is not None:
            return self.extra
        seed = self.seed.value() if name in SEEDED_NAMES else None
        return make_ordering(name, self.height_, self.width_, seed=seed)

    def _emit(self) -> None:
        self._sync_seed()
        self.orderingChosen.emit(self.current())

    def _sync_seed(self) -> None:
        is_random = self.combo.currentData() in SEEDED_NAMES
        fixed = self._model is not None and not self._model.any_order
        self.seed.setVisible(is_random)
        self.seed.setEnabled(is_random and not fixed)

    def set_model(self, model: ARModel) -> Ordering:
        """Enable what ``model`` supports; select its ordering if the current one is not. Returns
        the ordering now selected."""
        self._model = model
        self.height_, self.width_ = model.config.height, model.config.width
        # the model's own ordering, when it has no entry of its own
        idx = self.combo.findData("__model__")
        if idx >= 0:
            self.combo.removeItem(idx)
        self.extra = None
        own = model.ordering
        if own.name not in PICKER_NAMES:
            self.extra = own
            self.combo.addItem(f"{own.label} (model's own)", "__model__")
        items = self._items()
        for i in range(self.combo.count()):
            name = self.combo.itemData(i)
            if name is None:  # the separator
                continue
            if name == "__model__":
                ok, why = True, ""
            elif name in SEEDED_NAMES:
                ok = model.any_order or own.name == name
                why = "" if ok else model.supports(make_ordering(name, self.height_, self.width_, 0))[1]
            else:
                ok, why = model.supports(make_ordering(name, self.height_, self.width_))
            item = items.item(i)
            item.setEnabled(ok)
            desc = ORDERING_DESCRIPTIONS.get(name, "")
            item.setToolTip(desc if ok else f"Not available: {why}")
        cur = self.current() if self.combo.currentIndex() >= 0 else own
        if not model.supports(cur)[0]:
            self.select(own)
        self._sync_seed()
        return self.current()

    def select(self, ordering: Ordering) -> None:
        name = ordering.name if ordering.name in PICKER_NAMES else "__model__"
        i = self.combo.findData(name)
        if i >= 0:
            self.combo.setCurrentIndex(i)
        if ordering.name in SEEDED_NAMES and ordering.seed is not None:
            self.seed.setValue(int(ordering.seed))
        self._sync_seed()

    def is_enabled(self, name: str) -> bool:
        i = self.combo.findData(name)
        return i >= 0 and self._items().item(i).isEnabled()

    def tooltip(self, name: str) -> str:
        i = self.combo.findData(name)
        return self._items().item(i).toolTip() if i >= 0 else ""

    def _items(self) -> QStandardItemModel:
        """The combo box's items (a QComboBox's own model is a QStandardItemModel; Qt declares the base)."""
        return cast(QStandardItemModel, self.combo.model())
