"""The worker jobs' shared pieces: every job lives in app/jobs.py, and one throttle limits how
often the animated ones report."""

from __future__ import annotations

import ast
from pathlib import Path

import app.jobs as jobs

ROOT = Path(__file__).resolve().parents[2]


def test_the_throttle_lets_one_item_through_per_interval_and_every_forced_one(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: now[0])
    t = jobs.Throttle(0.05)
    assert t.due()  # the first item always goes
    now[0] += 0.01
    assert not t.due()
    assert t.due(force=True)  # the last item, a paused run: always
    now[0] += 0.049
    assert not t.due()  # the interval counts from the forced item
    now[0] += 0.002
    assert t.due() and not t.due()


def test_every_worker_job_is_defined_in_jobs_py():
    """A function whose name ends in ``_job`` (what the app submits to its workers) is defined in
    app/jobs.py and nowhere else in app/."""
    elsewhere = []
    for path in (ROOT / "app").rglob("*.py"):
        if path.name == "jobs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_job"):
                elsewhere.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert elsewhere == []
    # ... and every one of them is exported (the list of jobs is the module's __all__)
    defined = {node.name for node in ast.parse((ROOT / "app" / "jobs.py").read_text(encoding="utf-8")).body
               if isinstance(node, ast.FunctionDef) and node.name.endswith("_job")}
    assert defined == {n for n in jobs.__all__ if n.endswith("_job")} and len(defined) >= 15
