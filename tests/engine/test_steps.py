"""engine.steps: running a progress generator to its end, and the times progress reports show."""

from __future__ import annotations

import math

from engine.steps import drain, fmt_time


def test_drain_collects_what_a_generator_yields_and_returns():
    def gen():
        yield 1
        yield 2
        return "done"

    assert drain(gen()) == ([1, 2], "done")


def test_fmt_time_minutes_hours_and_unknown():
    assert fmt_time(0) == "0:00"
    assert fmt_time(59.6) == "1:00"
    assert fmt_time(754) == "12:34"
    assert fmt_time(3600) == "1:00:00"
    assert fmt_time(2 * 3600 + 5 * 60 + 9) == "2:05:09"
    assert fmt_time(math.inf) == "?" and fmt_time(math.nan) == "?"
