"""The class read-out of a class-conditional model: which digit the drawing is, and why.

:class:`ClassesController` keeps the :class:`app.widgets.classes.ClassPanel` in step with the state.
It owns no worker: the posterior and the per-class log-probabilities come with every heatmap
(:func:`app.jobs.figures_job` runs one batched pass over the classes for a conditional model,
:func:`engine.class_figures.class_pass`), so a stroke costs one pass for the heatmaps, the bar chart
and the evidence map together, latest-wins like the heatmaps. Picking the evidence map's classes
only recolours what is already computed; picking the class the heatmaps are given asks for new
heatmaps (the state's ``givenChanged``, which :class:`app.figures.FiguresController` follows).
An unconditional model hides the panel and leaves every other part of the window as it was.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel

from .state import AppState
from .widgets.classes import ClassPanel

__all__ = ["ClassesController", "conditionals_title"]

BASE_TITLE = "Conditionals  <span style='color:#8b95a5'>teacher-forced on the canvas"


def conditionals_title(state: AppState) -> str:
    """The heatmaps' title: what their conditionals are given (a class, or the marginal over classes)."""
    if not state.classes:
        return BASE_TITLE + "</span>"
    if state.given is None:
        return BASE_TITLE + f" · marginal over the {state.classes} digits</span>"
    return BASE_TITLE + f" · given y&nbsp;=&nbsp;{state.given}</span>"  # never broken at the "="


class ClassesController(QObject):
    """Shows the class panel for a conditional model (see the module docstring)."""

    shown = Signal()  #: the panel shows the class read-out of the figures on screen

    def __init__(self, state: AppState, panel: ClassPanel, title: QLabel, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.panel = panel
        self.title = title
        self.shown_serial = -1  #: the state's ``figures_serial`` of the read-out shown
        panel.setVisible(False)
        state.modelChanged.connect(self._on_model)
        state.givenChanged.connect(self._on_given)
        state.pairChanged.connect(self._show)
        state.figuresChanged.connect(self._show)
        panel.givenPicked.connect(state.set_given)
        panel.pairPicked.connect(state.set_evidence_pair)

    def _on_model(self) -> None:
        st = self.state
        self.panel.setVisible(st.classes > 0)
        if st.classes:
            self.panel.set_classes(st.classes)
            self.panel.set_given(st.given)
            self.panel.set_pair(st.evidence_pair)
        self.title.setText(conditionals_title(st))

    def _on_given(self) -> None:
        self.panel.set_given(self.state.given)
        self.title.setText(conditionals_title(self.state))

    def _show(self) -> None:
        st = self.state
        figs = st.figures
        if not st.classes or figs is None or figs.classes is None:
            return
        self.panel.set_pair(st.evidence_pair)
        self.panel.show_classes(figs.classes, st.evidence_pair)
        self.shown_serial = st.figures_serial
        self.shown.emit()
