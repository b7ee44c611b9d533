"""`batchlaunch run`, `status` and `collect`: a parameter file's tasks on its pool."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from launcher.commands.options import load, set_option
from launcher.errors import RunFailed, about_file

if TYPE_CHECKING:
    from rich.console import Console

    from launcher.run import RunReport


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class _LazyConsole:
    """A `rich` console made on first use: importing rich costs ~15 ms that `run --detach
    -q` (scripts submitting many runs) never needs."""

    def __init__(self) -> None:
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = _console()
        return getattr(self._console, name)


def _print_report(report: RunReport, console: Console) -> None:
    """A summary table, then each failed task with the tail of its stderr."""
    from rich.table import Table

    from launcher.run import failed_lines, node_failure_lines

    counts = report.counts
    table = Table(title=f"run {report.record.run_id}", show_header=False, title_justify="left")
    table.add_row("pool", report.record.pool_id)
    table.add_row("tasks", str(max(counts.total, report.record.task_count)))
    table.add_row("succeeded", str(counts.succeeded))
    table.add_row("failed", str(counts.failed))
    table.add_row("active / running", f"{counts.active} / {counts.running}")
    if report.blocked:
        table.add_row("blocked (a dependency failed)", str(len(report.blocked)))
    if report.summary is not None:
        table.add_row("elapsed", f"{report.summary.elapsed_seconds:.1f} s")
    if report.collected is not None:
        c = report.collected
        table.add_row(
            "outputs",
            f"{c.directory} ({c.downloaded} downloaded, {c.skipped} already there)",
        )
    console.print(table)
    for line in failed_lines(report.failed):
        console.print(line, style="red" if line.startswith("task ") else None, markup=False)
    for pattern, task_ids in report.missing_outputs.items():
        shown = ", ".join(task_ids[:5]) + (" ..." if len(task_ids) > 5 else "")
        console.print(
            f"warning: output pattern {pattern!r} matched no file in {len(task_ids)} "
            f"successful task(s): {shown}; check the path the command writes to",
            style="yellow",
            markup=False,
        )
    if report.node_failures:
        console.print(
            "no node of the pool can run tasks: every start task failed"
            if report.pool_unusable
            else f"warning: {len(report.node_failures)} node(s) failed their start task",
            style="red" if report.pool_unusable else "yellow",
            markup=False,
        )
        for line in node_failure_lines(report.node_failures):
            console.print(line, style="bold" if "step '" in line else None, markup=False)
        console.print(
            f"see the full logs: batchlaunch logs {report.record.run_id} --start-task "
            f"--node {report.node_failures[0].node_id}",
            markup=False,
        )


def _outcome(report: RunReport) -> None:
    if report.pool_unusable:
        raise RunFailed(
            f"run {report.record.run_id}: pool {report.record.pool_id} has no usable node "
            "(start task failed); fix the [runtime] and run again with the same --run-id"
        )
    if report.counts.failed or report.blocked:
        raise RunFailed(
            f"{report.counts.failed} task(s) failed"
            + (f", {len(report.blocked)} blocked by a failed dependency" if report.blocked else "")
            + f" in run {report.record.run_id}"
        )


@click.command()
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run-id",
    help="Name of the run (its Batch job id). Reusing an id resumes that run: tasks that "
    "exist are not added again, outputs already downloaded are not fetched again. "
    "Default: JOB_ID-YYYYMMDD-HHMMSS.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Download outputs under OUT/RUN_ID/TASK_ID/ (default ./out).",
)
@click.option("--detach", is_flag=True, help="Return after submission; see `status`/`collect`.")
@click.option(
    "--keep-pool/--delete-pool",
    "keep_pool",
    default=None,
    help="After the run, keep or delete the pool. Default: delete a pool this run created "
    "(no idle nodes to pay for), keep one that already existed.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With the --run-id of an earlier run: delete its failed tasks (and those waiting on "
    "them) and run them again with the parameter file's current definitions.",
)
@click.option("--timeout", type=float, help="Stop following after SECONDS (tasks go on).")
@set_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run(
    params: Path,
    run_id: str | None,
    out_dir: Path | None,
    detach: bool,
    keep_pool: bool | None,
    retry_failed: bool,
    timeout: float | None,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Run PARAMS's [[tasks]] on its pool and collect their outputs.

    Creates the pool if needed (its start task installs the [runtime]), uploads resource
    files (unchanged files are not uploaded again), creates a job named after the run,
    expands sweeps into tasks with stable ids and submits them in parallel chunks of 100.
    Then follows progress (one request per poll, whatever the number of tasks), downloads
    each task's outputs and stdout/stderr to OUT/RUN_ID/TASK_ID/, and prints a summary.

    Exit status: 0 when every task succeeded, 1 when any failed (each is listed with the
    tail of its stderr), 2 for a bad parameter file or missing credentials.
    """
    from launcher.client import Client
    from launcher.run import follow_run, submit_run, teardown_pool

    console = cast("Console", _LazyConsole())
    loaded = load(params, overrides)
    client = Client(loaded, progress_console=console)

    def say(message: str) -> None:
        if not quiet:
            console.print(message, markup=False)

    if retry_failed and run_id is None:
        raise click.UsageError("--retry-failed needs the --run-id of the run to retry")
    with about_file(params):
        submission = submit_run(
            loaded,
            run_id=run_id,
            out_dir=out_dir,
            client=client,
            retry_failed=retry_failed,
            say=say,
        )
    record = submission.record
    if submission.definitions_changed:
        console.print(
            f"warning: the tasks of {params} (or their resource files) changed since run "
            f"{record.run_id} started; tasks already submitted keep their old definition. "
            "Use --retry-failed to run the failed ones again with the new definition, or a "
            "new --run-id for a fresh run.",
            style="yellow",
            markup=False,
        )
    say(
        f"run {record.run_id}: {submission.added} task(s) added, {submission.existing} already"
        f" present ({submission.seconds:.1f} s)"
    )
    if detach:
        click.echo(record.run_id)
        say(f"follow with: batchlaunch status {record.run_id}; batchlaunch collect {record.run_id}")
        return
    report = follow_run(
        record,
        client,
        progress=not quiet and sys.stderr.isatty(),
        timeout=timeout,
        tasks=loaded.task_instances(),
    )
    _print_report(report, console)
    if report.summary is not None and report.summary.timed_out:
        _outcome(report)  # failures so far come first
        raise RunFailed(
            f"run {record.run_id}: still running after {timeout:g} s; the pool is kept. "
            f"Follow it with `batchlaunch status {record.run_id}`, then "
            f"`batchlaunch collect {record.run_id}`"
        )
    # Only a pool this command created is deleted by default: one that existed before it
    # (even one an earlier attempt of this run created) may be serving other work.
    delete = submission.pool_created if keep_pool is None else not keep_pool
    teardown_pool(record, client, delete, say)
    _outcome(report)


@click.command()
@click.argument("run_id")
def status(run_id: str) -> None:
    """Task counts of RUN_ID and each failed task with the tail of its stderr.

    One request for the counts; failures add one listing plus one read per failed task.
    Exit status 1 when any task failed, else 0 (also while tasks still run).
    """
    from launcher.run import run_status
    from launcher.runs import load_run

    record = load_run(run_id)
    report = run_status(record, record.client())
    _print_report(report, _console())
    _outcome(report)


@click.command()
@click.argument("run_id")
@click.option(
    "--via",
    type=click.Choice(["blob", "ssh"]),
    default="blob",
    show_default=True,
    help="blob: from the storage container the tasks uploaded to; ssh: straight from the "
    "nodes' task directories over SFTP (for outputs too large or many for blob round trips).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Download under OUT/RUN_ID/TASK_ID/ (default: the run's --out).",
)
def collect(run_id: str, via: str, out_dir: Path | None) -> None:
    """Download RUN_ID's outputs and logs; files already downloaded are skipped."""
    from launcher.runs import load_run

    record = load_run(run_id)
    console = _console()
    if via == "ssh":
        from launcher.collect_ssh import collect_via_ssh

        result = collect_via_ssh(record, Path(out_dir or record.out_dir))
        console.print(
            f"{result.files} file(s), {result.bytes} bytes from the nodes; "
            f"{result.skipped} already there",
            markup=False,
        )
        if result.missing:
            console.print(
                f"warning: nothing to fetch for {len(result.missing)} task(s) (never ran, or "
                f"their node is gone): {', '.join(result.missing[:10])}"
                + (" ..." if len(result.missing) > 10 else "")
                + f"; try: batchlaunch collect {run_id} --via blob",
                style="yellow",
                markup=False,
            )
        return
    from launcher.run import collect_run

    got = collect_run(record, record.client(), out_dir)
    console.print(
        f"{got.directory}: {got.downloaded} file(s) downloaded ({got.bytes} bytes), "
        f"{got.skipped} already there",
        markup=False,
    )
