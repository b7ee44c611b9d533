"""Generated scenario formulas: valid, capped, with their scale-down policy, and scaling as
described, evaluated over histories with the targets worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from emulator.autoscale import DEALLOCATION_OPTIONS, evaluate_formula, parse_formula
from launcher.autoscale import (
    SCENARIOS,
    active_tasks_formula,
    default_formula,
    low_priority_first_formula,
    pending_tasks_formula,
    scenario_formula,
    workday_formula,
)
from tests.autoscale.histories import NOW, history


def targets(formula: str, **kwargs: object) -> tuple[int, int, str]:
    samples = history(**kwargs.pop("samples", {}))  # type: ignore[arg-type]
    now = kwargs.pop("now", NOW)
    result = evaluate_formula(formula, samples, now, **kwargs)  # type: ignore[arg-type]
    assert result.error is None, result.error
    return result.target_dedicated, result.target_low_priority, result.node_deallocation_option


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("deallocation", DEALLOCATION_OPTIONS)
def test_every_scenario_parses_caps_and_sets_its_policy(name: str, deallocation: str) -> None:
    formula = scenario_formula(name, 4, deallocation=deallocation)
    assert len(parse_formula(formula).statements) <= 100
    busy = {"PendingTasks": 500, "ActiveTasks": 500, "RunningTasks": 0,
            "PreemptedNodeCount": 0}
    dedicated, low, policy = targets(formula, samples=busy)
    assert policy == deallocation
    assert dedicated + low == 4  # at most max_nodes, and every scenario uses them all here


def test_default_formula_is_pending_tasks_with_taskcompletion() -> None:
    assert default_formula(7) == pending_tasks_formula(7)
    assert "$NodeDeallocationOption = taskcompletion;" in default_formula(7)
    assert "maxNodes = 7;" in default_formula(7)


def test_pending_tasks_options() -> None:
    # min 2: idle still keeps max(2, 0) = 2
    assert targets(pending_tasks_formula(10, min_nodes=2), samples={"PendingTasks": 0})[0] == 2
    # start 3 on a new pool without samples: max(3, 0) = 3; with a full window of zeros: 0
    formula = pending_tasks_formula(10, start_nodes=3)
    assert targets(formula)[0] == 3
    assert targets(formula, samples={"PendingTasks": 0})[0] == 0
    # low_priority: the same demand on Spot nodes; 9 tasks, 4 slots -> (9 + 3)/4 = 3
    assert targets(pending_tasks_formula(10, low_priority=True),
                   samples={"PendingTasks": 9, "TaskSlotsPerNode": 4})[:2] == (0, 3)
    # a 10-minute window: 20 samples [0 x10, 6 x10] -> max(0, avg 3) = 3
    assert targets(pending_tasks_formula(10, window_minutes=10),
                   samples={"PendingTasks": [0] * 10 + [6] * 10})[0] == 3


def test_active_tasks_adds_nodes_for_queued_tasks_only() -> None:
    formula = active_tasks_formula(10)
    # 2 nodes x 4 slots, 5 running -> 3 free slots; 7 queued -> (7 - 3 + 3)/4 = 1.75 more
    # -> 2 + 1.75 = 3.75 -> 3
    assert targets(formula, samples={"ActiveTasks": 7, "RunningTasks": 5, "TaskSlotsPerNode": 4},
                   target_dedicated=2)[0] == 3
    # queued tasks fit in the free slots: extra = max(0, (2 - 3 + 3)/4) = 0.5 -> 2.5 -> 2
    assert targets(formula, samples={"ActiveTasks": 2, "RunningTasks": 5, "TaskSlotsPerNode": 4},
                   target_dedicated=2)[0] == 2
    # nothing queued: 0 (running tasks finish first under taskcompletion)
    assert targets(formula, samples={"ActiveTasks": 0, "RunningTasks": 5},
                   target_dedicated=2) == (0, 0, "taskcompletion")
    # min_nodes floor
    assert targets(active_tasks_formula(10, min_nodes=1), samples={"ActiveTasks": 0})[0] == 1


def test_workday_examples_by_hand() -> None:
    formula = workday_formula(6, utc_offset_hours=-6, off_hours_nodes=1)
    # Monday 13:00 UTC is 07:00 at UTC-6: off hours -> 1
    assert targets(formula, now=datetime(2026, 1, 5, 13, 0, tzinfo=UTC))[0] == 1
    # Monday 15:00 UTC is 09:00: working -> 6
    assert targets(formula, now=datetime(2026, 1, 5, 15, 0, tzinfo=UTC))[0] == 6
    # Tuesday 03:00 UTC is Monday 21:00: off -> 1
    assert targets(formula, now=datetime(2026, 1, 6, 3, 0, tzinfo=UTC))[0] == 1
    india = workday_formula(6, utc_offset_hours=5.5)
    # Monday 04:00 UTC is 09:30 at UTC+5:30 -> 6; 12:45 UTC is 18:15 -> 0
    assert targets(india, now=datetime(2026, 1, 5, 4, 0, tzinfo=UTC))[0] == 6
    assert targets(india, now=datetime(2026, 1, 5, 12, 45, tzinfo=UTC))[0] == 0
    tokyo = workday_formula(6, utc_offset_hours=9)
    # Friday 23:00 UTC is Saturday 08:00 at UTC+9: weekend -> 0
    assert targets(tokyo, now=datetime(2026, 1, 9, 23, 0, tzinfo=UTC))[0] == 0
    # Sunday 23:30 UTC is Monday 08:30 at UTC+9 -> 6
    assert targets(tokyo, now=datetime(2026, 1, 4, 23, 30, tzinfo=UTC))[0] == 6
    # Monday 10:00 UTC, no offset -> 6; 07:59 -> 0
    utc = workday_formula(6)
    assert targets(utc) == (6, 0, "taskcompletion")
    assert targets(utc, now=datetime(2026, 1, 5, 7, 59, tzinfo=UTC))[0] == 0


def test_low_priority_first_keeps_a_dedicated_floor() -> None:
    formula = low_priority_first_formula(10, dedicated_floor=2)
    # idle: floor 2 dedicated, low = max(0, min(8, 0 - 2)) = 0
    assert targets(formula, samples={"PendingTasks": 0}) == (2, 0, "taskcompletion")
    # 7 pending, 1 slot: 7 nodes -> 2 dedicated + 5 low-priority
    assert targets(formula, samples={"PendingTasks": 7})[:2] == (2, 5)
    # 40 pending: 2 dedicated + min(8, 38) = 8 low-priority
    assert targets(formula, samples={"PendingTasks": 40})[:2] == (2, 8)
    # 3 preempted: dedicated 2 + 3 = 5, low = min(10 - 5, 40 - 5) = 5
    assert targets(formula, samples={"PendingTasks": 40, "PreemptedNodeCount": 3})[:2] == (5, 5)


@pytest.mark.parametrize(("call", "words"), [
    (lambda: scenario_formula("cpu", 3), "unknown autoscale scenario 'cpu'"),
    (lambda: scenario_formula("workday", 3, dedicated_floor=1), "unexpected keyword"),
    (lambda: pending_tasks_formula(0), "max_nodes must be a whole number from 1"),
    (lambda: pending_tasks_formula(3, min_nodes=4), "min_nodes must be a whole number from 0 to 3"),
    (lambda: pending_tasks_formula(3, deallocation="later"), "deallocation must be one of"),
    (lambda: workday_formula(3, utc_offset_hours=15), "utc_offset_hours must be between"),
    (lambda: workday_formula(3, start_hour=18, end_hour=8), "end_hour must be"),
    (lambda: low_priority_first_formula(3, dedicated_floor=5), "dedicated_floor"),
])
def test_bad_scenario_options_are_refused(call: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        call()  # type: ignore[operator]
