"""The service-defined names of the formula language: variables, functions, methods.

Sampled metrics are objects with methods (`$PendingTasks.GetSample(...)`) and cannot be
used as plain values; the node counts and `$TaskSlotsPerNode` are plain doubles.
"""

from __future__ import annotations

# Read-only metrics sampled every 30 s (names without the `$`).
METRICS: frozenset[str] = frozenset({
    "CPUPercent", "WallClockSeconds", "MemoryBytes", "DiskBytes", "DiskReadBytes",
    "DiskWriteBytes", "DiskReadOps", "DiskWriteOps", "NetworkInBytes", "NetworkOutBytes",
    "SampleNodeCount", "ActiveTasks", "RunningTasks", "PendingTasks", "SucceededTasks",
    "FailedTasks", "PreemptedNodeCount", "UsableNodeCount",
})

# Read-only doubles: their value is the newest sample of the same name in the history.
SCALARS: dict[str, float] = {  # name -> value when the history has none
    "CurrentDedicatedNodes": 0.0,
    "CurrentLowPriorityNodes": 0.0,
    "TaskSlotsPerNode": 1.0,
}
SCALAR_ALIASES: dict[str, str] = {
    "CurrentDedicated": "CurrentDedicatedNodes",
    "CurrentLowPriority": "CurrentLowPriorityNodes",
}

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
DEALLOCATION = "$NodeDeallocationOption"
WRITABLE: tuple[str, ...] = (TARGET_DEDICATED, TARGET_LOW_PRIORITY, DEALLOCATION)
WRITABLE_ALIASES: dict[str, str] = {
    "$TargetDedicated": TARGET_DEDICATED,
    "$TargetLowPriority": TARGET_LOW_PRIORITY,
}
DEALLOCATION_OPTIONS: tuple[str, ...] = ("requeue", "terminate", "taskcompletion", "retaineddata")

# name -> (min args, max args); None = any number (a doubleVecList of at least one item).
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "avg": (1, None), "len": (1, None), "lg": (1, None), "ln": (1, None), "log": (1, None),
    "max": (1, None), "min": (1, None), "norm": (1, None), "percentile": (2, 2),
    "rand": (0, 0), "range": (1, None), "std": (1, None), "stop": (0, 0), "sum": (1, None),
    "time": (0, 1), "val": (2, 2),
}

METHODS: dict[str, tuple[int, int]] = {
    "GetSample": (1, 3),
    "GetSamplePercent": (1, 2),
    "GetSamplePeriod": (0, 0),
    "Count": (0, 0),
    "HistoryBeginTime": (0, 0),
}

TIMESTAMP_MEMBERS: tuple[str, ...] = ("year", "month", "day", "weekday", "hour", "minute",
                                      "second")


def _service_names() -> dict[str, str]:
    names = [*METRICS, *SCALARS, *SCALAR_ALIASES]
    spelled = {f"${name}".lower(): f"${name}" for name in names}
    spelled.update({name.lower(): name for name in (*WRITABLE, *WRITABLE_ALIASES)})
    return spelled


_SERVICE_NAMES = _service_names()


def canonical(name: str) -> str:
    """Service-defined variables match case-insensitively (the REST docs' own example
    sets `$targetDedicatedNodes`); user variables keep their exact spelling."""
    if name.startswith("$"):
        return _SERVICE_NAMES.get(name.lower(), name)
    return name


def is_read_only(name: str) -> bool:
    """True for service-defined variables a formula may read but not assign."""
    bare = name[1:] if name.startswith("$") else ""
    return bool(bare) and (bare in METRICS or bare in SCALARS or bare in SCALAR_ALIASES)


def metric_name(name: str) -> str | None:
    """`$PendingTasks` -> `PendingTasks`; None when the name is not a sampled metric."""
    if name.startswith("$") and name[1:] in METRICS:
        return name[1:]
    return None
