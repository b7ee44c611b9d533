"""`batchlaunch autoscale check`: evaluate a formula offline, in Batch's result format.

A wrong formula is otherwise found out on Azure one evaluation interval at a time; this
runs the same evaluator as the emulator over a history given by flags or a file.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from emulator.autoscale import (
    DEALLOCATION_OPTIONS,
    FormulaSyntaxError,
    SampleHistory,
    evaluate_formula,
    parse_formula,
)
from emulator.autoscale.history import parse_timestamp
from launcher.autoscale import SCENARIOS, scenario_formula
from launcher.errors import RunFailed, UserError

SAMPLES_HELP = """Sample history file, instead of constant flags. CSV: a header
`timestamp,PendingTasks,ActiveTasks,...` (any metric names, with or without `$`), one row
per sample time (ISO 8601, UTC unless an offset is given); an empty cell is a missing
sample. A `seconds_ago` column may replace `timestamp` (0 = the evaluation time). JSON:
`{"PendingTasks": [["2026-01-05T10:00:00Z", 4], ...], ...}`. The evaluation time is the
newest sample unless --now is given. Flags may add metrics the file does not have."""

# flag -> metric it sets (a constant series over the last 30 minutes)
_FLAG_METRICS = {
    "active": "ActiveTasks",
    "running": "RunningTasks",
    "succeeded": "SucceededTasks",
    "failed": "FailedTasks",
    "dedicated": "CurrentDedicatedNodes",
    "low_priority": "CurrentLowPriorityNodes",
    "slots_per_node": "TaskSlotsPerNode",
    "cpu": "CPUPercent",
}


@click.group()
def autoscale() -> None:
    """Check autoscale formulas before Azure does, and generate common ones."""


@autoscale.command()
@click.argument("formula_file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--pending", type=click.FloatRange(0), help="$PendingTasks (default: active + running)."
)
@click.option(
    "--active", type=click.FloatRange(0), help="$ActiveTasks (default: pending - running)."
)
@click.option("--running", type=click.FloatRange(0), help="$RunningTasks (default 0).")
@click.option("--succeeded", type=click.FloatRange(0), help="$SucceededTasks.")
@click.option("--failed", type=click.FloatRange(0), help="$FailedTasks.")
@click.option(
    "--dedicated",
    type=click.IntRange(0),
    help="$CurrentDedicatedNodes, also the starting $TargetDedicatedNodes.",
)
@click.option(
    "--low-priority",
    type=click.IntRange(0),
    help="$CurrentLowPriorityNodes, also the starting $TargetLowPriorityNodes.",
)
@click.option("--slots-per-node", type=click.IntRange(1), help="$TaskSlotsPerNode (default 1).")
@click.option("--cpu", type=click.FloatRange(0, 100), help="$CPUPercent.")
@click.option(
    "--samples", "samples_file", type=click.Path(exists=True, dir_okay=False), help=SAMPLES_HELP
)
@click.option(
    "--now",
    "now_text",
    help="Evaluation time, ISO 8601 (default: the newest sample, or the current time).",
)
@click.option(
    "--scenario",
    type=click.Choice(list(SCENARIOS)),
    help="Print the generated formula of a scenario instead (with --max-nodes).",
)
@click.option("--max-nodes", type=click.IntRange(1), help="Maximum nodes of --scenario.")
@click.option(
    "--deallocation",
    type=click.Choice(DEALLOCATION_OPTIONS),
    default="taskcompletion",
    show_default=True,
    help="Scale-down policy of --scenario.",
)
@click.option("--utc-offset", type=float, help="workday: local time offset from UTC, hours.")
@click.option(
    "--dedicated-floor",
    type=click.IntRange(0),
    help="low_priority_first: dedicated nodes always kept.",
)
def check(
    formula_file: str | None,
    pending: float | None,
    active: float | None,
    running: float | None,
    succeeded: float | None,
    failed: float | None,
    dedicated: int | None,
    low_priority: int | None,
    slots_per_node: int | None,
    cpu: float | None,
    samples_file: str | None,
    now_text: str | None,
    scenario: str | None,
    max_nodes: int | None,
    deallocation: str,
    utc_offset: float | None,
    dedicated_floor: int | None,
) -> None:
    """Evaluate FORMULA_FILE (`-` for stdin) as Batch would and print its results.

    Prints Batch's evaluate result string
    (`$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=...;...`)
    and a one-line summary. Exit 2 on a syntax error (`error: FILE:LINE:COL: ...`), 1 when
    the evaluation fails (for example too few samples for GetSample's percentage).
    """
    if scenario is not None:
        _print_scenario(scenario, max_nodes, deallocation, utc_offset, dedicated_floor)
        return
    if formula_file is None:
        raise click.UsageError("give a FORMULA_FILE, or --scenario NAME --max-nodes N")
    label, formula = _read_formula(formula_file)
    try:
        parse_formula(formula)
    except FormulaSyntaxError as exc:
        raise UserError(f"{label}:{exc.line}:{exc.column}: {exc.message} ({exc.code})") from None

    given = {
        "active": active,
        "running": running,
        "succeeded": succeeded,
        "failed": failed,
        "dedicated": dedicated,
        "low_priority": low_priority,
        "slots_per_node": slots_per_node,
        "cpu": cpu,
    }
    flags: dict[str, float] = {
        _FLAG_METRICS[flag]: float(value) for flag, value in given.items() if value is not None
    }
    if pending is not None or active is not None or running is not None:
        flags["PendingTasks"] = pending if pending is not None else (active or 0) + (running or 0)
        flags["ActiveTasks"] = (
            active if active is not None else max(0.0, flags["PendingTasks"] - (running or 0))
        )
        flags["RunningTasks"] = running or 0.0
    if dedicated is not None or low_priority is not None:
        flags["SampleNodeCount"] = float((dedicated or 0) + (low_priority or 0))

    now = _parse_now(now_text)
    if samples_file:
        history = _read_samples(Path(samples_file))
        now = now or history.end_time() or datetime.now(UTC)
        for metric, value in flags.items():
            if history.count(metric):
                raise UserError(
                    f"{samples_file}: {metric} is in the file and given as a flag; drop one of them"
                )
            for index in range(60):
                history.add(metric, now - index * history.period, value)
    else:
        now = now or datetime.now(UTC)
        history = SampleHistory.constant(flags, span=timedelta(minutes=30), now=now)

    result = evaluate_formula(formula, history, now)
    click.echo(result.as_batch_string())
    if result.error is not None:
        error = result.error
        message = error.detail.split(": ", 1)[-1]
        statement = f" (statement: {error.statement})" if error.statement else ""
        raise RunFailed(
            f"error: {label}:{error.line}:{error.column}: {error.code}: {message}{statement}"
        )
    click.echo(result.summary() + (" (stopped by stop())" if result.stopped else ""))


def _print_scenario(
    scenario: str,
    max_nodes: int | None,
    deallocation: str,
    utc_offset: float | None,
    dedicated_floor: int | None,
) -> None:
    if max_nodes is None:
        raise click.UsageError("--scenario needs --max-nodes N")
    options: dict[str, Any] = {"deallocation": deallocation}
    if utc_offset is not None:
        if scenario != "workday":
            raise click.UsageError("--utc-offset applies to --scenario workday only")
        options["utc_offset_hours"] = utc_offset
    if dedicated_floor is not None:
        if scenario != "low_priority_first":
            raise click.UsageError("--dedicated-floor applies to --scenario low_priority_first")
        options["dedicated_floor"] = dedicated_floor
    try:
        click.echo(scenario_formula(scenario, max_nodes, **options), nl=False)
    except ValueError as exc:
        raise UserError(f"--scenario {scenario}: {exc}") from None


def _read_formula(formula_file: str) -> tuple[str, str]:
    if formula_file == "-":
        return "<stdin>", sys.stdin.read()
    path = Path(formula_file)
    try:
        return formula_file, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{formula_file}: cannot read the formula ({exc}); give a UTF-8 text file"
        ) from None


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise UserError(
            f"--now {text!r}: not an ISO 8601 time; use e.g. 2026-01-05T10:00:00Z"
        ) from None


def _read_samples(path: Path) -> SampleHistory:
    """A history from a CSV or JSON file (format in SAMPLES_HELP); UserError when bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the samples ({exc})") from None
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError('the top level must be an object {"Metric": [[time, value]]}')
            return SampleHistory.from_dict(data)
        return _samples_from_csv(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{path}: {exc}; see `batchlaunch autoscale check --help` for the format"
        ) from None


def _samples_from_csv(text: str) -> SampleHistory:
    rows = list(csv.reader(text.splitlines()))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError("the file is empty")
    header = [cell.strip() for cell in rows[0]]
    if not header or header[0] not in ("timestamp", "seconds_ago"):
        raise ValueError("the first column must be `timestamp` or `seconds_ago`")
    relative = header[0] == "seconds_ago"
    history = SampleHistory()
    for metric in header[1:]:
        history.samples(metric)  # refuses unknown metric names
    base = datetime.now(UTC).replace(microsecond=0)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise ValueError(f"line {number}: {len(row)} cells for {len(header)} columns")
        try:
            moment = (
                base - timedelta(seconds=float(row[0])) if relative else parse_timestamp(row[0])
            )
            for metric, cell in zip(header[1:], row[1:], strict=False):
                if cell.strip():
                    history.add(metric, moment, float(cell))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return history
