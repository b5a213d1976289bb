"""Latest request wins: the one place where the app drops results that are no longer wanted.

Much of the app asks a worker for something that belongs to what is on screen now: the heatmaps of
the canvas, the ensemble read-out, the influence map of the pinned pixel, a comparison, a code
length, the frames of the sampling run. By the time an answer comes back, the user may have drawn,
switched models or asked again. A :class:`Latest` sends one kind of request to a
:class:`app.worker.Worker` and passes on only what answers the *newest* request it sent, and,
given a ``fresh`` test, only while that request's key still describes the screen. So each kind
of request has one source of truth for "is this result still wanted?".

A request carries a key (any hashable or comparable value, e.g. ``(model key, ordering, canvas
version)``); the signals hand the key back with the value, so a job function returns the value
alone. ``pending`` is the key of the request in flight, ``shown`` the key of the last result
passed on; :meth:`wanted` says whether a key is neither, which spares recomputing what is on
screen or on its way. Several :class:`Latest` may share a worker: each one only looks at the jobs
it submitted.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, Signal, Slot

from .worker import Job, Worker

__all__ = ["Latest"]


class Latest(QObject):
    """Requests of one kind on one worker; only the newest one's signals get through.

    ``fresh(key)``: whether a result for ``key`` still belongs on screen (default: always); a
    result or progress item of the newest request is dropped when it is not. ``replace``: a new
    request cancels this object's older ones (other jobs on the worker are left alone); without
    it they run to their end and their results are dropped here.
    """

    progress = Signal(object, object)  #: (key, item) of the newest request, while fresh
    result = Signal(object, object)  #: (key, value) of the newest request, while fresh
    error = Signal(object, str)  #: (key, message) of the newest request
    finished = Signal(object, bool)  #: (key, cancelled): the newest request ended, however

    def __init__(self, worker: Worker, fresh: Callable[[Any], bool] | None = None, *, replace: bool = True,
                 parent: QObject | None = None):
        super().__init__(parent if parent is not None else worker)
        self.worker = worker
        self.fresh = fresh
        self.replace = replace
        self.job: Job | None = None  #: the newest request's job while it runs
        self.pending: Any = None  #: the newest request's key while it runs
        self.shown: Any = None  #: the key of the last result passed on
        self._keys: dict[int, Any] = {}
        self._jobs: dict[int, Job] = {}  #: this object's jobs not finished yet
        self._newest = -1
        worker.progress.connect(self._on_progress)
        worker.result.connect(self._on_result)
        worker.error.connect(self._on_error)
        worker.finished.connect(self._on_finished)

    # -- GUI side ---------------------------------------------------------------------------------
    def submit(self, key: Any, fn: Callable[..., Any], *args: Any, start_paused: bool = False, **kwargs: Any) -> Job:
        """Send ``fn(job, *args, **kwargs)`` as the newest request, for ``key``."""
        if self.replace:
            for older in self._jobs.values():
                older.cancel()
        job = self.worker.submit(fn, *args, replace=False, start_paused=start_paused, **kwargs)
        self._keys[job.id] = key
        self._jobs[job.id] = job
        self._newest = job.id
        self.job, self.pending = job, key
        return job

    def wanted(self, key: Any) -> bool:
        """False when ``key``'s result is on screen or being computed."""
        return key != self.pending and key != self.shown

    def is_newest(self, job_id: int) -> bool:
        return job_id == self._newest

    @property
    def busy(self) -> bool:
        """A request is in flight."""
        return self.job is not None

    def cancel(self) -> None:
        """Cancel the request in flight; nothing of it will be passed on."""
        if self.job is not None:
            self.job.cancel()
        self._newest = -1
        self.job = self.pending = None

    def forget(self) -> None:
        """Nothing is on screen any more: the next request for the same key is wanted again."""
        self.shown = None

    def is_fresh(self, key: Any) -> bool:
        return self.fresh is None or bool(self.fresh(key))

    # -- relays from the worker (GUI thread) ------------------------------------------------------
    @Slot(int, object)
    def _on_progress(self, job_id: int, item: object) -> None:
        if self.is_newest(job_id) and self.is_fresh(self._keys[job_id]):
            self.progress.emit(self._keys[job_id], item)

    @Slot(int, object)
    def _on_result(self, job_id: int, value: object) -> None:
        if not self.is_newest(job_id):
            return
        key = self._keys[job_id]
        self.pending = None
        if self.is_fresh(key):
            self.shown = key
            self.result.emit(key, value)

    @Slot(int, str)
    def _on_error(self, job_id: int, message: str) -> None:
        if self.is_newest(job_id):
            self.pending = None
            self.error.emit(self._keys[job_id], message)

    @Slot(int, bool)
    def _on_finished(self, job_id: int, cancelled: bool) -> None:
        key = self._keys.pop(job_id, None)
        self._jobs.pop(job_id, None)
        if not self.is_newest(job_id):
            return
        self._newest = -1
        self.job = self.pending = None
        self.finished.emit(key, cancelled)
