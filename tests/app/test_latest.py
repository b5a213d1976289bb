"""Latest request wins (app.latest.Latest): only the newest request's result is passed on, and only
while its key still describes what is on screen."""

from __future__ import annotations

import threading

from app.latest import Latest


def waiting(job, gate: threading.Event, value):
    gate.wait(5)
    return value


def steps(job, n: int):
    for i in range(n):
        yield i
    return n


def record(latest: Latest) -> dict[str, list]:
    seen: dict[str, list] = {"result": [], "progress": [], "error": [], "finished": []}
    latest.result.connect(lambda k, v: seen["result"].append((k, v)))
    latest.progress.connect(lambda k, v: seen["progress"].append((k, v)))
    latest.error.connect(lambda k, m: seen["error"].append((k, m)))
    latest.finished.connect(lambda k, c: seen["finished"].append((k, c)))
    return seen


def test_a_stale_result_is_dropped_and_the_newest_delivered(qtbot, worker):
    latest = Latest(worker, replace=False)  # the older job runs to its end: only its result is dropped
    seen = record(latest)
    gate = threading.Event()
    old = latest.submit("old", waiting, gate, "old value")
    new = latest.submit("new", waiting, gate, "new value")
    assert latest.pending == "new" and latest.busy and not old.cancelled
    finished_ids = []
    worker.finished.connect(lambda i, _c: finished_ids.append(i))
    with qtbot.waitSignal(latest.finished, timeout=5000) as blocker:
        gate.set()
    assert finished_ids == [old.id, new.id]  # both ran ...
    assert seen["result"] == [("new", "new value")]  # ... only the newest got through
    assert blocker.args == ["new", False] and seen["finished"] == [("new", False)]
    assert latest.shown == "new" and latest.pending is None and not latest.busy


def test_a_newer_request_cancels_the_older_one_by_default(qtbot, worker):
    latest = Latest(worker)
    seen = record(latest)
    gate = threading.Event()
    old = latest.submit(1, waiting, gate, "old")
    with qtbot.waitSignal(latest.finished, timeout=5000):
        new = latest.submit(2, waiting, gate, "new")
        gate.set()
    assert old.cancelled and not new.cancelled
    assert seen["result"] == [(2, "new")] and seen["finished"] == [(2, False)]


def test_a_result_whose_key_is_no_longer_current_is_dropped(qtbot, worker):
    current = ["canvas 1"]
    latest = Latest(worker, lambda key: key == current[0])
    seen = record(latest)
    gate = threading.Event()
    latest.submit("canvas 1", waiting, gate, "map of canvas 1")
    current[0] = "canvas 2"  # the user drew meanwhile
    with qtbot.waitSignal(latest.finished, timeout=5000):
        gate.set()
    assert seen["result"] == [] and latest.shown is None and latest.pending is None
    with qtbot.waitSignal(latest.result, timeout=5000):
        latest.submit("canvas 2", waiting, gate, "map of canvas 2")
    assert seen["result"] == [("canvas 2", "map of canvas 2")] and latest.shown == "canvas 2"
    assert not latest.wanted("canvas 2") and latest.wanted("canvas 3")


def test_progress_and_errors_carry_the_key(qtbot, worker):
    latest = Latest(worker)
    seen = record(latest)
    with qtbot.waitSignal(latest.finished, timeout=5000):
        latest.submit(("model", 3), steps, 3)
    assert seen["progress"] == [(("model", 3), 0), (("model", 3), 1), (("model", 3), 2)]
    assert seen["result"] == [(("model", 3), 3)]

    def boom(job):
        raise ValueError("no such pixel")

    with qtbot.waitSignal(latest.finished, timeout=5000):
        latest.submit("bad", boom)
    assert seen["error"] == [("bad", "ValueError: no such pixel")] and latest.pending is None
    assert latest.shown == ("model", 3)  # what is on screen is still the last result


def test_a_cancelled_request_passes_nothing_on(qtbot, worker):
    latest = Latest(worker)
    seen = record(latest)
    gate = threading.Event()
    job = latest.submit("k", waiting, gate, "v")
    latest.cancel()
    assert job.cancelled and not latest.busy and latest.pending is None
    with qtbot.waitSignal(worker.finished, timeout=5000):
        gate.set()
    assert seen == {"result": [], "progress": [], "error": [], "finished": []}
    latest.forget()
    assert latest.wanted("k")


def test_requests_of_other_kinds_on_the_same_worker_are_not_touched(qtbot, worker):
    a, b = Latest(worker, replace=False), Latest(worker, replace=False)
    seen_a, seen_b = record(a), record(b)
    gate = threading.Event()
    a.submit("a", waiting, gate, "A")
    b.submit("b", waiting, gate, "B")  # newer, but of another kind: "a" is still a's newest
    plain = worker.submit(lambda job: "C", replace=False)
    with qtbot.waitSignal(worker.finished, timeout=5000, check_params_cb=lambda i, _c: i == plain.id):
        gate.set()
    assert seen_a["result"] == [("a", "A")] and seen_b["result"] == [("b", "B")]


def test_replacing_cancels_only_the_own_older_requests(qtbot, worker):
    """Two kinds of request on one worker: a newer request of one kind cancels that kind's older
    one and leaves the other kind's job running."""
    a, b = Latest(worker), Latest(worker)
    seen_a = record(a)
    gate = threading.Event()
    job_a = a.submit("a", waiting, gate, "A")
    old_b = b.submit("b1", waiting, gate, "B1")
    new_b = b.submit("b2", waiting, gate, "B2")
    assert old_b.cancelled and not new_b.cancelled and not job_a.cancelled
    with qtbot.waitSignal(b.finished, timeout=5000):
        gate.set()
    assert seen_a["result"] == [("a", "A")]
