"""Evaluate a parsed formula over a sample history, as the Batch service does.

Semantics (from the Azure docs page "Create an automatic formula for scaling compute nodes
in a Batch pool" and observed service output):

- Statements run in order; `stop()` ends the run successfully with what is set so far.
- `$TargetDedicatedNodes` / `$TargetLowPriorityNodes` start at the pool's current targets
  and `$NodeDeallocationOption` at `requeue`; `$TargetDedicated`/`$TargetLowPriority` are
  aliases (the full name wins when both are set).
- `GetSample` vectors are newest sample first. A time window `(now - end, now - start]`
  holds `ceil(span / 30 s)` possible samples; `GetSample(..., pct)` fails with
  `InsufficientSampleData` when fewer than pct percent of them exist.
- Any other failure is `AutoScalingFormulaEvaluationError`; a failed run changes nothing:
  its results show the targets unchanged.
- Targets must end as non-negative finite doubles; fractions are truncated when applied.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from emulator.autoscale import nodes
from emulator.autoscale.errors import (
    EVALUATION_ERROR,
    INSUFFICIENT_SAMPLES,
    MESSAGES,
    AutoScaleError,
    FormulaEvaluationError,
    FormulaSyntaxError,
)
from emulator.autoscale.history import SampleHistory, utc
from emulator.autoscale.names import (
    DEALLOCATION,
    DEALLOCATION_OPTIONS,
    SCALAR_ALIASES,
    SCALARS,
    TARGET_DEDICATED,
    TARGET_LOW_PRIORITY,
    WRITABLE,
    WRITABLE_ALIASES,
    metric_name,
)
from emulator.autoscale.parser import parse_cached
from emulator.autoscale.values import (
    TIME_INTERVAL_CONSTANTS,
    DoubleVec,
    TimeInterval,
    Value,
    format_double,
    format_value,
    type_name,
)


@dataclass
class AutoScaleRunResult:
    """The outcome of one evaluation: Batch's autoScaleRun.

    `results` maps each variable to its final value: the three writable service-defined
    variables first, then the formula's own variables. When `error` is set the run failed
    and `results` holds the targets unchanged (what the pool keeps).
    """

    results: dict[str, Value]
    timestamp: datetime
    error: AutoScaleError | None = None
    stopped: bool = False
    # How `as_batch_string` names a writable variable when not by its full name: a formula
    # written with the legacy alias `$TargetDedicated` gets its results in the legacy shape
    # (`$TargetDedicated=1;$NodeDeallocationOption=requeue`, Batch's own example answer);
    # None omits the variable (the legacy shape has no low-priority target).
    labels: dict[str, str | None] = field(default_factory=dict)

    @property
    def target_dedicated(self) -> int:
        """The dedicated node target to apply (fractions truncated)."""
        return _node_count(self.results[TARGET_DEDICATED])

    @property
    def target_low_priority(self) -> int:
        """The low-priority (Spot) node target to apply (fractions truncated)."""
        return _node_count(self.results[TARGET_LOW_PRIORITY])

    @property
    def node_deallocation_option(self) -> str:
        value = self.results[DEALLOCATION]
        return value if isinstance(value, str) else "requeue"

    def as_batch_string(self) -> str:
        """Batch's `results` string: `$TargetDedicatedNodes=1;...;$myVar=2`."""
        shown = ((self.labels.get(name, name), value) for name, value in self.results.items())
        return ";".join(f"{label}={format_value(value)}" for label, value in shown if label)

    def to_dict(self) -> dict[str, object]:
        """Batch's REST `autoScaleRun`: timestamp, results and (on failure) error."""
        run: dict[str, object] = {
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "results": self.as_batch_string(),
        }
        if self.error is not None:
            run["error"] = self.error.to_dict()
        return run

    def summary(self) -> str:
        """One line: `target: 10 dedicated, 0 low-priority; deallocation: taskcompletion`."""
        return (
            f"target: {self.target_dedicated} dedicated, {self.target_low_priority} "
            f"low-priority; deallocation: {self.node_deallocation_option}"
        )


def _node_count(value: Value) -> int:
    if isinstance(value, float) and math.isfinite(value):
        return max(0, int(value))
    return 0


class _Stop(Exception):
    """stop() was called."""


@dataclass
class _State:
    history: SampleHistory
    now: datetime
    rng: random.Random
    variables: dict[str, Value] = field(default_factory=dict)
    writable: dict[str, Value] = field(default_factory=dict)
    assigned: dict[str, nodes.Statement] = field(default_factory=dict)


def evaluate_formula(
    formula: str,
    history: SampleHistory,
    now: datetime | None = None,
    *,
    target_dedicated: float | None = None,
    target_low_priority: float | None = None,
    seed: int | None = None,
) -> AutoScaleRunResult:
    """Evaluate `formula` at `now` (default: the current time) over `history`.

    The targets start at `target_dedicated` / `target_low_priority` (the pool's current
    targets; default: the newest `CurrentDedicatedNodes` / `CurrentLowPriorityNodes`
    sample, else 0). Never raises for a bad formula: syntax errors, the limits and
    evaluation errors come back in `.error`. `seed` makes `rand()` reproducible.
    """
    moment = utc(now or datetime.now(UTC))
    state = _State(history, moment, random.Random(seed))
    for name, given, metric in (
        (TARGET_DEDICATED, target_dedicated, "CurrentDedicatedNodes"),
        (TARGET_LOW_PRIORITY, target_low_priority, "CurrentLowPriorityNodes"),
    ):
        start = given if given is not None else history.latest(metric, moment)
        state.writable[name] = float(start or 0.0)
    state.writable[DEALLOCATION] = "requeue"
    initial = dict(state.writable)

    try:
        program = parse_cached(formula)
    except FormulaSyntaxError as exc:
        return AutoScaleRunResult(dict(initial), moment, exc.to_error())

    evaluator = _Evaluator(state)
    stopped = False
    current: nodes.Statement | None = None
    try:
        for statement in program.statements:
            current = statement
            evaluator.run(statement)
        current = None
        evaluator.check_targets()
    except _Stop:
        stopped = True
        try:
            evaluator.check_targets()
        except FormulaEvaluationError as exc:
            return AutoScaleRunResult(dict(initial), moment,
                                      _error(exc, evaluator.failed_statement))
    except FormulaEvaluationError as exc:
        return AutoScaleRunResult(dict(initial), moment,
                                  _error(exc, current or evaluator.failed_statement))

    results: dict[str, Value] = {}
    for name in WRITABLE:
        results[name] = evaluator.final(name)
    for name in sorted(state.variables, key=lambda n: n.lstrip("$").lower()):
        results[name] = state.variables[name]
    return AutoScaleRunResult(results, moment, stopped=stopped, labels=_labels(state))


def _labels(state: _State) -> dict[str, str | None]:
    """Name targets as the formula wrote them when it used the legacy aliases."""
    spelled = {full: statement.target for full, statement in state.assigned.items()}
    if spelled.get(TARGET_DEDICATED) not in WRITABLE_ALIASES:
        return {}
    labels: dict[str, str | None] = {
        full: name for full, name in spelled.items() if name in WRITABLE_ALIASES
    }
    if TARGET_LOW_PRIORITY not in spelled:
        labels[TARGET_LOW_PRIORITY] = None
    return labels


def _error(exc: FormulaEvaluationError, statement: nodes.Statement | None) -> AutoScaleError:
    values = [("Message", f"Line {exc.line}, Col {exc.column}: {exc.message}")]
    if statement is not None:
        values.append(("Statement", statement.text))
    return AutoScaleError(
        code=exc.code,
        message=MESSAGES[exc.code],
        values=values,
        line=exc.line,
        column=exc.column,
        statement=statement.text if statement else "",
    )


def _fail(node: nodes.Node | nodes.Statement, message: str,
          code: str = EVALUATION_ERROR) -> FormulaEvaluationError:
    return FormulaEvaluationError(code, message, node.line, node.column)


class _Evaluator:
    def __init__(self, state: _State) -> None:
        self.state = state
        self.failed_statement: nodes.Statement | None = None

    # --- statements ----------------------------------------------------------------------
    def run(self, statement: nodes.Statement) -> None:
        try:
            value = self.eval(statement.expr)
        except (OverflowError, ValueError) as exc:
            raise _fail(statement, f"the value is out of range ({exc})") from None
        if statement.target is not None:
            self.assign(statement, value)

    def assign(self, statement: nodes.Statement, value: Value) -> None:
        target = statement.target
        assert target is not None
        full = WRITABLE_ALIASES.get(target, target)
        if full == DEALLOCATION:
            if not isinstance(value, str) or value not in DEALLOCATION_OPTIONS:
                raise _fail(statement, f"{DEALLOCATION} must be one of "
                            f"{', '.join(DEALLOCATION_OPTIONS)}; got {format_value(value)}")
        elif full in (TARGET_DEDICATED, TARGET_LOW_PRIORITY) and not isinstance(value, float):
            raise _fail(statement, f"{target} must be a double, got {type_name(value)}")
        if full in WRITABLE:
            if target == full or full not in self.state.assigned or \
                    self.state.assigned[full].target != full:
                self.state.writable[full] = value
                self.state.assigned[full] = statement
        else:
            self.state.variables[target] = value

    def final(self, name: str) -> Value:
        return self.state.writable[name]

    def check_targets(self) -> None:
        for name in (TARGET_DEDICATED, TARGET_LOW_PRIORITY):
            value = self.state.writable[name]
            assert isinstance(value, float)
            if not math.isfinite(value) or value < 0:
                self.failed_statement = self.state.assigned.get(name)
                where: nodes.Statement | nodes.Node = self.failed_statement or nodes.Number(
                    1, 1, 0.0)
                raise _fail(where, f"{name} must be a non-negative finite number, got "
                            f"{format_double(value)}")

    # --- expressions ---------------------------------------------------------------------
    def eval(self, node: nodes.Node) -> Value:
        if isinstance(node, nodes.Number):
            return node.value
        if isinstance(node, nodes.String):
            return node.value
        if isinstance(node, nodes.Name):
            return self.lookup(node)
        if isinstance(node, nodes.Unary):
            return self.unary(node)
        if isinstance(node, nodes.Binary):
            return self.binary(node)
        if isinstance(node, nodes.Conditional):
            condition = self.double(node.condition, "the condition of ?:")
            return self.eval(node.if_true if condition != 0 else node.if_false)
        if isinstance(node, nodes.Call):
            return self.call(node)
        if isinstance(node, nodes.MethodCall):
            return self.method(node)
        if isinstance(node, nodes.Member):
            return self.member(node)
        raise _fail(node, f"cannot evaluate {type(node).__name__}")

    def double(self, node: nodes.Node, what: str) -> float:
        value = self.eval(node)
        if not isinstance(value, float):
            raise _fail(node, f"{what} must be a double, got {type_name(value)}")
        return value

    def lookup(self, node: nodes.Name) -> Value:
        name = node.name
        state = self.state
        if name in state.variables:
            return state.variables[name]
        if name in TIME_INTERVAL_CONSTANTS:
            return TIME_INTERVAL_CONSTANTS[name]
        if name in DEALLOCATION_OPTIONS:
            return name
        full = WRITABLE_ALIASES.get(name, name)
        if full in state.writable:
            return state.writable[full]
        if name.startswith("$"):
            bare = SCALAR_ALIASES.get(name[1:], name[1:])
            if bare in SCALARS:
                latest = state.history.latest(bare, state.now)
                return SCALARS[bare] if latest is None else latest
            if metric_name(name):
                raise _fail(node, f"{name} is a sampled metric, not a value: use a method "
                            f"such as {name}.GetSample(1) or {name}.GetSample("
                            "TimeInterval_Minute * 5)")
        raise _fail(node, f"undefined variable {name}")

    def unary(self, node: nodes.Unary) -> Value:
        value = self.eval(node.operand)
        if node.op == "!" and isinstance(value, float):
            return 1.0 if value == 0 else 0.0
        if node.op == "-":
            if isinstance(value, float):
                return -value
            if isinstance(value, TimeInterval):
                return TimeInterval(-value.ticks)
        raise _fail(node, f"operator {node.op} does not apply to {type_name(value)}")

    def binary(self, node: nodes.Binary) -> Value:
        op = node.op
        if op in ("&&", "||"):
            left = self.double(node.left, f"the left operand of {op}")
            if op == "&&" and left == 0:
                return 0.0
            if op == "||" and left != 0:
                return 1.0
            return 1.0 if self.double(node.right, f"the right operand of {op}") != 0 else 0.0
        left_value = self.eval(node.left)
        right_value = self.eval(node.right)
        if op in ("<", "<=", "==", ">=", ">", "!="):
            return _compare(node, op, left_value, right_value)
        return _arithmetic(node, op, left_value, right_value)

    def call(self, node: nodes.Call) -> Value:
        name = node.function
        if name == "stop":
            raise _Stop
        if name == "rand":
            return self.state.rng.random()
        if name == "time":
            if not node.args:
                return self.state.now
            text = self.eval(node.args[0])
            if not isinstance(text, str):
                raise _fail(node, f"time() takes a string, got {type_name(text)}")
            return _parse_time(node, text)
        if name == "val":
            vector = self.eval(node.args[0])
            index = self.double(node.args[1], "the index of val()")
            items = _as_list(node, vector)
            position = int(index)
            if position != index or not 0 <= position < len(items):
                raise _fail(node, f"val(): index {format_double(index)} is out of range for "
                            f"a vector of {len(items)} element(s)")
            return items[position]
        if name == "percentile":
            items = _as_list(node, self.eval(node.args[0]))
            percent = self.double(node.args[1], "the percentage of percentile()")
            return _percentile(node, items, percent)
        values = [self.eval(arg) for arg in node.args]
        if name in ("lg", "ln", "log"):
            function = _LOGS[name]
            if len(values) == 1 and isinstance(values[0], float):
                return function(values[0])
            return DoubleVec(tuple(function(v) for v in _flatten(node, values)))
        return _aggregate(node, name, _flatten(node, values))

    def member(self, node: nodes.Member) -> Value:
        value = self.eval(node.target)
        if not isinstance(value, datetime):
            raise _fail(node, f"member .{node.member} needs a timestamp, got "
                        f"{type_name(value)}")
        members: dict[str, int] = {
            "year": value.year, "month": value.month, "day": value.day,
            "weekday": value.isoweekday() % 7, "hour": value.hour, "minute": value.minute,
            "second": value.second,
        }
        if node.member not in members:
            raise _fail(node, f"a timestamp has no member .{node.member}; members: "
                        + ", ".join(members))
        return float(members[node.member])

    # --- sample methods ------------------------------------------------------------------
    def method(self, node: nodes.MethodCall) -> Value:
        metric = node.metric[1:]
        history, now = self.state.history, self.state.now
        if node.method == "GetSamplePeriod":
            return TimeInterval.from_timedelta(history.period)
        if node.method == "Count":
            return float(len(history.newest(metric, history.count(metric), now)))
        if node.method == "HistoryBeginTime":
            begin = history.begin_time(metric)
            if begin is None:
                raise _fail(node, f"{node.metric} has no samples yet")
            return begin
        args = [self.eval(arg) for arg in node.args]
        if node.method == "GetSample" and len(args) == 1 and isinstance(args[0], float):
            count = args[0]
            if count < 0 or count != int(count):
                raise _fail(node, f"GetSample(count): count must be a whole number >= 0, "
                            f"got {format_double(count)}")
            return DoubleVec(tuple(history.newest(metric, int(count), now)))
        older, newer, percent_arg = self.window(node, args)
        values = history.window(metric, older, newer)
        # samples every period, the newest at `newer`: a span holds ceil(span / period)
        expected = max(1, math.ceil((newer - older) / history.period - 1e-9))
        percent = min(100.0, 100.0 * len(values) / expected)
        if node.method == "GetSamplePercent":
            if percent_arg is not None:
                raise _fail(node, "GetSamplePercent() takes a start and an optional end time")
            return percent
        if percent_arg is not None and percent < percent_arg:
            raise _fail(
                node,
                f"Insufficient data from data set: {node.metric} wanted "
                f"{format_double(percent_arg)}%, received {int(percent)}%",
                INSUFFICIENT_SAMPLES,
            )
        return DoubleVec(tuple(values))

    def window(self, node: nodes.MethodCall,
               args: list[Value]) -> tuple[datetime, datetime, float | None]:
        """(older, newer, required percent) from `start [, end] [, pct]` arguments."""
        now = self.state.now

        def moment(value: Value, position: str) -> datetime:
            if isinstance(value, TimeInterval):
                return now - value.to_timedelta()
            if isinstance(value, datetime):
                return value
            raise _fail(node, f"{node.method}(): the {position} must be a timeinterval or a "
                        f"timestamp, got {type_name(value)}")

        first = moment(args[0], "start")
        rest = args[1:]
        second = now
        if rest and isinstance(rest[0], TimeInterval | datetime):
            second = moment(rest[0], "end")
            rest = rest[1:]
        percent: float | None = None
        if rest:
            if len(rest) > 1 or not isinstance(rest[0], float):
                raise _fail(node, f"{node.method}(): the sample percentage must be a double")
            percent = rest[0]
            if not 0 <= percent <= 100:
                raise _fail(node, f"{node.method}(): the sample percentage must be between 0 "
                            f"and 100, got {format_double(percent)}")
        return min(first, second), max(first, second), percent


# --- operators -----------------------------------------------------------------------------

def _divide(a: float, b: float) -> float:
    """IEEE division as .NET does it: x/0 is ±Infinity and 0/0 is NaN, not an exception."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


_DOUBLE_OPS: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}


def _arithmetic(node: nodes.Binary, op: str, a: Value, b: Value) -> Value:
    function = _DOUBLE_OPS[op]
    if isinstance(a, float) and isinstance(b, float):
        return function(a, b)
    if isinstance(a, DoubleVec) and isinstance(b, float):
        return DoubleVec(tuple(function(x, b) for x in a.values))
    if isinstance(a, float) and isinstance(b, DoubleVec):
        return DoubleVec(tuple(function(a, y) for y in b.values))
    if isinstance(a, DoubleVec) and isinstance(b, DoubleVec):
        if len(a) != len(b):
            raise _fail(node, f"operator {op}: vectors differ in length ({len(a)} and "
                        f"{len(b)})")
        return DoubleVec(tuple(function(x, y) for x, y in zip(a.values, b.values, strict=True)))
    if op == "*" and isinstance(a, float) and isinstance(b, TimeInterval):
        return TimeInterval(round(a * b.ticks))
    if op in ("*", "/") and isinstance(a, TimeInterval) and isinstance(b, float):
        if op == "/" and b == 0:
            raise _fail(node, "division of a timeinterval by zero")
        return TimeInterval(round(a.ticks * b if op == "*" else a.ticks / b))
    if op in ("+", "-") and isinstance(a, TimeInterval) and isinstance(b, TimeInterval):
        return TimeInterval(a.ticks + b.ticks if op == "+" else a.ticks - b.ticks)
    if op == "+" and isinstance(a, TimeInterval) and isinstance(b, datetime):
        return b + a.to_timedelta()
    if op in ("+", "-") and isinstance(a, datetime) and isinstance(b, TimeInterval):
        return a + b.to_timedelta() if op == "+" else a - b.to_timedelta()
    if op == "-" and isinstance(a, datetime) and isinstance(b, datetime):
        return TimeInterval.from_timedelta(a - b)
    raise _fail(node, f"operator {op} does not apply to {type_name(a)} and {type_name(b)}")


_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, "==": operator.eq,
    ">=": operator.ge, ">": operator.gt, "!=": operator.ne,
}


def _compare(node: nodes.Binary, op: str, a: Value, b: Value) -> float:
    """double, string (ordinal), timestamp and timeinterval compare with their own kind."""
    comparable = any(isinstance(a, kind) and isinstance(b, kind)
                     for kind in (float, str, datetime, TimeInterval))
    if not comparable:
        raise _fail(node, f"operator {op} does not compare {type_name(a)} with {type_name(b)}")
    return 1.0 if _COMPARATORS[op](a, b) else 0.0


# --- functions -----------------------------------------------------------------------------

def _log(base: float | None) -> Callable[[float], float]:
    def function(x: float) -> float:
        if math.isnan(x) or x < 0:
            return math.nan
        if x == 0:
            return -math.inf
        if math.isinf(x):
            return math.inf
        return math.log(x) if base is None else math.log(x, base)

    return function


_LOGS: dict[str, Callable[[float], float]] = {"lg": _log(2.0), "ln": _log(None),
                                              "log": _log(10.0)}


def _as_list(node: nodes.Node, value: Value) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, DoubleVec):
        return list(value.values)
    raise _fail(node, f"expected a double or doubleVec, got {type_name(value)}")


def _flatten(node: nodes.Node, values: list[Value]) -> list[float]:
    """A doubleVecList (any mix of doubles and doubleVecs) as one flat list."""
    flat: list[float] = []
    for value in values:
        flat.extend(_as_list(node, value))
    return flat


def _aggregate(node: nodes.Call, name: str, values: list[float]) -> float:
    if name == "len":
        return float(len(values))
    if name == "sum":
        return math.fsum(values)
    if name == "norm":
        return math.sqrt(math.fsum(v * v for v in values))
    if not values:
        raise _fail(node, f"{name}() of an empty list (no samples in the window?)")
    if name == "avg":
        return math.fsum(values) / len(values)
    if name == "max":
        return max(values)
    if name == "min":
        return min(values)
    if name == "range":
        return max(values) - min(values)
    if name == "std":
        if len(values) < 2:
            return 0.0
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
    raise _fail(node, f"unknown function {name}()")


def _percentile(node: nodes.Call, values: list[float], percent: float) -> float:
    """Nearest-rank percentile: an element of the vector, as the docs describe."""
    if not values:
        raise _fail(node, "percentile() of an empty vector")
    if not 0 <= percent <= 100:
        raise _fail(node, f"percentile(): p must be between 0 and 100, got "
                    f"{format_double(percent)}")
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _parse_time(node: nodes.Node, text: str) -> datetime:
    """W3C-DTF (ISO 8601 profiles, YYYY to fractional seconds) or RFC 1123."""
    stripped = text.strip()
    try:
        if len(stripped) == 4 and stripped.isdigit():
            return datetime(int(stripped), 1, 1, tzinfo=UTC)
        if len(stripped) == 7 and stripped[4] == "-":
            return datetime(int(stripped[:4]), int(stripped[5:]), 1, tzinfo=UTC)
        return utc(datetime.fromisoformat(stripped))
    except ValueError:
        pass
    try:
        return utc(parsedate_to_datetime(stripped))
    except (TypeError, ValueError, IndexError):
        raise _fail(node, f"time(): {text!r} is neither a W3C-DTF nor an RFC 1123 date and "
                    "time") from None
