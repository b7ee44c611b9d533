"""`batchlaunch autoscale check` through the real command, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.autoscale import parse_formula
from tests.autoscale.histories import DATA

SEED = DATA / "seed_clusterlesshpc_pending.txt"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))

    def invoke(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher.cli", "autoscale", "check", *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )

    return invoke


def test_seed_formula_with_constant_flags(cli) -> None:  # type: ignore[no-untyped-def]
    # 7 pending tasks in every sample: avg 7 -> min(10, 7) = 7
    done = cli(str(SEED), "--pending", "7", "--now", "2026-01-05T10:00:00Z")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "$TargetDedicatedNodes=7;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;"
        "maxNumberofVMs=10;pendingTaskSamplePercent=100;pendingTaskSamples=7;startingNumberOfVMs=1",
        "target: 7 dedicated, 0 low-priority; deallocation: taskcompletion",
    ]


def test_active_and_running_make_pending_and_nodes_start_the_targets(cli) -> None:  # type: ignore[no-untyped-def]
    # CloudClient default: active 3 -> 3 low-priority; --dedicated 2 stays the dedicated target
    done = cli(str(DATA / "cloudclient_default.txt"), "--active", "3", "--running", "4",
               "--dedicated", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "target: 2 dedicated, 3 low-priority; deallocation: taskcompletion")
    # the seed formula reads $PendingTasks = active + running = 7
    done = cli(str(SEED), "--active", "3", "--running", "4")
    assert "pendingTaskSamples=7;" in done.stdout


def test_syntax_error_prints_file_line_column_and_exits_2(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.txt"
    bad.write_text("a = 1;\nb = $CPUPercent + ;\n")
    done = cli(str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"error: {bad}:2:19: expected an expression, found ';' (AutoScalingFormulaSyntaxError)")


def test_evaluation_error_exits_1_with_position_and_statement(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    formula = tmp_path / "cpu.txt"
    formula.write_text("// needs 90 % of an hour\n"
                       "cpu = $CPUPercent.GetSample(TimeInterval_Minute * 60, 90);\n"
                       "$TargetDedicatedNodes = avg(cpu) > 50 ? 5 : 1;\n")
    done = cli(str(formula), "--cpu", "80", "--dedicated", "3")
    assert done.returncode == 1
    # 30 minutes of constant samples = 60 of 120 = 50 %: nothing applied
    assert done.stdout.strip() == (
        "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue")
    assert done.stderr.strip() == (
        f"error: {formula}:2:7: InsufficientSampleData: Insufficient data from data set: "
        "$CPUPercent wanted 90%, received 50% (statement: cpu = $CPUPercent.GetSample("
        "TimeInterval_Minute * 60, 90))")


def test_samples_from_csv_and_json(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    formula = tmp_path / "f.txt"
    formula.write_text("x = $PendingTasks.GetSample(TimeInterval_Minute * 2);\n"
                       "y = $ActiveTasks.GetSample(3);\n"
                       "$TargetDedicatedNodes = max(x) + $CurrentDedicatedNodes;\n")
    csv_file = tmp_path / "samples.csv"
    csv_file.write_text("seconds_ago,PendingTasks,$ActiveTasks\n0,4,3\n30,,2\n60,8,1\n")
    done = cli(str(formula), "--samples", str(csv_file), "--dedicated", "3")
    assert done.returncode == 0, done.stderr
    # newest first; the empty cell is a missing sample; 8 + 3 dedicated = 11
    assert done.stdout.splitlines()[0] == (
        "$TargetDedicatedNodes=11;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
        "x=[4,8];y=[3,2,1]")
    json_file = tmp_path / "samples.json"
    json_file.write_text(json.dumps({
        "PendingTasks": [["2026-01-05T10:00:00Z", 2], ["2026-01-05T09:59:30Z", 6]],
        "ActiveTasks": [{"timestamp": "2026-01-05T09:59:00Z", "value": 1}],
    }))
    done = cli(str(formula), "--samples", str(json_file))
    assert done.returncode == 0, done.stderr
    # evaluated at the newest sample (10:00): x = [2, 6]; max 6 + 0 nodes
    assert done.stdout.splitlines()[0].endswith("x=[2,6];y=[1]")
    assert done.stdout.splitlines()[1].startswith("target: 6 dedicated")


@pytest.mark.parametrize(("content", "words"), [
    ("when,PendingTasks\n", "the first column must be `timestamp` or `seconds_ago`"),
    ("timestamp,PendingTask\n", "unknown metric 'PendingTask'"),
    ("timestamp,PendingTasks\nyesterday,3\n", "line 2: not an ISO 8601 timestamp"),
    ("seconds_ago,PendingTasks\n0,many\n", "line 2: could not convert"),
    ('{"PendingTasks": 3}', "PendingTasks: expected a list of [timestamp, value] samples"),
])
def test_bad_samples_file_is_a_one_line_user_error(cli, tmp_path: Path, content: str,  # type: ignore[no-untyped-def]
                                                   words: str) -> None:
    samples = tmp_path / "s.csv"
    samples.write_text(content)
    done = cli(str(SEED), "--samples", str(samples))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {samples}: ")
    assert words in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_flag_and_file_giving_the_same_metric_is_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    samples = tmp_path / "s.csv"
    samples.write_text("seconds_ago,PendingTasks\n0,3\n")
    done = cli(str(SEED), "--samples", str(samples), "--pending", "4")
    assert done.returncode == 2
    assert "PendingTasks is in the file and given as a flag" in done.stderr


def test_scenario_prints_a_formula_that_checks(cli) -> None:  # type: ignore[no-untyped-def]
    done = cli("--scenario", "low_priority_first", "--max-nodes", "6", "--dedicated-floor", "2",
               "--deallocation", "requeue")
    assert done.returncode == 0, done.stderr
    parse_formula(done.stdout)
    assert "dedicatedFloor = 2;" in done.stdout
    # 9 pending tasks: 2 dedicated + min(6 - 2, 9 - 2) = 4 low-priority
    again = cli("-", "--pending", "9", stdin=done.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        "target: 2 dedicated, 4 low-priority; deallocation: requeue")


@pytest.mark.parametrize(("args", "words"), [
    (["--scenario", "workday"], "--scenario needs --max-nodes"),
    (["--scenario", "pending_tasks", "--max-nodes", "3", "--utc-offset", "2"],
     "--utc-offset applies to --scenario workday only"),
    ([], "give a FORMULA_FILE"),
    (["/nonexistent/formula.txt"], "/nonexistent/formula.txt: cannot read the formula"),
])
def test_usage_errors(cli, args: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    done = cli(*args)
    assert done.returncode == 2
    assert words in done.stderr
    assert "Traceback" not in done.stderr


def test_help_documents_the_samples_format(cli) -> None:  # type: ignore[no-untyped-def]
    done = cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "timestamp,PendingTasks,ActiveTasks" in text
    assert "seconds_ago" in text
    assert '{"PendingTasks": [["2026-01-05T10:00:00Z", 4]' in text
