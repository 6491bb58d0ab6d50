"""Latency repetitions: the interval and when it is tight enough to rank a trial."""

from __future__ import annotations

import pytest

from edgec.search.device import interval, settled, summarize


def test_interval_is_a_student_t_interval():
    mean, lo, hi = interval([1.0, 1.2, 1.1])
    assert mean == pytest.approx(1.1)
    assert lo == pytest.approx(1.1 - 4.303 * 0.1 / 3 ** 0.5, rel=1e-3)
    assert hi - mean == pytest.approx(mean - lo)
    assert interval([2.0]) == (2.0, 2.0, 2.0)


def test_repetitions_stop_once_the_trial_ranks_against_the_front():
    kw = dict(min_runs=3, max_runs=6, rtol=0.01)
    assert settled([1.0, 1.5], [], None, **kw) is None  # below min_runs
    assert "within" in settled([1.0, 1.0, 1.0], [1.0], None, **kw)
    noisy = [1.0, 1.5, 1.2]
    assert "clear of the front" in settled(noisy, [5.0, 0.1], None, **kw)
    assert settled(noisy, [1.2], None, **kw) is None  # a front latency inside: measure again
    assert settled(noisy, [], 1.2, **kw) is None  # the limit inside too
    assert "6 runs" in settled(noisy * 2, [1.2], None, **kw)
    # nothing to rank against (a baseline, the first trial): only the tolerance or max_runs end them
    assert settled(noisy, [], None, **kw) is None
    assert settled(noisy * 2, [], None, **kw) == "6 runs"


def test_summary_of_runs_without_a_power_sensor():
    def report(median, p90):
        return {"latency_ms": {"median": median, "p90": p90, "count": 100}, "power": {"available": False,
                "reason": "no sensor"}, "device": {"model": "cpu"}, "runtime": {"name": "litert", "threads": 2}}

    got = summarize([("local", report(1.0, 1.5)), ("local", report(1.2, 1.7))], "why", 0.5)
    assert got["p50_ms"] == pytest.approx(1.1) and got["p90_ms"] == pytest.approx(1.6)
    assert got["energy_mj"] is None and got["power"] == {"available": False, "reason": "no sensor"}
    assert got["devices"] == ["local"] and len(got["runs"]) == 2
