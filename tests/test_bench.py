"""``kvconf bench``: goals are judged right, and a quick run of every section works.

Speed goals are for benchmarks, not tests: the smoke run checks that every
section runs against its private redis-server and reports well-formed
figures beside same-run baselines, never whether a goal was met.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kvconf.bench import SECTIONS
from kvconf.bench._model import figure

from .redis_server import redis_binary

ENV = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}


def test_ratio_goals_are_judged_in_the_right_direction() -> None:
    fast = figure("put", "req/s", 60.0, "healthz", 100.0, goal_ratio=0.5)
    assert (fast.ratio, fast.ok, fast.goal) == (0.6, True, "ratio >= 0.5")
    assert not figure("put", "req/s", 40.0, "healthz", 100.0, goal_ratio=0.5).ok
    cheap = figure("get", "ns", 45.0, "dict.get", 25.0, goal_ratio=2.0, higher_is_better=False)
    assert (cheap.ratio, cheap.ok) == (1.8, True)
    assert not figure("get", "ns", 55.0, "dict.get", 25.0, goal_ratio=2.0,
                      higher_is_better=False).ok  # fmt: skip


def test_an_absolute_bound_must_hold_too() -> None:
    slow = figure("p99", "µs", 2100.0, "raw", 2000.0, goal_ratio=1.5, higher_is_better=False,
                  goal_absolute=2000)  # fmt: skip
    assert slow.ratio < 1.5
    assert not slow.ok
    assert slow.goal == "ratio <= 1.5 and <= 2000 µs"
    reported = figure("p50", "µs", 300.0, "raw", 100.0, goal_ratio=None, higher_is_better=False)
    assert (reported.goal, reported.ok, reported.ratio) == ("reported", True, 3.0)


def test_an_unknown_section_is_invalid_input() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvconf", "bench", "--only", "store,nope"],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert done.returncode == 5
    assert "nope" in done.stderr


def test_a_quick_run_of_every_section_reports_well_formed_figures() -> None:
    redis_binary()
    done = subprocess.run(
        [sys.executable, "-m", "kvconf", "bench", "--quick", "--json"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert list(report["sections"]) == list(SECTIONS)
    figures = [f for fs in report["sections"].values() for f in fs]
    for f in figures:
        assert f["value"] > 0, f
        assert f["baseline"] > 0, f
        assert f["ratio"] == pytest.approx(f["value"] / f["baseline"]), f
        assert f["baseline_name"], f
        assert f["unit"], f
        assert isinstance(f["ok"], bool), f
    assert report["ok"] == all(f["ok"] for f in figures)
