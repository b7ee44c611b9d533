"""Real-world formulas evaluated over sample histories, targets worked out by hand.

Formulas (tests/autoscale/data, each file names its source): the seed's AzureClusterlessHPC
formula, the CloudClient default, the Azure docs page's samples and examples 1-4, the REST
reference's evaluate example, and batchlaunch's own default. Windows: a look-back of S
seconds holds S/30 possible samples; history() puts samples at now, now-30s, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from emulator.autoscale import INSUFFICIENT_SAMPLES, SampleHistory, evaluate_formula
from emulator.autoscale.errors import EVALUATION_ERROR
from launcher.autoscale import default_formula
from tests.autoscale.histories import NOW, formula, gap_history, history


@dataclass
class Case:
    id: str
    source: str  # a data file name, or "default:N" for launcher.autoscale.default_formula(N)
    history: SampleHistory
    dedicated: int
    low_priority: int
    deallocation: str
    now: datetime = NOW
    start: dict[str, float] = field(default_factory=dict)  # starting targets
    results: dict[str, str] = field(default_factory=dict)  # name -> printed value


def _text(source: str) -> str:
    if source.startswith("default:"):
        return default_formula(int(source.split(":")[1]))
    return formula(source)


SEED = "seed_clusterlesshpc_pending.txt"
CLOUD = "cloudclient_default.txt"
PENDING = "docs_pending_tasks.txt"
PREEMPTED = "docs_preempted_nodes.txt"
CPU = "docs_cpu_total_dedicated.txt"
EX1 = "docs_example1_time_based.txt"
EX2 = "docs_example2_task_based.txt"
EX3 = "docs_example3_parallel_tasks.txt"
EX4 = "docs_example4_initial_pool_size.txt"
REST = "docs_rest_evaluate_cpu.txt"

CASES = [
    # --- seed 001: 30 s window = 1 possible sample (the one at `now`) ----------------------
    # no samples: percent 0 < 70 -> startingNumberOfVMs 1; min(10, 1) = 1
    Case("seed-empty", SEED, history(), 1, 0, "taskcompletion",
         results={"pendingTaskSamplePercent": "0", "pendingTaskSamples": "1"}),
    # pending 7 at now: percent 100 -> avg([7]) = 7; min(10, 7) = 7
    Case("seed-7", SEED, history(PendingTasks=7), 7, 0, "taskcompletion"),
    # pending 25: min(10, 25) = 10
    Case("seed-cap", SEED, history(PendingTasks=25), 10, 0, "taskcompletion"),
    # newest sample 60 s old: the 30 s window is empty -> percent 0 -> 1
    Case("seed-stale", SEED, gap_history("PendingTasks", [9, 9, 9], skip=2), 1, 0,
         "taskcompletion"),
    # [3 at now, 9 at -30s]: the window (now-30s, now] holds only the 3 -> 3
    Case("seed-window-edge", SEED, history(PendingTasks=[3, 9, 9]), 3, 0, "taskcompletion"),
    # --- CloudClient default: 10 min = 20 samples; scales low-priority nodes --------------
    # no samples: tasks = max(0, []) = 0 -> targetVMs = max(0, 4/2) = 2 -> min(2, 5) = 2
    Case("cloud-empty", CLOUD, history(), 0, 2, "taskcompletion",
         start={"target_low_priority": 4}),
    # active 3 throughout: 100 % -> max(3, avg 3) = 3 -> 3
    Case("cloud-3", CLOUD, history(ActiveTasks=3), 0, 3, "taskcompletion"),
    # [2, 8 x19]: avg (2 + 152)/20 = 7.7 -> max(2, 7.7) = 7.7 -> min(7.7, 5) = 5
    Case("cloud-cap", CLOUD, history(ActiveTasks=[2] + [8] * 19), 0, 5, "taskcompletion",
         results={"$tasks": "7.7"}),
    # 10 of 20 samples = 50 % < 70 -> last sample 4 -> 4
    Case("cloud-few", CLOUD, history(ActiveTasks=[4] + [0] * 9), 0, 4, "taskcompletion",
         results={"$samples": "50"}),
    # idle with 5 low-priority: targetVMs = 5/2 = 2.5 -> printed 2.5, applied 2
    Case("cloud-halve", CLOUD, history(ActiveTasks=0), 0, 2, "taskcompletion",
         start={"target_low_priority": 5},
         results={"$TargetLowPriorityNodes": "2.5"}),
    # --- docs "Pending tasks": 180 s = 6 samples, cap 25 ----------------------------------
    # no samples -> startingNumberOfVMs 1
    Case("pending-empty", PENDING, history(), 1, 0, "taskcompletion"),
    # pending 30: avg 30 -> min(25, 30) = 25
    Case("pending-cap", PENDING, history(PendingTasks=30), 25, 0, "taskcompletion"),
    # [12, 10, 8, 6, 4, 2]: avg 42/6 = 7
    Case("pending-avg", PENDING, history(PendingTasks=[12, 10, 8, 6, 4, 2]), 7, 0,
         "taskcompletion"),
    # 4 of 6 samples = 66.7 % < 70 -> 1
    Case("pending-few", PENDING, history(PendingTasks=[12, 10, 8, 6]), 1, 0, "taskcompletion"),
    # 5 of 6 = 83.3 % -> avg (10*4 + 5)/5 = 9
    Case("pending-enough", PENDING, history(PendingTasks=[10, 10, 10, 10, 5]), 9, 0,
         "taskcompletion"),
    # --- docs "Preempted nodes": min() spans 25 and every sample --------------------------
    # no preemption: min(25, 0...) = 0 dedicated; low = min(25, 25 - 0) = 25
    Case("preempted-none", PREEMPTED, history(PreemptedNodeCount=0), 0, 25, "taskcompletion"),
    # [3, 3, 2, 2, 1, 1]: min(25, 3, 3, 2, 2, 1, 1) = 1 dedicated; low = 25 - 1 = 24
    Case("preempted-some", PREEMPTED, history(PreemptedNodeCount=[3, 3, 2, 2, 1, 1]), 1, 24,
         "taskcompletion"),
    # no samples: min(25) = 25 dedicated; low = min(25, 0) = 0 (the formula's pitfall)
    Case("preempted-empty", PREEMPTED, history(), 25, 0, "taskcompletion"),
    # --- docs "Write an autoscale formula" (CPU), 10 dedicated nodes ----------------------
    # CPU 0.9: min 0.9 > 0.7 -> 10 * 1.1 = 11.000000000000002; avg 0.9 >= 0.2 keeps it;
    # min(400, 11.000000000000002) -> printed 11, applied 11
    Case("cpu-high", CPU, history(CPUPercent=0.9, CurrentDedicatedNodes=10), 11, 10,
         "requeue", start={"target_low_priority": 10}),
    # CPU 0.1: first statement keeps 10; avg 0.1 < 0.2 -> 10 * 0.9 = 9
    Case("cpu-low", CPU, history(CPUPercent=0.1, CurrentDedicatedNodes=10), 9, 0, "requeue"),
    # CPU 0.5: neither rule -> 10
    Case("cpu-mid", CPU, history(CPUPercent=0.5, CurrentDedicatedNodes=10), 10, 0, "requeue"),
    # 400 nodes at 0.9: 440 -> min(400, 440) = 400
    Case("cpu-cap", CPU, history(CPUPercent=0.9, CurrentDedicatedNodes=400), 400, 0, "requeue"),
    # --- docs Example 1: weekdays 8-18 UTC -> 20, else 10 ---------------------------------
    # Monday 10:00 -> 20; variables printed as in the docs' sample output
    Case("ex1-monday", EX1, history(), 20, 0, "taskcompletion",
         results={"$curTime": "2026-01-05T10:00:00.000Z", "$isWeekday": "1",
                  "$isWorkingWeekdayHour": "1", "$workHours": "1"}),
    # Monday 18:00: hour 18 is not < 18 -> 10
    Case("ex1-evening", EX1, history(), 10, 0, "taskcompletion",
         now=datetime(2026, 1, 5, 18, 0, tzinfo=UTC), results={"$workHours": "0"}),
    # Saturday 10 Jan (weekday 6) -> 10
    Case("ex1-saturday", EX1, history(), 10, 0, "taskcompletion",
         now=datetime(2026, 1, 10, 10, 0, tzinfo=UTC), results={"$isWeekday": "0"}),
    # Sunday 11 Jan (weekday 0) -> 10
    Case("ex1-sunday", EX1, history(), 10, 0, "taskcompletion",
         now=datetime(2026, 1, 11, 12, 0, tzinfo=UTC), results={"$isWeekday": "0"}),
    # Friday 9 Jan 08:00 -> 20
    Case("ex1-friday", EX1, history(), 20, 0, "taskcompletion",
         now=datetime(2026, 1, 9, 8, 0, tzinfo=UTC)),
    # --- docs Example 2: 15 min = 30 samples, cap 20 --------------------------------------
    # no samples, 6 nodes: tasks = max(0, []) = 0 -> max(0, 6/2) = 3
    Case("ex2-empty", EX2, history(), 3, 0, "taskcompletion",
         start={"target_dedicated": 6}),
    # pending 12 -> max(12, avg 12) = 12
    Case("ex2-12", EX2, history(PendingTasks=12), 12, 0, "taskcompletion"),
    # pending 50 -> min(50, 20) = 20
    Case("ex2-cap", EX2, history(PendingTasks=50), 20, 0, "taskcompletion"),
    # [1, 5 x29]: avg 146/30 = 4.8667 -> max(1, 4.8667) -> printed 4.86666666666667, applied 4
    Case("ex2-avg", EX2, history(PendingTasks=[1] + [5] * 29), 4, 0, "taskcompletion",
         results={"$TargetDedicatedNodes": "4.86666666666667"}),
    # 20 of 30 samples = 66.7 % -> last sample 9
    Case("ex2-few", EX2, history(PendingTasks=[9] + [1] * 19), 9, 0, "taskcompletion"),
    # --- docs Example 3: 4 slots per node, at most 3 nodes --------------------------------
    # active 10, 1 node: cores 4; extra (10-4+3)/4 = 2.25; 1 + 2.25 = 3.25 -> min(3.25, 3) = 3
    Case("ex3-grow", EX3, history(ActiveTasks=10), 3, 0, "taskcompletion",
         start={"target_dedicated": 1}, results={"$extraVMs": "2.25"}),
    # idle, 2 nodes: cores 8; extra (0-8+3)/4 = -1.25; 2 - 1.25 = 0.75 -> applied 0
    Case("ex3-idle", EX3, history(ActiveTasks=0), 0, 0, "taskcompletion",
         start={"target_dedicated": 2}, results={"$TargetDedicatedNodes": "0.75"}),
    # active 2, no node: extra (2+3)/4 = 1.25 -> 1
    Case("ex3-two", EX3, history(ActiveTasks=2), 1, 0, "taskcompletion"),
    # --- docs Example 4: pool created Mon 5 Jan 2026 10:00 GMT, 4 nodes for 10 min --------
    # 10:05: lifespan 5 min < 10 min -> 4
    Case("ex4-startup", EX4, history(), 4, 0, "requeue",
         now=datetime(2026, 1, 5, 10, 5, tzinfo=UTC), results={"lifespan": "00:05:00"}),
    # 11:00, nothing running or active for 60 min (120 samples each) -> 0
    Case("ex4-idle", EX4,
         history(datetime(2026, 1, 5, 11, 0, tzinfo=UTC), RunningTasks=[0] * 120,
                 ActiveTasks=[0] * 120),
         0, 0, "requeue", now=datetime(2026, 1, 5, 11, 0, tzinfo=UTC)),
    # 11:00, 3 running: max(...) = 3 != 0 -> keeps $TargetDedicatedNodes = 4
    Case("ex4-busy", EX4,
         history(datetime(2026, 1, 5, 11, 0, tzinfo=UTC), RunningTasks=[3] * 120,
                 ActiveTasks=[0] * 120),
         4, 0, "requeue", now=datetime(2026, 1, 5, 11, 0, tzinfo=UTC)),
    # --- REST reference evaluate example ($CurrentDedicated, $targetDedicatedNodes) -------
    # no samples: percent 0 < 0.7 -> 5; min(100, 5) = 5 (the documented result)
    Case("rest-empty", REST, history(), 5, 0, "requeue", results={"totalNodes": "5"}),
    # CPU 0.9, 10 nodes: min 0.9 > 0.8 -> 10 * 1.1 -> 11
    Case("rest-high", REST, history(CPUPercent=0.9, CurrentDedicatedNodes=10), 11, 0,
         "requeue"),
    # CPU 0.5 -> $CurrentDedicated = 10
    Case("rest-mid", REST, history(CPUPercent=0.5, CurrentDedicatedNodes=10), 10, 0, "requeue"),
    # --- batchlaunch default (pending tasks, 3 min = 6 samples, cap 10) -------------------
    # no samples: tasks 0 -> (0 + 1 - 1)/1 = 0 nodes
    Case("default-empty", "default:10", history(), 0, 0, "taskcompletion"),
    # 50 pending, 1 slot: 50 -> min(10, 50) = 10
    Case("default-cap", "default:10", history(PendingTasks=50), 10, 0, "taskcompletion"),
    # 5 pending, 2 slots: (5 + 2 - 1)/2 = 3
    Case("default-slots", "default:10", history(PendingTasks=5, TaskSlotsPerNode=2), 3, 0,
         "taskcompletion"),
    # just drained [0, 4 x5]: max(0, avg 20/6 = 3.33) -> 3.33 -> applied 3
    Case("default-draining", "default:10", history(PendingTasks=[0, 4, 4, 4, 4, 4]), 3, 0,
         "taskcompletion"),
    # idle for the whole window, busy before: [0 x6, 50 x20] -> 0
    Case("default-idle", "default:10", history(PendingTasks=[0] * 6 + [50] * 20), 0, 0,
         "taskcompletion"),
    # one sample of 50 on a new pool (1/6 = 16.7 %): trust it -> min(10, 50) = 10
    Case("default-new-pool", "default:10", history(PendingTasks=[50]), 10, 0,
         "taskcompletion"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_formula_targets(case: Case) -> None:
    result = evaluate_formula(_text(case.source), case.history, case.now,
                              target_dedicated=case.start.get("target_dedicated"),
                              target_low_priority=case.start.get("target_low_priority"))
    assert result.error is None, result.error
    assert (result.target_dedicated, result.target_low_priority,
            result.node_deallocation_option) == (case.dedicated, case.low_priority,
                                                 case.deallocation)
    printed = dict(item.split("=", 1) for item in result.as_batch_string().split(";"))
    for name, value in case.results.items():
        assert printed[name] == value, name
    # Batch's results string always starts with the three writable variables.
    assert list(printed)[:3] == ["$TargetDedicatedNodes", "$TargetLowPriorityNodes",
                                 "$NodeDeallocationOption"]


def test_example4_insufficient_samples_names_the_statement() -> None:
    # 20 minutes of samples = 40 of the 120 a 60-minute span can hold = 33 % < ratio 50
    now = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    result = evaluate_formula(formula(EX4), history(now, RunningTasks=[1] * 40,
                                                    ActiveTasks=[1] * 40), now,
                              target_dedicated=4)
    assert result.error is not None
    assert result.error.code == INSUFFICIENT_SAMPLES
    # line 9 of the file, column of `$RunningTasks` inside the statement
    line = formula(EX4).splitlines()[8]
    assert (result.error.line, result.error.column) == (9, line.index("$RunningTasks") + 1)
    assert result.error.detail.endswith(
        "Insufficient data from data set: $RunningTasks wanted 50%, received 33%")
    assert result.error.statement.startswith("$TargetDedicatedNodes = (lifespan > startup")
    # a failed run changes nothing: the targets stay where they were
    assert result.as_batch_string() == (
        "$TargetDedicatedNodes=4;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue")


def test_cpu_formula_without_samples_fails_at_min() -> None:
    # min() of the empty 10-minute window: an evaluation error at line 3 (`(min(`)
    result = evaluate_formula(formula(CPU), history(CurrentDedicatedNodes=3), NOW)
    assert result.error is not None
    assert result.error.code == EVALUATION_ERROR
    assert (result.error.line, result.error.column) == (3, 6)
    assert "min() of an empty list" in result.error.detail
    assert result.target_dedicated == 3
