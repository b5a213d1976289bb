"""The colour key of the ordering overlay on the canvas: first step to last step."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QWidget

from engine.ordering import Ordering

from .colors import lookup_table

__all__ = ["OrderLegend"]


class OrderLegend(QWidget):
    """The colour key of the ordering overlay: first step to last step."""

    def __init__(self) -> None:
        super().__init__()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(96, 2, 8, 2)
        self.first = QLabel("step 1")
        self.bar = QLabel()
        self.bar.setFixedHeight(10)
        self.last = QLabel("step 784")
        self.note = QLabel()
        for lab in (self.first, self.last, self.note):
            lab.setObjectName("legend")
        # the ordering's name never widens the window (a 1024 px screen): it is cut, whole in the tooltip
        self.note.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.note.setMinimumWidth(10)
        self.bar.setMinimumWidth(30)
        lay.addWidget(self.first)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.last)
        lay.addWidget(self.note)
        lut = lookup_table(9)
        stops = ", ".join(f"stop:{i / 8:.3f} rgb({r},{g},{b})" for i, (r, g, b) in enumerate(lut.tolist()))
        self.bar.setStyleSheet(f"background: qlineargradient(x1:0, y1:0, x2:1, y2:0, {stops}); border-radius: 3px;")
        # hidden, it keeps its height: the canvas above does not jump when the overlay is switched on
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.setSizePolicy(policy)
        self.setVisible(False)

    def show_for(self, mode: str, ordering: Ordering | None) -> None:
        self.setVisible(mode != "off" and ordering is not None)
        if ordering is not None:
            self.last.setText(f"step {ordering.size}")
            self.note.setText(f"  {ordering.label}" + ("  (green dot: first, red: last)" if mode == "path" else ""))
            self.note.setToolTip(self.note.text().strip())
