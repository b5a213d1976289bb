"""The QThread worker: progress/result/error/finished, cancellation between yields, newest wins,
pause and single steps."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from engine.data import DataError
from engine.models import UnknownFamily
from engine.tasks.compress import CompressionError


def counting(job, n, gate=None):
    for i in range(n):
        if gate is not None:
            gate.wait(5)
        yield i
    return "done"


def test_generator_job_reports_progress_then_result(qtbot, worker):
    items, results = [], []
    worker.progress.connect(lambda _i, v: items.append(v))
    worker.result.connect(lambda _i, v: results.append(v))
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        job = worker.submit(counting, 5)
    assert blocker.args == [job.id, False]
    assert items == [0, 1, 2, 3, 4] and results == ["done"]


def test_error_is_reported_and_the_worker_keeps_going(qtbot, worker):
    def boom(job):
        raise ValueError("bad input")

    with qtbot.waitSignal(worker.error, timeout=5000) as blocker:
        worker.submit(boom, replace=False)
    assert "bad input" in blocker.args[1]
    with qtbot.waitSignal(worker.result, timeout=5000) as blocker:
        worker.submit(lambda job: 42, replace=False)
    assert blocker.args[1] == 42


def _run_to_the_end(qtbot, worker, fn, *args):
    """Submit ``fn`` and wait for its ``finished``; its thread emits that after everything else it
    does for the job (the error signal, any traceback), so nothing of the job can still come."""
    errors = []
    worker.error.connect(lambda i, m: errors.append((i, m)))
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        job = worker.submit(fn, *args, replace=False)
    assert blocker.args[0] == job.id
    return job, [m for i, m in errors if i == job.id]


def _raise(job, exc):
    raise exc


@pytest.mark.parametrize("exc", [
    DataError("cannot download binarized_mnist_test.amat: check the network"),
    CompressionError("not a pixelchain code file"),  # these two were once missing from one of two lists
    UnknownFamily("unknown model family 'gan'"),
], ids=lambda e: type(e).__name__)
def test_engine_errors_give_their_own_line_without_a_traceback(qtbot, worker, capfd, exc):
    _job, errors = _run_to_the_end(qtbot, worker, _raise, exc)
    assert errors == [str(exc)]
    assert "Traceback" not in capfd.readouterr().err


def test_the_users_machine_fails_without_a_traceback_and_bugs_keep_theirs(qtbot, worker, capfd):
    _job, errors = _run_to_the_end(qtbot, worker, _raise, FileNotFoundError(2, "No such file or directory", "x.png"))
    assert errors == ["FileNotFoundError: [Errno 2] No such file or directory: 'x.png'"]
    assert "Traceback" not in capfd.readouterr().err
    _job, errors = _run_to_the_end(qtbot, worker, lambda job: {}["no such key"])
    assert errors == ["KeyError: 'no such key'"]
    assert "Traceback" in capfd.readouterr().err


def test_a_cancelled_jobs_error_is_dropped_and_not_printed(qtbot, worker, capfd):
    """What a job raises after it was cancelled (a generator failing as it is closed, a stale
    request failing on its way out) reaches neither the GUI nor stderr."""
    running, gate = threading.Event(), threading.Event()

    def fails_late(job):
        running.set()
        gate.wait(5)
        return {}["stale"]  # a bug, so a traceback would be printed were it reported

    errors = []
    worker.error.connect(lambda i, m: errors.append((i, m)))
    job = worker.submit(fails_late)
    assert running.wait(5)  # cancelled before it started, a job never runs at all
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        job.cancel()
        gate.set()
    assert blocker.args == [job.id, True]
    assert errors == [] and "Traceback" not in capfd.readouterr().err


def test_an_error_sent_just_before_the_cancel_is_dropped_too(qtbot, worker):
    """The job fails while still live, and is cancelled before the GUI thread gets to the error."""
    sent = threading.Event()
    worker._runner.error.connect(lambda *_: sent.set(), Qt.ConnectionType.DirectConnection)  # on the worker thread
    errors = []
    worker.error.connect(lambda i, m: errors.append((i, m)))
    job = worker.submit(_raise, DataError("a stale request's error"))
    assert sent.wait(5)  # the GUI thread has not run its event loop since: the error is still queued
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        job.cancel()
    assert blocker.args == [job.id, True] and errors == []


def test_cancel_between_yields_and_stale_results_are_dropped(qtbot, worker):
    gate = threading.Event()
    results = []
    worker.result.connect(lambda i, v: results.append((i, v)))
    first = worker.submit(counting, 1000, gate)
    second = worker.submit(lambda job: "newest")  # replace=True cancels the first
    assert first.cancelled
    gate.set()
    qtbot.waitUntil(lambda: not worker.busy, timeout=5000)
    assert results == [(second.id, "newest")]


def test_pause_and_single_steps(qtbot, worker):
    items = []
    worker.progress.connect(lambda _i, v: items.append(v))
    job = worker.submit(counting, 100, start_paused=True)
    job.step(3)
    qtbot.waitUntil(lambda: len(items) == 3, timeout=5000)
    job.step(2)
    qtbot.waitUntil(lambda: len(items) == 5, timeout=5000)
    assert worker.busy and job.paused
    job.set_paused(False)
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        pass
    assert blocker.args[1] is False and items == list(range(100))


def test_cancel_while_paused_ends_the_job(qtbot, worker):
    items = []
    worker.progress.connect(lambda _i, v: items.append(v))
    job = worker.submit(counting, 100, start_paused=True)
    job.step(2)
    qtbot.waitUntil(lambda: len(items) == 2, timeout=5000)
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        job.cancel()
    assert blocker.args == [job.id, True] and items == [0, 1]
