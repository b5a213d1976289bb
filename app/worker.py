"""Background work for the app: engine generators driven on a QThread (the superqt/napari pattern).

A :class:`Worker` owns one QThread. :meth:`Worker.submit` hands it a function; the function runs
on the thread and may return a value or a *generator*. A generator is iterated there, and between
any two yields the worker checks for cancellation, honours a pause (with single steps) and an
optional delay between items (sampling speed). The GUI side receives

* ``started(id)``, ``progress(id, item)`` for every yielded item, ``result(id, value)`` (the
  function's return value, or the generator's ``return`` value), ``error(id, message)``, and
  ``finished(id, cancelled)`` exactly once per job.

Every job carries an increasing request id. ``submit(..., replace=True)`` cancels what is queued or
running, and the signals of a cancelled job other than ``started``/``finished`` are dropped, so a
stale result never overwrites a newer one -- errors included: what a cancelled job raises is
nobody's concern any more (a generator closed half-way may well fail), so it is neither shown nor
printed.

Jobs of one worker run one at a time; the app keeps separate workers for heatmaps, sampling and
training so they do not wait on each other. ``torch_threads`` sets torch's intra-op thread count
for that thread only (OpenMP keeps it per thread): one thread is fastest for the app's one-image
passes and avoids OpenMP spinning against the training thread.

Errors are of two kinds. The expected ones are about the user's input or machine, not the code:
every :class:`engine.errors.PixelchainError` (a damaged checkpoint, missing data, an ordering the
model cannot follow, ...), whose one-line message is shown as it is, plus ``OSError`` (a file that
cannot be read or written, a full disk) and ``MemoryError`` (the machine ran out), shown with
their type's name. None of them prints a traceback. Anything else is a bug: its message is shown
with its type's name and its traceback goes to stderr for the report.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.errors import PixelchainError

__all__ = ["Job", "Worker", "Cancelled", "EXPECTED_ERRORS"]


#: errors about the user's input or machine rather than the code: their message says everything, so
#: no traceback is printed for them (see the module docstring)
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (PixelchainError, OSError, MemoryError)


class Cancelled(Exception):
    """Raised inside a job function by :meth:`Job.check` once the job was cancelled."""


class Job:
    """One request: its id, function and the controls the GUI may change while it runs."""

    def __init__(self, job_id: int, fn: Callable[..., Any], args: tuple, kwargs: dict):
        self.id = job_id
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self._cancel = threading.Event()
        self._cond = threading.Condition()
        self._paused = False
        self._steps = 0
        self.delay = 0.0  #: seconds to wait after each yielded item

    # -- GUI side -------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = paused
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def step(self, n: int = 1) -> None:
        """While paused, let ``n`` more items through."""
        with self._cond:
            self._steps += n
            self._cond.notify_all()

    # -- worker side ----------------------------------------------------------------------------
    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def gate(self) -> bool:
        """Block while paused (unless a single step is granted); False once cancelled."""
        with self._cond:
            while self._paused and self._steps == 0 and not self._cancel.is_set():
                self._cond.wait(0.25)
            if self._steps:
                self._steps -= 1
        return not self._cancel.is_set()

    def pause_for(self, seconds: float) -> None:
        if seconds > 0:
            self._cancel.wait(seconds)


class _Runner(QObject):
    started = Signal(int)
    progress = Signal(int, object)
    result = Signal(int, object)
    error = Signal(int, str)
    finished = Signal(int, bool)

    def __init__(self, torch_threads: int | None):
        super().__init__()
        self.torch_threads = torch_threads

    @Slot(object)
    def run(self, job: Job) -> None:
        if self.torch_threads:
            # OpenMP's thread count is per calling thread: this sets it for this worker only.
            import torch

            torch.set_num_threads(self.torch_threads)
            self.torch_threads = None
        self.started.emit(job.id)
        if job.cancelled:
            self.finished.emit(job.id, True)
            return
        try:
            out = job.fn(job, *job.args, **job.kwargs)
            if hasattr(out, "__next__") and hasattr(out, "send"):
                out = self._drive(job, out)
            if not job.cancelled:
                self.result.emit(job.id, out)
        except Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 -- every failure is reported, the app keeps running
            if not job.cancelled:  # what a cancelled job raises is dropped, traceback and all
                if not isinstance(exc, EXPECTED_ERRORS):  # a bug: keep its traceback for the report
                    traceback.print_exc(file=sys.stderr)
                self.error.emit(job.id, _message(exc))
        self.finished.emit(job.id, job.cancelled)

    def _drive(self, job: Job, gen) -> Any:
        try:
            while True:
                if not job.gate():
                    raise Cancelled()
                try:
                    item = next(gen)
                except StopIteration as stop:
                    return stop.value
                if job.cancelled:
                    raise Cancelled()
                self.progress.emit(job.id, item)
                job.pause_for(job.delay)
        finally:
            gen.close()


def _message(exc: BaseException) -> str:
    """What the GUI shows: an engine error's own line; anything else with its type's name, which
    its text alone often leaves out (``KeyError: 'x'``, ``FileNotFoundError: [Errno 2] ...``)."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, PixelchainError) else f"{type(exc).__name__}: {text}"


class Worker(QObject):
    """A QThread with a queue of :class:`Job`; see the module docstring."""

    started = Signal(int)
    progress = Signal(int, object)
    result = Signal(int, object)
    error = Signal(int, str)
    finished = Signal(int, bool)
    _submit = Signal(object)

    def __init__(self, name: str, parent: QObject | None = None, torch_threads: int | None = None):
        super().__init__(parent)
        self.name = name
        self._thread = QThread()
        self._thread.setObjectName(f"pixelchain-{name}")
        self._runner = _Runner(torch_threads)
        self._runner.moveToThread(self._thread)
        self._submit.connect(self._runner.run)
        self._runner.started.connect(self._on_started)
        self._runner.progress.connect(self._on_progress)
        self._runner.result.connect(self._on_result)
        self._runner.error.connect(self._on_error)
        self._runner.finished.connect(self._on_finished)
        self._jobs: dict[int, Job] = {}
        self._next_id = 0
        self._thread.start()

    # -- API ----------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any, replace: bool = True, start_paused: bool = False, **kwargs: Any) -> Job:
        """Queue ``fn(job, *args, **kwargs)``; with ``replace`` every older job is cancelled.
        ``start_paused``: a generator job waits for :meth:`Job.step` before its first item."""
        if replace:
            self.cancel_all()
        self._next_id += 1
        job = Job(self._next_id, fn, args, kwargs)
        job._paused = start_paused
        self._jobs[job.id] = job
        self._submit.emit(job)
        return job

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel()

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and stop the thread; True when it ended within ``timeout_ms``."""
        self.cancel_all()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    # -- relays (GUI thread): drop what a cancelled job still sends --------------------------
    def _live(self, job_id: int) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and not job.cancelled

    @Slot(int)
    def _on_started(self, job_id: int) -> None:
        if job_id in self._jobs:
            self.started.emit(job_id)

    @Slot(int, object)
    def _on_progress(self, job_id: int, item: object) -> None:
        if self._live(job_id):
            self.progress.emit(job_id, item)

    @Slot(int, object)
    def _on_result(self, job_id: int, value: object) -> None:
        if self._live(job_id):
            self.result.emit(job_id, value)

    @Slot(int, str)
    def _on_error(self, job_id: int, message: str) -> None:
        if self._live(job_id):  # the job may have been cancelled after its thread sent this
            self.error.emit(job_id, message)

    @Slot(int, bool)
    def _on_finished(self, job_id: int, cancelled: bool) -> None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self.finished.emit(job_id, cancelled or job.cancelled)
