"""A tab page that scrolls only when it must (the side panels of the main window)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QScrollArea, QTabWidget, QWidget

__all__ = ["scrolling", "tab_of", "tabs_min_width", "PageScroll"]


class PageScroll(QScrollArea):
    """A tab page that fills the panel like an ordinary page (a results grid takes the height
    there is) and scrolls only when the panel is shorter than the page's minimum (a short screen).

    A plain resizable QScrollArea sizes a page with word-wrapped labels to its *preferred* height
    for the width, which scrolls panels that would fit."""

    def __init__(self, page: QWidget):
        super().__init__()
        self.setWidget(page)
        self.setWidgetResizable(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def _fit(self) -> None:
        page = self.widget()
        if page is None:
            return
        bar = self.verticalScrollBar().sizeHint().width()
        width = self.width() - 2 * self.frameWidth()
        lay = page.layout()

        def need(w: int) -> int:
            if lay is not None and lay.hasHeightForWidth():
                return lay.totalMinimumHeightForWidth(w)
            return page.minimumSizeHint().height()

        height = self.height() - 2 * self.frameWidth()
        if need(width) > height:  # it scrolls: the bar takes its width
            width -= bar
        page.resize(max(width, page.minimumSizeHint().width()), max(height, need(width)))

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._fit()

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:  # noqa: N802 (Qt)
        if obj is self.widget() and e.type() == QEvent.Type.LayoutRequest:  # its contents changed (a note shown)
            self._fit()
        return super().eventFilter(obj, e)

    def setWidget(self, page: QWidget) -> None:  # noqa: N802 (Qt)
        super().setWidget(page)
        page.installEventFilter(self)


def scrolling(page: QWidget) -> QScrollArea:
    """``page`` in a vertical scroll area, so that a tall panel (training) never sets the window's
    minimum height: on a short screen the panel scrolls instead."""
    return PageScroll(page)


def tab_of(tabs: QTabWidget, panel: QWidget) -> int:
    """The index of the tab of ``tabs`` holding ``panel`` (maybe inside a scroll area), -1 if none."""
    for i in range(tabs.count()):
        page = tabs.widget(i)
        if page is not None and (page is panel or page.isAncestorOf(panel)):
            return i
    return -1


def tabs_min_width(tabs: QTabWidget) -> int:
    """Wide enough for every tab's label and every page: a narrow window then shrinks the other
    columns instead of hiding tabs behind scroll arrows or cutting a panel off (a short one
    scrolls the page, :func:`scrolling`)."""
    pages = [(p, p.widget()) for p in map(tabs.widget, range(tabs.count())) if isinstance(p, QScrollArea)]
    widest = max((page.minimumSizeHint().width() + p.verticalScrollBar().sizeHint().width()
                  for p, page in pages if page is not None), default=0)
    return max(380, tabs.tabBar().sizeHint().width() + 8, widest + 4)
