"""Benchmark figures and the context sections receive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec


class Figure(msgspec.Struct, frozen=True):
    """One measured figure beside the baseline measured in the same run.

    ``ratio`` is ``value / baseline``. ``higher_is_better`` says which way
    the goal points; ``goal`` is the target ratio (or absolute bound, with
    ``goal_absolute``), and ``ok`` whether this run met every bound.
    """

    name: str
    unit: str
    value: float
    baseline_name: str
    baseline: float
    ratio: float
    goal: str
    ok: bool
    higher_is_better: bool = True
    notes: str = ""


def figure(
    name: str,
    unit: str,
    value: float,
    baseline_name: str,
    baseline: float,
    *,
    goal_ratio: float | None,
    higher_is_better: bool = True,
    goal_absolute: float | None = None,
    notes: str = "",
) -> Figure:
    """Build a :class:`Figure`, judging the ratio (and absolute bound) goals.

    ``goal_ratio=None`` reports the figure beside its baseline with no goal.
    """
    ratio = value / baseline if baseline else float("inf")
    if goal_ratio is None:
        return Figure(
            name=name, unit=unit, value=value, baseline_name=baseline_name, baseline=baseline,
            ratio=ratio, goal="reported", ok=True, higher_is_better=higher_is_better, notes=notes,
        )  # fmt: skip
    ok = ratio >= goal_ratio if higher_is_better else ratio <= goal_ratio
    goal = f"ratio {'>=' if higher_is_better else '<='} {goal_ratio:g}"
    if goal_absolute is not None:
        ok = ok and (value >= goal_absolute if higher_is_better else value <= goal_absolute)
        goal += f" and {'>=' if higher_is_better else '<='} {goal_absolute} {unit}"
    return Figure(
        name=name, unit=unit, value=value, baseline_name=baseline_name, baseline=baseline,
        ratio=ratio, goal=goal, ok=ok, higher_is_better=higher_is_better, notes=notes,
    )  # fmt: skip


@dataclass
class BenchContext:
    """What every section gets: the Redis URL, the scale, a log function."""

    redis_url: str
    quick: bool = False
    concurrency: int = 64
    log: Callable[[str], None] = field(default=print)
