"""The Azure Batch autoscale formula language: parser and evaluator.

Pure Python (stdlib only), no I/O, no global state: the emulator re-evaluates pools with
it and `batchlaunch autoscale check` reuses it.

Public API (stable; the emulator and the CLI code to it):

``parse_formula(formula: str) -> Program``
    Raises ``FormulaSyntaxError`` with ``.code`` (``AutoScalingFormulaSyntaxError``, or
    ``AutoScaleFormulaTooLong`` beyond 8 KB / 100 statements), ``.message``, ``.line`` and
    ``.column`` (1-based); ``str(exc)`` is ``"Line L, Col C: message"``. Use it to refuse a
    formula when it is set (enable/evaluate autoscale answer 400 with that code).

``evaluate_formula(formula, history, now=None, *, target_dedicated=None,
target_low_priority=None, seed=None) -> AutoScaleRunResult``
    Never raises for a bad formula. ``now`` defaults to the current UTC time; the targets
    start at the pool's current targets (default: newest ``CurrentDedicatedNodes`` /
    ``CurrentLowPriorityNodes`` sample, else 0); ``seed`` fixes ``rand()``.

``AutoScaleRunResult``
    ``.results: dict[str, value]`` (``$TargetDedicatedNodes``, ``$TargetLowPriorityNodes``,
    ``$NodeDeallocationOption``, then the formula's variables), ``.target_dedicated: int``,
    ``.target_low_priority: int`` (fractions truncated), ``.node_deallocation_option: str``,
    ``.as_batch_string()`` (Batch's ``results``:
    ``$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$x=1``),
    ``.summary()``, ``.to_dict()`` (the REST ``autoScaleRun``: timestamp, results, error),
    ``.timestamp``, ``.stopped`` (``stop()`` was called) and ``.error``:
    None, or an ``AutoScaleError`` (``.code``, ``.message``, ``.values`` as name/value
    pairs, ``.line``, ``.column``, ``.statement``, ``.to_dict()`` in the REST shape). On
    error nothing is applied: ``.results`` holds the unchanged targets.

``SampleHistory``
    Per-metric time series, sampled every 30 s. ``SampleHistory({"PendingTasks":
    [(datetime, 4.0), ...]})``, ``.add(metric, timestamp, value)``,
    ``SampleHistory.constant({"PendingTasks": 5}, span=timedelta(minutes=30), now=...)``,
    ``SampleHistory.from_dict(json_data)`` / ``.to_dict()``, ``.trim(before)``. Metric names
    are the service-defined variables without ``$`` (``$`` accepted): the sampled metrics
    (``PendingTasks``, ``ActiveTasks``, ``RunningTasks``, ``CPUPercent``, ...) and the
    plain values ``CurrentDedicatedNodes``, ``CurrentLowPriorityNodes``,
    ``TaskSlotsPerNode`` (a formula reads their newest sample).

Conventions where the docs are silent (chosen, documented, tested): GetSample vectors are
newest first; sample windows are ``(now - end, now - start]`` and hold ``ceil(span / 30 s)``
possible samples; a sampled metric used as a plain value is an evaluation error; a
negative or non-finite final target is an evaluation error; timeintervals print as .NET
TimeSpans (``00:10:00``); timestamps as ``2016-10-13T19:18:47.805Z``.
"""

from emulator.autoscale.errors import (
    EVALUATION_ERROR,
    INSUFFICIENT_SAMPLES,
    SYNTAX_ERROR,
    TOO_LONG,
    AutoScaleError,
    FormulaSyntaxError,
)
from emulator.autoscale.evaluator import AutoScaleRunResult, evaluate_formula
from emulator.autoscale.history import SAMPLE_PERIOD, SampleHistory
from emulator.autoscale.names import DEALLOCATION_OPTIONS, METRICS
from emulator.autoscale.nodes import Program
from emulator.autoscale.parser import MAX_FORMULA_BYTES, MAX_STATEMENTS, parse_formula
from emulator.autoscale.values import DoubleVec, TimeInterval

__all__ = [
    "DEALLOCATION_OPTIONS",
    "EVALUATION_ERROR",
    "INSUFFICIENT_SAMPLES",
    "MAX_FORMULA_BYTES",
    "MAX_STATEMENTS",
    "METRICS",
    "SAMPLE_PERIOD",
    "SYNTAX_ERROR",
    "TOO_LONG",
    "AutoScaleError",
    "AutoScaleRunResult",
    "DoubleVec",
    "FormulaSyntaxError",
    "Program",
    "SampleHistory",
    "TimeInterval",
    "evaluate_formula",
    "parse_formula",
]
