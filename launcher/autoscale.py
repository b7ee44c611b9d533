"""Autoscale formulas generated for common scenarios; the default of `create_pool`.

Writing a Batch autoscale formula by hand is error-prone and a mistake only shows on Azure,
one evaluation interval at a time, so the common cases are generated here, each with a
maximum and a scale-down policy (`$NodeDeallocationOption`), and every generated formula is
parsed before it is returned.

Scenarios (`scenario_formula(name, max_nodes, **options)`):

- `pending_tasks`: nodes for the pending (queued + running) tasks, `$TaskSlotsPerNode` tasks
  per node, between `min_nodes` and `max_nodes`; back to `min_nodes` when idle.
- `active_tasks`: grow by the queued tasks that the current nodes' free slots cannot take;
  shrink to `min_nodes` when nothing is queued (running tasks finish first under
  `taskcompletion`).
- `workday`: `max_nodes` on weekdays from `start_hour` to `end_hour` at `utc_offset_hours`,
  `off_hours_nodes` otherwise.
- `low_priority_first`: the demand of `pending_tasks` on low-priority (Spot) nodes over a
  floor of `dedicated_floor` dedicated nodes; each preempted node is replaced by a dedicated
  one, the total staying under `max_nodes`.

Batch has no floor/ceil: `(n + slots - 1) / slots` is a ceiling once the service truncates
the fractional target, as the Azure docs' own examples rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.autoscale import DEALLOCATION_OPTIONS, FormulaSyntaxError, parse_formula

DEFAULT_DEALLOCATION = "taskcompletion"
SAMPLE_WINDOW_MINUTES = 3
# Fewer samples than this percentage in the window: trust only the newest sample.
REQUIRED_SAMPLE_PERCENT = 70
MAX_NODES_LIMIT = 10_000


def _number(value: float) -> str:
    """A formula literal: `3`, `-5.5`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check_count(name: str, value: int, low: int = 0, high: int = MAX_NODES_LIMIT) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def _check_deallocation(option: str) -> None:
    if option not in DEALLOCATION_OPTIONS:
        raise ValueError(
            f"deallocation must be one of {', '.join(DEALLOCATION_OPTIONS)}, got {option!r}"
        )


def _validated(formula: str) -> str:
    """Generated formulas must parse: a failure here is a bug in this module."""
    try:
        parse_formula(formula)
    except FormulaSyntaxError as exc:  # pragma: no cover - guarded by the tests
        raise RuntimeError(f"generated an invalid autoscale formula: {exc}\n{formula}") from exc
    return formula


def _demand_lines(metric: str, window_minutes: int) -> list[str]:
    """Statements that set `tasks` (recent demand of `metric`) and `slots`."""
    return [
        "slots = $TaskSlotsPerNode;",
        f"window = TimeInterval_Minute * {window_minutes};",
        f"// Fewer than {REQUIRED_SAMPLE_PERCENT}% of the samples in the window (a new pool):",
        "// trust the newest sample; otherwise the larger of it and the window's average.",
        f"samplePercent = ${metric}.GetSamplePercent(window);",
        f"lastTasks = max(0, ${metric}.GetSample(1));",
        f"tasks = samplePercent < {REQUIRED_SAMPLE_PERCENT} ? lastTasks : "
        f"max(lastTasks, avg(${metric}.GetSample(window)));",
    ]


def pending_tasks_formula(
    max_nodes: int,
    *,
    min_nodes: int = 0,
    start_nodes: int = 0,
    window_minutes: int = SAMPLE_WINDOW_MINUTES,
    low_priority: bool = False,
    deallocation: str = DEFAULT_DEALLOCATION,
) -> str:
    """Nodes for the pending tasks; `start_nodes` while the pool has too few samples."""
    _check_count("max_nodes", max_nodes, 1)
    _check_count("min_nodes", min_nodes, 0, max_nodes)
    _check_count("start_nodes", start_nodes, 0, max_nodes)
    _check_count("window_minutes", window_minutes, 1, 24 * 60)
    _check_deallocation(deallocation)
    scaled, fixed = (
        ("$TargetLowPriorityNodes", "$TargetDedicatedNodes")
        if low_priority
        else ("$TargetDedicatedNodes", "$TargetLowPriorityNodes")
    )
    lines = [
        f"// batchlaunch autoscale: pending_tasks, max {max_nodes} nodes, {deallocation}",
        f"maxNodes = {max_nodes};",
        f"minNodes = {min_nodes};",
        f"startNodes = {start_nodes};",
        *_demand_lines("PendingTasks", window_minutes),
        "nodes = (tasks + slots - 1) / slots;",
        f"nodes = samplePercent < {REQUIRED_SAMPLE_PERCENT} ? max(startNodes, nodes) : nodes;",
        f"{scaled} = max(minNodes, min(maxNodes, nodes));",
        f"{fixed} = 0;",
        f"$NodeDeallocationOption = {deallocation};",
    ]
    return _validated("\n".join(lines) + "\n")


def active_tasks_formula(
    max_nodes: int,
    *,
    min_nodes: int = 0,
    window_minutes: int = SAMPLE_WINDOW_MINUTES,
    deallocation: str = DEFAULT_DEALLOCATION,
) -> str:
    """Grow by the queued tasks the current nodes cannot take; shrink when none are queued."""
    _check_count("max_nodes", max_nodes, 1)
    _check_count("min_nodes", min_nodes, 0, max_nodes)
    _check_count("window_minutes", window_minutes, 1, 24 * 60)
    _check_deallocation(deallocation)
    lines = [
        f"// batchlaunch autoscale: active_tasks, max {max_nodes} nodes, {deallocation}",
        f"maxNodes = {max_nodes};",
        f"minNodes = {min_nodes};",
        *_demand_lines("ActiveTasks", window_minutes),
        "running = max(0, $RunningTasks.GetSample(1));",
        "current = $TargetDedicatedNodes;",
        "freeSlots = max(0, current * slots - running);",
        "extraNodes = max(0, (tasks - freeSlots + slots - 1) / slots);",
        "nodes = tasks > 0 ? current + extraNodes : 0;",
        "$TargetDedicatedNodes = max(minNodes, min(maxNodes, nodes));",
        "$TargetLowPriorityNodes = 0;",
        f"$NodeDeallocationOption = {deallocation};",
    ]
    return _validated("\n".join(lines) + "\n")


def workday_formula(
    max_nodes: int,
    *,
    utc_offset_hours: float = 0.0,
    off_hours_nodes: int = 0,
    start_hour: int = 8,
    end_hour: int = 18,
    deallocation: str = DEFAULT_DEALLOCATION,
) -> str:
    """`max_nodes` on weekdays (Monday to Friday) from start_hour to end_hour local time."""
    _check_count("max_nodes", max_nodes, 1)
    _check_count("off_hours_nodes", off_hours_nodes, 0, max_nodes)
    _check_count("start_hour", start_hour, 0, 23)
    _check_count("end_hour", end_hour, start_hour + 1, 24)
    if not -14 <= utc_offset_hours <= 14:
        raise ValueError(f"utc_offset_hours must be between -14 and 14, got {utc_offset_hours}")
    _check_deallocation(deallocation)
    lines = [
        f"// batchlaunch autoscale: workday, max {max_nodes} nodes, {deallocation}",
        f"// Weekdays {start_hour}:00-{end_hour}:00 at UTC{utc_offset_hours:+g}",
        f"curTime = time() + ({_number(utc_offset_hours)}) * TimeInterval_Hour;",
        f"workHours = curTime.hour >= {start_hour} && curTime.hour < {end_hour};",
        "isWeekday = curTime.weekday >= 1 && curTime.weekday <= 5;",
        f"$TargetDedicatedNodes = workHours && isWeekday ? {max_nodes} : {off_hours_nodes};",
        "$TargetLowPriorityNodes = 0;",
        f"$NodeDeallocationOption = {deallocation};",
    ]
    return _validated("\n".join(lines) + "\n")


def low_priority_first_formula(
    max_nodes: int,
    *,
    dedicated_floor: int = 1,
    window_minutes: int = SAMPLE_WINDOW_MINUTES,
    deallocation: str = DEFAULT_DEALLOCATION,
) -> str:
    """Demand on low-priority nodes over a dedicated floor; preempted nodes go dedicated."""
    _check_count("max_nodes", max_nodes, 1)
    _check_count("dedicated_floor", dedicated_floor, 0, max_nodes)
    _check_count("window_minutes", window_minutes, 1, 24 * 60)
    _check_deallocation(deallocation)
    lines = [
        f"// batchlaunch autoscale: low_priority_first, max {max_nodes} nodes, "
        f"{dedicated_floor} dedicated, {deallocation}",
        f"maxNodes = {max_nodes};",
        f"dedicatedFloor = {dedicated_floor};",
        *_demand_lines("PendingTasks", window_minutes),
        "nodes = (tasks + slots - 1) / slots;",
        "preempted = max(0, $PreemptedNodeCount.GetSample(1));",
        "dedicated = min(maxNodes, dedicatedFloor + preempted);",
        "$TargetDedicatedNodes = dedicated;",
        "$TargetLowPriorityNodes = max(0, min(maxNodes - dedicated, nodes - dedicated));",
        f"$NodeDeallocationOption = {deallocation};",
    ]
    return _validated("\n".join(lines) + "\n")


SCENARIOS: dict[str, Callable[..., str]] = {
    "pending_tasks": pending_tasks_formula,
    "active_tasks": active_tasks_formula,
    "workday": workday_formula,
    "low_priority_first": low_priority_first_formula,
}


def scenario_formula(name: str, max_nodes: int, **options: Any) -> str:
    """The formula of a named scenario; ValueError for an unknown name or bad option."""
    try:
        build = SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown autoscale scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
        ) from None
    try:
        return build(max_nodes, **options)
    except TypeError as exc:
        raise ValueError(f"scenario {name}: {exc}") from None


def default_formula(max_nodes: int) -> str:
    """What `create_pool` uses when autoscale is on and no formula is given: dedicated
    nodes for the pending tasks up to `max_autoscale_nodes`, none when idle, and running
    tasks allowed to finish before a node is removed (`taskcompletion`)."""
    return pending_tasks_formula(max_nodes)
