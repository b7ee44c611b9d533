"""`batchlaunch logs RUN_ID TASK_ID [--follow] [--stderr]`, and a node's start-task logs.

batchlaunch logs RUN_ID TASK_ID             the task's stdout.txt
batchlaunch logs RUN_ID TASK_ID --stderr    its stderr.txt
batchlaunch logs RUN_ID TASK_ID --follow    new bytes as they arrive, until the task completes
batchlaunch logs RUN_ID --start-task --node ID   the start task's stdout and stderr on a node,
                                                 with the failing step highlighted

Exit codes: 0 printed (with --follow: the task succeeded); 1 with --follow, the task failed
(``task T failed (exit code N)`` on stderr); 2 an error (no such run or task, or the task
can never run because no node of the pool is usable).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from launcher.errors import UserError

if TYPE_CHECKING:
    from launcher.client import Client
    from launcher.runs import RunRecord


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_id")
@click.argument("task_id", required=False)
@click.option("--follow", "-f", is_flag=True, help="Stream new output until the task completes.")
@click.option("--stderr", "use_stderr", is_flag=True, help="stderr.txt instead of stdout.txt.")
@click.option("--start-task", is_flag=True, help="The start task's logs of --node.")
@click.option("--node", "node_id", metavar="ID", help="Node (with --start-task).")
@click.option(
    "--poll", default=0.5, show_default=True, type=click.FloatRange(min=0.05), hidden=True
)
def logs(
    run_id: str,
    task_id: str | None,
    follow: bool,
    use_stderr: bool,
    start_task: bool,
    node_id: str | None,
    poll: float,
) -> None:
    """Print (or follow) a task's stdout or stderr, or a node's start-task logs.

    \b
    Exit codes: 0 printed (with --follow: the task succeeded);
    1 with --follow: the task failed ("task T failed (exit code N)" on stderr);
    2 error (no such run/task, or no usable node in the pool to run the task).
    """
    from launcher.errors import RunFailed
    from launcher.logs import TaskFile, follow_task_file, print_task_file
    from launcher.runs import load_run

    record = load_run(run_id)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    if start_task:
        if node_id is None:
            raise UserError("logs --start-task: give the node with --node ID")
        if task_id is not None or follow:
            raise UserError("logs --start-task: takes no TASK_ID and no --follow")
        _start_task(record.client().batch, record.pool_id, node_id, use_stderr)
        return
    if task_id is None:
        raise UserError(
            f"logs {run_id}: give a TASK_ID (see `batchlaunch status {run_id}`), "
            "or --start-task --node ID"
        )
    client = record.client()
    batch = client.batch
    name = "stderr.txt" if use_stderr else "stdout.txt"

    def stuck() -> str | None:
        return _no_usable_node(client, record)

    if follow:

        def notice(data: bytes) -> None:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()

        follow_task_file(
            batch, record.job_id, task_id, name, write, poll=poll, notice=notice, stuck=stuck
        )
        failed = TaskFile(batch, record.job_id, task_id, name).outcome()
        if failed:
            raise RunFailed(f"task {task_id} {failed}")
    else:
        print_task_file(
            batch,
            record.job_id,
            task_id,
            name,
            write,
            fallback=lambda: _saved_copy(record, task_id, name),
            stuck=stuck,
        )


def _no_usable_node(client: Client, record: RunRecord) -> str | None:
    """Why an active task will never get a node: every node of the pool failed its start
    task (Batch keeps such a task active forever), with where to read why."""
    failures = client.unusable_pool(record.pool_id)
    if not failures:
        return None
    listing = ", ".join(f"{f.node_id} ({f.state})" for f in failures)
    return (
        f"pool {record.pool_id} has no usable node ({listing}); see why with "
        f"`batchlaunch logs {record.run_id} --start-task --node {failures[0].node_id}`"
    )


def _saved_copy(record: RunRecord, task_id: str, name: str) -> bytes | None:
    """The copy uploaded to storage when a task ended, for when the node is gone: a run's
    layout is ``PREFIX/TASK_ID/logs/NAME`` (`launcher.run`), an executor's
    ``functions/JOB/TASK_ID/NAME`` (next to the result, `launcher.executor`)."""
    import tempfile
    from pathlib import Path

    from launcher.run import LOGS_DIR

    store = record.client().store
    for blob in (
        f"{record.storage_prefix}/{task_id}/{LOGS_DIR}/{name}",
        f"{record.storage_prefix}/{task_id}/{name}",
    ):
        if store.exists(blob):
            with tempfile.TemporaryDirectory() as tmp:
                return store.download(blob, Path(tmp) / name).read_bytes()
    return None


def _start_task(batch: object, pool_id: str, node_id: str, only_stderr: bool) -> None:
    """Both files under headers; failure lines in bold red; a one-line verdict at the end."""
    from launcher.logs import FAILED_STEP, start_task_logs

    which = ("stderr",) if only_stderr else ("stdout", "stderr")
    found = start_task_logs(batch, pool_id, node_id, which)
    for kind in which:
        data = found.files.get(kind)
        if len(which) > 1:
            click.secho(f"==> startup/{kind}.txt <==", bold=True)
        if data is None:
            click.echo(f"(no startup/{kind}.txt on node {node_id})")
            continue
        for line in data.decode("utf-8", errors="replace").splitlines():
            if FAILED_STEP.match(line):
                click.secho(f">>> {line}", fg="red", bold=True)
            else:
                click.echo(line)
    if not found.failure:
        click.echo(f"start task of node {node_id}: {found.state}", err=True)
        return
    steps = "; ".join(f"step '{step}' failed ({what})" for step, what in found.failed_steps)
    click.secho(
        f"start task of node {node_id} FAILED: {steps or 'no failing step reported'}; "
        f"{found.failure} (shell in with `batchlaunch ssh PARAMS --node {node_id}`)",
        fg="red",
        bold=True,
        err=True,
    )
