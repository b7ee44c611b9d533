"""Language semantics: types and operators, functions, sample methods, variables, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emulator.autoscale import (
    EVALUATION_ERROR,
    INSUFFICIENT_SAMPLES,
    AutoScaleRunResult,
    SampleHistory,
    evaluate_formula,
)
from tests.autoscale.histories import NOW, gap_history, history


def run(text: str, samples: SampleHistory | None = None, **kwargs: object) -> AutoScaleRunResult:
    return evaluate_formula(text, samples or SampleHistory(), kwargs.pop("now", NOW),  # type: ignore[arg-type]
                            **kwargs)  # type: ignore[arg-type]


def value(text: str, samples: SampleHistory | None = None, name: str = "x") -> str:
    """The printed value of variable `name` after running `text`."""
    result = run(text, samples)
    assert result.error is None, result.error
    printed = dict(item.split("=", 1) for item in result.as_batch_string().split(";"))
    return printed[name]


def failure(text: str, samples: SampleHistory | None = None) -> tuple[str, int, int, str]:
    result = run(text, samples)
    assert result.error is not None
    return result.error.code, result.error.line, result.error.column, result.error.detail


EXPRESSIONS = [
    # (expression, printed value)
    ("1 + 2 * 3", "7"),
    ("(1 + 2) * 3", "9"),
    ("7 / 2", "3.5"),
    ("1 / 3", "0.333333333333333"),
    ("-2 - -3", "1"),
    ("1 / 0", "Infinity"),
    ("-1 / 0", "-Infinity"),
    ("0 / 0", "NaN"),
    ("2 > 1", "1"),
    ("2 <= 1", "0"),
    ("2 == 2 && 3 != 3", "0"),
    ("0 || 5", "1"),
    ("!0", "1"),
    ("!7", "0"),
    ("1 ? 2 : 3", "2"),
    ("0 ? 2 : 0 ? 3 : 4", "4"),
    ('"abc" < "abd"', "1"),
    ('"abc" == "abc"', "1"),
    ("1.5e3", "1500"),
    (".25", "0.25"),
    # timeintervals print as .NET TimeSpans
    ("TimeInterval_Minute * 90", "01:30:00"),
    ("2 * TimeInterval_Day + TimeInterval_Second", "2.00:00:01"),
    ("TimeInterval_Hour / 8", "00:07:30"),
    ("TimeInterval_Hour - TimeInterval_Minute * 61", "-00:01:00"),
    ("-TimeInterval_Week", "-7.00:00:00"),
    ("TimeInterval_100ns * 3", "00:00:00.0000003"),
    ("TimeInterval_Millisecond", "00:00:00.0010000"),
    ("TimeInterval_Year", "365.00:00:00"),
    ("TimeInterval_Zero", "00:00:00"),
    ("TimeInterval_Minute > TimeInterval_Second", "1"),
    # timestamps
    ("time()", "2026-01-05T10:00:00.000Z"),
    ("time() + TimeInterval_Hour", "2026-01-05T11:00:00.000Z"),
    ("TimeInterval_Hour + time()", "2026-01-05T11:00:00.000Z"),
    ("time() - TimeInterval_Day", "2026-01-04T10:00:00.000Z"),
    ('time() - time("2026-01-05T09:30:00Z")', "00:30:00"),
    ('time("Mon, 05 Jan 2026 08:00:00 GMT")', "2026-01-05T08:00:00.000Z"),
    ('time("2026-01-05T12:00:00.25+02:00")', "2026-01-05T10:00:00.250Z"),
    ('time("2026-01-07")', "2026-01-07T00:00:00.000Z"),
    ('time("2026-03")', "2026-03-01T00:00:00.000Z"),
    ('time("2026")', "2026-01-01T00:00:00.000Z"),
    ('time() > time("2026-01-01")', "1"),
    ("time().year", "2026"),
    ("time().month", "1"),
    ("time().day", "5"),
    ("time().weekday", "1"),
    ("(time() + 6 * TimeInterval_Day).weekday", "0"),
    ("time().hour", "10"),
    ("(time() + 90 * TimeInterval_Second).minute", "1"),
    ("(time() + 90 * TimeInterval_Second).second", "30"),
    # functions over doubleVecLists: doubles and vectors mixed
    ("avg(1, 2, 3, 4)", "2.5"),
    ("len(1, 2, 3)", "3"),
    ("sum(1, 2, 3.5)", "6.5"),
    ("min(4, 2, 8)", "2"),
    ("max(4, 2, 8)", "8"),
    ("range(4, 2, 8)", "6"),
    ("norm(3, 4)", "5"),
    ("std(2, 4, 4, 4, 5, 5, 7, 9)", "2.1380899352994"),  # sqrt(32/7), 15 digits
    ("std(5)", "0"),
    ("lg(8)", "3"),
    ("ln(1)", "0"),
    ("log(1000)", "3"),
    ("log(0)", "-Infinity"),
    ("lg(1, 2, 4)", "[0,1,2]"),
    ("percentile(val(1, 0), 50)", "1"),
]


@pytest.mark.parametrize(("expression", "printed"), EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_expressions(expression: str, printed: str) -> None:
    assert value(f"x = {expression};") == printed


def test_vectors_from_samples_are_newest_first() -> None:
    samples = history(PendingTasks=[5, 4, 3, 2, 1])
    assert value("x = $PendingTasks.GetSample(3);", samples) == "[5,4,3]"
    assert value("x = $PendingTasks.GetSample(10);", samples) == "[5,4,3,2,1]"
    assert value("x = val($PendingTasks.GetSample(5), 0);", samples) == "5"
    assert value("x = $PendingTasks.GetSample(TimeInterval_Minute);", samples) == "[5,4]"
    # look-back range (now - 2 min, now - 30 s]: the samples at -30s, -60s, -90s
    assert value("x = $PendingTasks.GetSample(TimeInterval_Second * 30, "
                 "TimeInterval_Minute * 2);", samples) == "[4,3,2]"
    # an absolute start time: samples after it
    assert value('x = $PendingTasks.GetSample(time("2026-01-05T09:58:59Z"));', samples) == \
        "[5,4,3]"


def test_vector_arithmetic_and_functions() -> None:
    samples = history(PendingTasks=[6, 4, 2], RunningTasks=[1, 1, 1])
    assert value("x = $PendingTasks.GetSample(3) * 2 + 1;", samples) == "[13,9,5]"
    assert value("x = 12 / $PendingTasks.GetSample(3);", samples) == "[2,3,6]"
    assert value("x = $PendingTasks.GetSample(3) - $RunningTasks.GetSample(3);", samples) == \
        "[5,3,1]"
    assert value("x = avg($PendingTasks.GetSample(3), 8);", samples) == "5"
    assert value("x = percentile($PendingTasks.GetSample(3), 50);", samples) == "4"
    assert value("x = percentile($PendingTasks.GetSample(3), 100);", samples) == "6"
    assert value("x = percentile($PendingTasks.GetSample(3), 0);", samples) == "2"
    assert value("x = log($PendingTasks.GetSample(1) * 0 + 100);", samples) == "[2]"
    code, _, _, detail = failure("x = $PendingTasks.GetSample(3) + $RunningTasks.GetSample(2);",
                                 samples)
    assert code == EVALUATION_ERROR and "vectors differ in length (3 and 2)" in detail


def test_sample_percent_count_period_and_history_begin() -> None:
    # 10 samples from 150 s to 420 s ago (the 5 newest missing): of the 20 possible in the
    # last 10 minutes, 10 exist = 50 %; of the 16 in (now-10min, now-2min], 10 = 62.5 %
    samples = gap_history("CPUPercent", [50.0] * 10, skip=5)
    assert value("x = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10);", samples) == "50"
    assert value("x = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 2, "
                 "TimeInterval_Minute * 10);", samples) == "62.5"  # 10 of 16
    assert value("x = $CPUPercent.Count();", samples) == "10"
    assert value("x = $CPUPercent.GetSamplePeriod();", samples) == "00:00:30"
    assert value("x = $CPUPercent.HistoryBeginTime();", samples) == "2026-01-05T09:53:00.000Z"
    assert value("x = $CPUPercent.GetSample(TimeInterval_Minute * 10, 50);", samples) == \
        "[" + ",".join(["50"] * 10) + "]"
    code, line, column, detail = failure(
        "a = 1;\nx = $CPUPercent.GetSample(TimeInterval_Minute * 10, 75);", samples)
    assert (code, line, column) == (INSUFFICIENT_SAMPLES, 2, 5)
    assert detail == ("Line 2, Col 5: Insufficient data from data set: $CPUPercent wanted "
                      "75%, received 50%")
    # the docs' own example: 18 of 20 samples -> 95 % fails and 80 % succeeds
    docs = gap_history("CPUPercent", [1.0] * 18, skip=2)
    assert failure("x = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95);", docs)[0] == \
        INSUFFICIENT_SAMPLES
    assert value("x = len($CPUPercent.GetSample(TimeInterval_Minute * 10, 80));", docs) == "18"


def test_get_sample_count_without_samples_is_empty() -> None:
    assert value("x = len($ActiveTasks.GetSample(1));") == "0"
    assert value("x = max(0, $ActiveTasks.GetSample(1));") == "0"
    assert failure("x = $ActiveTasks.HistoryBeginTime();")[3].endswith(
        "$ActiveTasks has no samples yet")


def test_plain_service_values_read_the_newest_sample() -> None:
    samples = history(CurrentDedicatedNodes=[3, 7], CurrentLowPriorityNodes=2,
                      TaskSlotsPerNode=4)
    text = "a = $CurrentDedicatedNodes; b = $CurrentLowPriority; c = $TaskSlotsPerNode;"
    result = run(text, samples)
    assert result.as_batch_string().endswith(";a=3;b=2;c=4")
    # defaults: no nodes, one slot per node; targets start at the current node counts
    assert run(text).as_batch_string() == (
        "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
        "a=0;b=0;c=1")
    assert (result.target_dedicated, result.target_low_priority) == (3, 2)


def test_writable_variables_aliases_and_result_order() -> None:
    result = run("zeta = 1; $alpha = 2; Beta = 3; $TargetDedicated = 4; "
                 "$TargetLowPriority = 5; $NodeDeallocationOption = retaineddata;")
    # targets set through the legacy aliases are named that way (Batch's own example)
    assert result.as_batch_string() == (
        "$TargetDedicated=4;$TargetLowPriority=5;$NodeDeallocationOption=retaineddata;"
        "$alpha=2;Beta=3;zeta=1")
    assert (result.target_dedicated, result.target_low_priority) == (4, 5)
    assert result.results["$TargetDedicatedNodes"] == 4.0
    # Batch's example answer for `$TargetDedicated=1`: the legacy shape, no low-priority target
    assert run("$TargetDedicated=1").as_batch_string() == (
        "$TargetDedicated=1;$NodeDeallocationOption=requeue")
    assert run("$TargetDedicatedNodes=1").as_batch_string() == (
        "$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue")
    assert run("$TargetDedicated = 9; $TargetDedicatedNodes = 2;").as_batch_string().startswith(
        "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;")
    # the full name wins over its alias, whatever the order
    assert run("$TargetDedicatedNodes = 2; $TargetDedicated = 9;").target_dedicated == 2
    assert run("$TargetDedicated = 9; $TargetDedicatedNodes = 2;").target_dedicated == 2
    # reading the target before setting it gives the pool's current target
    assert run("$TargetDedicatedNodes = $TargetDedicatedNodes + 1;",
               target_dedicated=4).target_dedicated == 5
    # service-defined names are case-insensitive; user variables keep their spelling
    assert run("$targetdedicatednodes = 3; $nodedeallocationoption = terminate;").summary() == \
        "target: 3 dedicated, 0 low-priority; deallocation: terminate"
    assert run('$NodeDeallocationOption = "taskcompletion";').node_deallocation_option == \
        "taskcompletion"


def test_stop_ends_the_run_with_what_is_set() -> None:
    result = run("$TargetDedicatedNodes = 3; x = 1; 1 ? stop() : 0; $TargetDedicatedNodes = 9;")
    assert result.error is None and result.stopped
    assert result.target_dedicated == 3
    assert result.as_batch_string().endswith(";x=1")


def test_rand_is_between_zero_and_one_and_seedable() -> None:
    first = run("x = rand(); y = rand();", seed=7).results
    assert first == run("x = rand(); y = rand();", seed=7).results
    assert all(0 <= float(first[name]) < 1 for name in ("x", "y"))  # type: ignore[arg-type]
    assert first["x"] != first["y"]


ERRORS = [
    # (formula, line, column, words): evaluation errors, each naming its position
    ("$something_useless", 1, 1, "undefined variable $something_useless"),
    ("x = 1;\ny = x + z;", 2, 9, "undefined variable z"),
    ("x = $PendingTasks + 1;", 1, 5, "$PendingTasks is a sampled metric, not a value"),
    ("x = TimeInterval_Minute + 1;", 1, 5, "operator + does not apply to timeinterval and double"),
    ("x = time() * 2;", 1, 5, "operator * does not apply to timestamp and double"),
    ('x = "a" < 1;', 1, 5, "operator < does not compare string with double"),
    ("x = TimeInterval_Hour ? 1 : 2;", 1, 5, "the condition of ?: must be a double"),
    ("x = !TimeInterval_Hour;", 1, 5, "operator ! does not apply to timeinterval"),
    ("x = (1).hour;", 1, 6, "member .hour needs a timestamp, got double"),
    ("x = time().minutes;", 1, 5, "a timestamp has no member .minutes"),
    ('x = time("yesterday");', 1, 5, "'yesterday' is neither a W3C-DTF nor an RFC 1123"),
    ("x = avg($CPUPercent.GetSample(1));", 1, 5, "avg() of an empty list"),
    ("x = val(avg(1), 1);", 1, 5, "val(): index 1 is out of range for a vector of 1"),
    ("x = percentile(1, 101);", 1, 5, "p must be between 0 and 100"),
    ("x = $CPUPercent.GetSample(2.5);", 1, 5, "count must be a whole number"),
    ('x = $CPUPercent.GetSample("a");', 1, 5, "the start must be a timeinterval or a timestamp"),
    ("x = $CPUPercent.GetSample(TimeInterval_Hour, 120);", 1, 5,
     "sample percentage must be between 0 and 100"),
    ("$TargetDedicatedNodes = TimeInterval_Hour;", 1, 1,
     "$TargetDedicatedNodes must be a double, got timeinterval"),
    ("$NodeDeallocationOption = 3;", 1, 1, "$NodeDeallocationOption must be one of requeue"),
    ('$NodeDeallocationOption = "later";', 1, 1, "got later"),
    ("$TargetDedicatedNodes = -1;", 1, 1, "must be a non-negative finite number, got -1"),
    ("x = 1;\n$TargetLowPriorityNodes = 1 / 0;", 2, 1, "got Infinity"),
    ("x = 1e308 * TimeInterval_Year;", 1, 1, "out of range"),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), ERRORS,
                         ids=[case[3][:40] for case in ERRORS])
def test_evaluation_errors(text: str, line: int, column: int, words: str) -> None:
    result = run(text, target_dedicated=2)
    assert result.error is not None
    assert result.error.code == EVALUATION_ERROR
    assert (result.error.line, result.error.column) == (line, column)
    assert words in result.error.detail
    assert result.error.detail.startswith(f"Line {line}, Col {column}: ")
    # the failing statement is named, and nothing is applied
    assert dict(result.error.values)["Statement"] == result.error.statement
    assert result.as_batch_string() == (
        "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue")


def test_history_refuses_unknown_metrics_and_round_trips() -> None:
    with pytest.raises(ValueError, match="unknown metric 'PendingTask'"):
        SampleHistory().add("PendingTask", NOW, 1)
    samples = history(PendingTasks=[1, 2])
    samples.add("$CPUPercent", NOW, 50)
    again = SampleHistory.from_dict(samples.to_dict())
    assert again.samples("PendingTasks") == samples.samples("$PendingTasks")
    assert again.end_time() == NOW
    again.trim(NOW - timedelta(seconds=10))
    assert again.count("PendingTasks") == 1
    naive = SampleHistory({"ActiveTasks": [(datetime(2026, 1, 5, 10, 0), 3.0)]})
    assert naive.latest("ActiveTasks", NOW) == 3.0
    assert naive.begin_time("ActiveTasks") == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="must be \\[timestamp, value\\]"):
        SampleHistory.from_dict({"ActiveTasks": [[1, 2, 3]]})


def test_constant_history_spans_thirty_minutes() -> None:
    samples = SampleHistory.constant({"PendingTasks": 4}, now=NOW)
    assert samples.count("PendingTasks") == 60
    assert samples.begin_time("PendingTasks") == NOW - timedelta(minutes=29, seconds=30)
    assert value("x = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 30);", samples) == \
        "100"


def test_run_result_in_the_rest_shape() -> None:
    ok = run("$TargetDedicatedNodes = 2;")
    assert ok.to_dict() == {
        "timestamp": "2026-01-05T10:00:00Z",
        "results": "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;"
                   "$NodeDeallocationOption=requeue",
    }
    failed = run("x = y;")
    assert failed.to_dict()["error"] == {
        "code": "AutoScalingFormulaEvaluationError",
        "message": "Autoscale evaluation failed",
        "values": [{"name": "Message", "value": "Line 1, Col 5: undefined variable y"},
                   {"name": "Statement", "value": "x = y"}],
    }


def test_windows_that_are_not_a_multiple_of_the_period() -> None:
    samples = history(PendingTasks=[1, 2, 3, 4])
    # 45 s holds the samples at now and now-30s: 2 of ceil(45/30) = 2 possible = 100 %
    assert value("x = $PendingTasks.GetSamplePercent(TimeInterval_Second * 45);", samples) == \
        "100"
    assert value("x = $PendingTasks.GetSample(TimeInterval_Second * 45);", samples) == "[1,2]"
    # 10 s holds one possible sample (the one at now)
    assert value("x = $PendingTasks.GetSamplePercent(TimeInterval_Second * 10);", samples) == \
        "100"
    # 150 s: ceil(5) = 5 possible, 4 exist -> 80 %
    assert value("x = $PendingTasks.GetSamplePercent(TimeInterval_Second * 150);", samples) == \
        "80"
