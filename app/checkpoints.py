"""The models the window can show: the catalogue, opening and saving checkpoints, the ordering.

:class:`CheckpointController` fills the model picker (bundled checkpoints, recent files, trained
ones), opens a checkpoint on the ``compute`` worker and, once it is read and fits the canvas,
sets it on the state with the ordering the ordering picker allows; with no checkpoint at all it
builds an untrained FVSBN. It saves the current model as a new checkpoint, keeps the recent files
in the settings, and reports every failure through the state (``state.error``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

from PySide6.QtCore import QObject, QSettings, Signal

from engine.catalogue import ModelEntry, list_checkpoints
from engine.checkpoint import Checkpoint
from engine.models.base import ARModel
from engine.ordering import Ordering

from . import jobs
from . import settings as app_settings
from .state import AppState
from .widgets.model_info import ModelInfo
from .widgets.pickers import ModelPicker, OrderingPicker
from .widgets.text import plain
from .worker import Worker

__all__ = ["CheckpointController", "shown_entry"]


def shown_entry(entry: ModelEntry) -> ModelEntry:
    """``entry`` with the strings its file gave (name, family, ordering) cut to one short line
    for the picker, the menus and the messages (:func:`app.widgets.text.plain`)."""
    return dataclasses.replace(entry, name=plain(entry.name), family=plain(entry.family, 40), ordering=plain(entry.ordering, 60))


class CheckpointController(QObject):
    """Opens, lists and saves models (see the module docstring)."""

    listChanged = Signal()  #: the recent files or the picker's entries changed (the File menu follows)

    def __init__(self, state: AppState, compute: Worker, model_picker: ModelPicker, ordering_picker: OrderingPicker,
                 model_info: ModelInfo, settings: QSettings, bundled_dir: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.compute = compute
        self.model_picker, self.ordering_picker, self.model_info = model_picker, ordering_picker, model_info
        self.settings = settings
        self.bundled_dir = Path(bundled_dir)
        self._loads: dict[int, tuple[Path, str]] = {}  #: checkpoint loads in flight
        self._misc: dict[int, str] = {}  #: other jobs in flight: "default", "save" or "ensemble"
        self._listing: int | None = None  #: the job reading the recent files' headers
        self._default_pending = False  #: start_default waits for that job
        state.modelChanged.connect(self._on_model_changed)
        model_picker.entryChosen.connect(lambda e: self.open_checkpoint(e.path, e.source))
        ordering_picker.orderingChosen.connect(self.set_ordering)
        compute.result.connect(self._on_result)
        compute.error.connect(self._on_error)
        compute.finished.connect(self._on_finished)

    @property
    def recent(self) -> list[Path]:
        """The recent files (opened, saved or trained; a bundled model is listed as bundled only)."""
        return [p for p in app_settings.recent_files(self.settings) if not self.is_bundled(p)]

    def is_bundled(self, path: Path) -> bool:
        """``path`` is one of the bundled models (however it was opened)."""
        try:
            return Path(path).resolve().parent == self.bundled_dir.resolve()
        except OSError:
            return False

    @property
    def listing(self) -> bool:
        """The recent files' headers are still being read (at start-up, on the compute worker)."""
        return self._listing is not None

    def populate(self) -> list[ModelEntry]:
        """Fill the model picker with the bundled models, and ask the compute worker for the recent
        files' entries (a header can be tens of megabytes: never read on the GUI thread; they are
        added when read). Returns the bundled entries (the training panel's recipes)."""
        listed, errors = list_checkpoints(self.bundled_dir, "bundled")
        entries = [shown_entry(e) for e in listed]
        for e in entries:
            self.model_picker.add_entry(e)
        for msg in errors:
            self.state.show_status(msg, 8000)
        recent = self.recent
        if recent:
            self._listing = self.compute.submit(jobs.entries_job, recent, "recent", replace=False).id
        self.listChanged.emit()
        return entries

    def start_default(self) -> None:
        """Open the best bundled single model (an ensemble only where nothing else is bundled), else
        the most recent one, else an untrained FVSBN."""
        entries = [e for e in self.model_picker.entries if e.source == "bundled"]
        if not entries and self.listing:  # the recent files may hold one: decide once they are read
            self._default_pending = True
            return
        if entries:
            # the best single model: an ensemble runs all its members on every stroke and is a
            # composite to meet once the parts are known, so it is opened from the picker
            singles = [e for e in entries if e.family != "mixture"] or entries
            best = min(singles, key=lambda e: e.test_nll if e.test_nll is not None else float("inf"))
            self.open_checkpoint(best.path, "bundled")
        elif self.model_picker.entries:
            e = self.model_picker.entries[0]
            self.open_checkpoint(e.path, e.source)
        else:
            job = self.compute.submit(jobs.default_model_job, replace=False)
            self._misc[job.id] = "default"
            self.state.show_status("No checkpoints yet: building an untrained FVSBN…")

    def open_checkpoint(self, path: Path, source: str = "opened") -> None:
        """Read ``path`` on the compute worker (weights and header) and show it; a bundled model
        stays bundled whichever way it is opened, anything else joins the recent files."""
        path = Path(path)
        if self.is_bundled(path):
            source = "bundled"
        job = self.compute.submit(jobs.open_job, path, source, replace=False)
        self._loads[job.id] = (path, source)
        self.state.show_status(f"Loading {plain(path.name)}…")

    def _check_size(self, model: ARModel) -> None:
        c, (h, w) = model.config, self.state.shape
        if (c.height, c.width) != (h, w):
            raise ValueError(f"the app shows {h}x{w} digits; this model is for {c.height}x{c.width} images")

    def set_model(self, model: ARModel, entry: ModelEntry | None, meta: dict | None = None) -> None:
        self._check_size(model)
        self.state.stop_run()
        self.state.set_model(model, entry, meta, self.ordering_picker.set_model(model))

    def _on_model_changed(self) -> None:
        st = self.state
        if st.entry is not None:
            self.model_picker.drop_placeholder()
            self.model_picker.select_path(st.entry.path)
        else:
            self.model_picker.set_placeholder("untrained FVSBN (pixel marginals) · use Train… or File ▸ Open…")
        if st.model is not None:
            self.model_info.show_model(st.model, st.entry, st.meta)

    def set_ordering(self, ordering: Ordering) -> None:
        st = self.state
        if st.model is None:
            return
        ok, why = st.model.supports(ordering)
        if not ok:
            st.show_status(why, 6000)
            if st.ordering is not None:
                self.ordering_picker.select(st.ordering)
            return
        st.stop_run()
        st.set_ordering(ordering)

    # -- the compute worker's answers ------------------------------------------------------------
    def _on_result(self, job_id: int, value: object) -> None:
        st = self.state
        if job_id in self._loads:
            path, source = self._loads[job_id]
            ck, read = cast(tuple[Checkpoint, ModelEntry], value)
            entry = shown_entry(read)
            try:
                self._check_size(ck.model)
                self.model_picker.add_entry(entry)
                self.set_model(ck.model, entry, ck.meta)
            except Exception as exc:  # noqa: BLE001
                st.show_error(f"Cannot use {plain(path.name)}: {exc}")
                return
            if source != "bundled":
                app_settings.add_recent(self.settings, path)
                self.listChanged.emit()
            st.show_status(f"Loaded {entry.name} ({entry.family}) from {plain(path, 300)}", 6000)
            return
        if job_id == self._listing:
            for e in cast(list[ModelEntry], value):
                if not self.is_bundled(e.path):
                    self.model_picker.add_entry(shown_entry(e))
            self.listChanged.emit()
            return
        kind = self._misc.get(job_id)
        if kind == "default":
            assert isinstance(value, ARModel)
            self.set_model(value, None, {})
            st.show_status("No checkpoints found: showing an untrained FVSBN. "
                           "Train one (Train tab) or open one (File ▸ Open Checkpoint…).")
        elif kind == "ensemble":
            path = Path(str(value))
            st.show_status(f"Wrote the ensemble {plain(path.name)}; opening it…", 6000)
            self.open_checkpoint(path, "opened")
        elif kind == "save":
            app_settings.add_recent(self.settings, Path(str(value)))
            self.listChanged.emit()
            st.show_status(f"Saved {value}", 6000)

    def _on_error(self, job_id: int, message: str) -> None:
        if job_id in self._loads:
            self.state.show_error(f"Cannot open {plain(self._loads[job_id][0].name)}:\n{message}")
        elif job_id in self._misc:
            self.state.show_error(message)

    def _on_finished(self, job_id: int, _cancelled: bool) -> None:
        if job_id == self._listing:
            self._listing = None
            if self._default_pending:
                self._default_pending = False
                self.start_default()
        self._loads.pop(job_id, None)
        self._misc.pop(job_id, None)

    # -- saving and training ---------------------------------------------------------------------
    def save_checkpoint_as(self, path: str | Path) -> None:
        st = self.state
        if st.model is None:
            return
        meta = {k: v for k, v in st.meta.items() if k not in ("family", "config", "ordering", "parameters")}
        meta["name"] = Path(path).stem
        job = self.compute.submit(jobs.save_job, Path(path), st.model, meta, replace=False)
        self._misc[job.id] = "save"

    def make_ensemble(self, paths: list[Path], out: Path) -> None:
        """Write the ensemble of the checkpoints at ``paths`` to ``out`` on the compute worker (it
        reads every member), then open it; a member that does not fit is reported in one line."""
        job = self.compute.submit(jobs.mix_job, [Path(p) for p in paths], Path(out), replace=False)
        self._misc[job.id] = "ensemble"
        self.state.show_status(f"Making an ensemble of {len(paths)} checkpoints…")

    def add_trained(self, path: Path, how: str) -> None:
        """A training run left ``path``: list it in the picker and the recent files."""
        try:
            entry = ModelEntry.from_file(path, "trained")
        except Exception as exc:  # noqa: BLE001
            self.state.show_error(f"The trained checkpoint cannot be read: {exc}")
            return
        self.model_picker.add_entry(shown_entry(entry))
        app_settings.add_recent(self.settings, path)
        self.listChanged.emit()
        self.state.show_status(f"Training {how}: {path.name} is in the model picker", 8000)
