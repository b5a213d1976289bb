"""The QThread worker: progress/result/error/finished, cancellation between yields, newest wins,
pause and single steps."""

from __future__ import annotations

import threading


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


def test_expected_errors_give_their_message_without_a_traceback_bugs_keep_theirs(qtbot, worker, capfd):
    from engine.data import DataError

    def missing(job):
        raise DataError("cannot download binarized_mnist_test.amat: check the network")

    def bug(job):
        return {}["no such key"]

    with qtbot.waitSignal(worker.error, timeout=5000) as blocker:
        worker.submit(missing, replace=False)
    assert "check the network" in blocker.args[1]
    qtbot.wait(50)
    assert "Traceback" not in capfd.readouterr().err
    with qtbot.waitSignal(worker.error, timeout=5000):
        worker.submit(bug, replace=False)
    qtbot.wait(50)
    assert "Traceback" in capfd.readouterr().err


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
