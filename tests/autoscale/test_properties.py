"""Property tests: arithmetic and logic agree with Python, sampling agrees with a slow
reference, and no input makes the parser or evaluator raise."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.autoscale import FormulaSyntaxError, SampleHistory, evaluate_formula, parse_formula
from tests.autoscale.histories import NOW

Expr = tuple[str, float]  # (formula text, the value Python computes)


def _python_divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * \
            math.copysign(1.0, b)
    return a / b


numbers = st.integers(min_value=0, max_value=1000).map(float) | st.sampled_from(
    [0.5, 0.25, 1.5, 2.75, 1e-3])


def _leaf(value: float) -> Expr:
    return (repr(value) if not value.is_integer() else str(int(value)), value)


def _combine(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    def build(op: str, left: Expr, right: Expr) -> Expr:
        text = f"({left[0]} {op} {right[0]})"
        a, b = left[1], right[1]
        result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                  "/": lambda: _python_divide(a, b)}[op]()
        return text, result

    def negate(child: Expr) -> Expr:
        return f"-{child[0]}", -child[1]

    return st.builds(build, st.sampled_from("+-*/"), children, children) | children.map(negate)


expressions = st.recursive(numbers.map(_leaf), _combine, max_leaves=12)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=300, deadline=None)
@given(expressions)
def test_arithmetic_agrees_with_python(expr: Expr) -> None:
    text, expected = expr
    result = evaluate_formula(f"x = {text};", SampleHistory(), NOW)
    assert result.error is None, (text, result.error)
    got = result.results["x"]
    assert isinstance(got, float)
    assert _same(got, expected), (text, got, expected)


@settings(max_examples=200, deadline=None)
@given(a=numbers, b=numbers, op=st.sampled_from(["<", "<=", "==", ">=", ">", "!=", "&&", "||"]))
def test_comparisons_and_logic_agree_with_python(a: float, b: float, op: str) -> None:
    python = {"<": a < b, "<=": a <= b, "==": a == b, ">=": a >= b, ">": a > b, "!=": a != b,
              "&&": bool(a) and bool(b), "||": bool(a) or bool(b)}[op]
    result = evaluate_formula(f"x = {a!r} {op} {b!r}; y = {a!r} {op} {b!r} ? 7 : 9;",
                              SampleHistory(), NOW)
    assert result.results["x"] == (1.0 if python else 0.0)
    assert result.results["y"] == (7.0 if python else 9.0)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(0, 100).map(float), max_size=40),
       missing=st.sets(st.integers(0, 39)), count=st.integers(0, 50),
       minutes=st.integers(1, 25))
def test_sampling_agrees_with_a_reference(values: list[float], missing: set[int], count: int,
                                          minutes: int) -> None:
    history = SampleHistory()
    present = [(index, value) for index, value in enumerate(values) if index not in missing]
    for index, value in present:  # index 0 is the newest sample, at NOW
        history.add("PendingTasks", NOW - timedelta(seconds=30 * index), value)
    newest_first = [value for _, value in present]
    in_window = [value for index, value in present if index * 30 < minutes * 60]
    result = evaluate_formula(
        f"a = $PendingTasks.GetSample({count});"
        f"b = $PendingTasks.GetSample(TimeInterval_Minute * {minutes});"
        f"c = $PendingTasks.GetSamplePercent(TimeInterval_Minute * {minutes});"
        "d = $PendingTasks.Count();", history, NOW)
    assert result.error is None
    assert list(result.results["a"].values) == newest_first[:count]  # type: ignore[union-attr]
    assert list(result.results["b"].values) == in_window  # type: ignore[union-attr]
    assert result.results["c"] == min(100.0, 100.0 * len(in_window) / (minutes * 2))
    assert result.results["d"] == float(len(present))


formula_alphabet = st.sampled_from([*'$abxyz_019.,;:?!=<>&|+-*/() \n"', "TimeInterval_Hour",
                                    "$PendingTasks", "GetSample", "avg", "time", "//",
                                    "$TargetDedicatedNodes", "stop"])


@settings(max_examples=400, deadline=None)
@given(st.lists(formula_alphabet, max_size=40).map("".join))
def test_no_input_raises_anything_but_syntax_errors(text: str) -> None:
    try:
        parse_formula(text)
    except FormulaSyntaxError as exc:
        assert exc.line >= 1 and exc.column >= 1
    result = evaluate_formula(text, SampleHistory.constant({"PendingTasks": 3}, now=NOW), NOW)
    assert result.error is None or result.error.code
    assert result.as_batch_string().startswith("$TargetDedicatedNodes=")
