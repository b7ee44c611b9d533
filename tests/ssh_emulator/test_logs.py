"""`batchlaunch logs`: a task's output once and followed (ranged reads), and a node's failed
start task with its failing step. Jobs and tasks are made with the SDK and a run record
saved by the test, so nothing here depends on `batchlaunch run`."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.ssh_emulator.conftest import Cluster, wait_nodes, write_params

pytestmark = pytest.mark.emulator

LINES = 12


def _add_task(cluster: Cluster, job_id: str, task_id: str, script: str) -> None:
    import shlex

    from azure.batch import models

    cluster.client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id=task_id, command_line=f"/bin/bash -c {shlex.quote(script)}"
        ),
    )


def _state(cluster: Cluster, job_id: str, task_id: str) -> str:
    task = cluster.client.get_task(job_id, task_id)
    return str(getattr(task.state, "value", task.state))


def test_follow_streams_every_line_once_in_order(cluster: Cluster, tmp_path: Path) -> None:
    job_id = cluster.job("follow")
    cluster.record(job_id, tmp_path / "out")
    # partial lines too: each line is written in two pieces with a pause between them
    _add_task(
        cluster,
        job_id,
        "t1",
        f"for i in $(seq 1 {LINES}); do printf 'line-%s' $i; sleep 0.15; echo ' end';"
        " sleep 0.15; done; echo oops >&2",
    )
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as err_file:
        proc = subprocess.Popen(
            cluster.command("logs", job_id, "t1", "--follow", "--poll", "0.1"),
            env=cluster.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        # the first line arrived while the task was still writing: streamed, not at the end
        assert _state(cluster, job_id, "t1") != "completed"
        rest = proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = errors.read_text()
    assert err == ""  # nothing but the task's bytes, no SDK noise about files not there yet
    assert proc.returncode == 0, err
    assert (first + rest).splitlines() == [f"line-{i} end" for i in range(1, LINES + 1)]
    assert _state(cluster, job_id, "t1") == "completed"

    # once more without --follow: the whole file; --stderr: the other one
    again = cluster.cli("logs", job_id, "t1")
    assert again.stdout == first + rest
    err_only = cluster.cli("logs", job_id, "t1", "--stderr")
    assert err_only.returncode == 0 and err_only.stdout == "oops\n"


def test_logs_of_a_task_that_has_not_started(cluster: Cluster, tmp_path: Path) -> None:
    job_id = cluster.job("waiting")
    cluster.record(job_id, tmp_path / "out")
    missing = cluster.cli("logs", job_id, "no-such-task")
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"error: logs: task no-such-task of run {job_id}: ")


def _failing_pool(cluster: Cluster, tmp_path: Path) -> tuple[str, Path, Any]:
    """A 1-node pool whose rendered start task fails in its first pre_install hook."""
    from launcher.client import Client

    pool_id = f"sshfail-{uuid.uuid4().hex[:6]}"
    params = write_params(
        tmp_path / "fail.toml",
        cluster.info,
        pool_id,
        nodes=1,
        runtime="pre_install = [\"sh -c 'echo about to fail; echo boom >&2; exit 3'\"]\n",
    )
    Client(params).create_pool()
    (node,) = wait_nodes(cluster.client, pool_id, 1, {"starttaskfailed"}, timeout=60)
    return pool_id, params, node


def test_start_task_failure_shows_the_failing_step(cluster: Cluster, tmp_path: Path) -> None:
    pool_id, params, node = _failing_pool(cluster, tmp_path)
    try:
        record = cluster.record(f"run-{pool_id}", tmp_path / "out", pool_id=pool_id)
        shown = cluster.cli("logs", record.run_id, "--start-task", "--node", node.id)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout.splitlines()
        assert "==> startup/stdout.txt <==" in out and "==> startup/stderr.txt <==" in out
        assert "boom" in out
        flagged = [line for line in out if line.startswith(">>> ")]
        expected = (
            "batchlaunch: step 'pre_install hook 1' failed "
            "(command: sh -c 'echo about to fail; echo boom >&2; exit 3'; exit 3)"
        )
        assert flagged and set(flagged) == {f">>> {expected}"}
        assert f"start task of node {node.id} FAILED: {expected.split(': ', 1)[1]};" in (
            shown.stderr
        )
        assert "exit code 3" in shown.stderr  # from startTaskInfo

        only_err = cluster.cli("logs", record.run_id, "--start-task", "--node", node.id, "--stderr")
        assert "==> startup" not in only_err.stdout and "boom" in only_err.stdout

        # `ssh` to that pool: no usable node; the error names the node, its state, the
        # start-task failure and where to look
        refused = cluster.cli("ssh", str(params), "--", "true")
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: ")
        assert f"{node.id} (starttaskfailed: exit code 3" in refused.stderr
        assert f"--start-task --node {node.id}" in refused.stderr
        # ...but --node gets onto the failed node, to look around
        look = cluster.cli("ssh", str(params), "--node", node.id, "--", "cat startup/stderr.txt")
        assert look.returncode == 0, look.stderr
        assert "boom" in look.stdout
    finally:
        cluster.client.begin_delete_pool(pool_id, polling_interval=0.1).result()
        time.sleep(0)


def test_logs_of_a_completed_task_whose_file_is_gone(cluster: Cluster, tmp_path: Path) -> None:
    """The node no longer has the file (here: deleted through the file API): the copy the run
    uploaded to storage is printed instead, and without one the error says so."""
    job_id = cluster.job("gone")
    saved = cluster.record(job_id, tmp_path / "out")
    _add_task(cluster, job_id, "t1", "echo from-the-node")
    cluster.wait_task(job_id, "t1")
    assert cluster.cli("logs", job_id, "t1").stdout == "from-the-node\n"
    cluster.client.delete_task_file(job_id, "t1", "stdout.txt")

    missing = cluster.cli("logs", job_id, "t1")
    assert missing.returncode == 2
    assert "no longer has stdout.txt, and no copy was uploaded" in missing.stderr

    saved.client().store.upload_bytes(
        b"from-storage\n", f"{saved.storage_prefix}/t1/logs/stdout.txt"
    )
    copy = cluster.cli("logs", job_id, "t1")
    assert copy.returncode == 0, copy.stderr
    assert copy.stdout == "from-storage\n"


def test_follow_a_failing_task_reports_it_and_exits_1(cluster: Cluster, tmp_path: Path) -> None:
    job_id = cluster.job("followfail")
    cluster.record(job_id, tmp_path / "out")
    _add_task(cluster, job_id, "s", "echo before; exit 4")
    done = cluster.cli("logs", job_id, "s", "--follow", "--poll", "0.1")
    assert done.stdout == "before\n"
    assert done.returncode == 1, done.stderr
    assert done.stderr == "task s failed (exit code 4)\n"


def test_logs_of_a_task_on_a_pool_without_usable_nodes(cluster: Cluster, tmp_path: Path) -> None:
    """Every node failed its start task: the task stays active forever, so `logs` says why
    and where to look instead of suggesting to wait."""
    from azure.batch import models

    pool_id, _params, node = _failing_pool(cluster, tmp_path)
    try:
        job_id = f"stuck-{uuid.uuid4().hex[:6]}"
        cluster.client.create_job(
            models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id))
        )
        record = cluster.record(job_id, tmp_path / "out", pool_id=pool_id)
        _add_task(cluster, job_id, "t1", "echo never")
        for extra in ((), ("--follow", "--poll", "0.1")):
            shown = cluster.cli("logs", record.run_id, "t1", *extra, timeout=30)
            assert shown.returncode == 2, shown.stderr
            assert shown.stderr.startswith("error: logs: task t1 ")
            assert (
                f"pool {pool_id} has no usable node ({node.id} (starttaskfailed))" in shown.stderr
            )
            assert f"batchlaunch logs {job_id} --start-task --node {node.id}" in shown.stderr
            assert "wait with --follow" not in shown.stderr
    finally:
        cluster.client.begin_delete_pool(pool_id, polling_interval=0.1).result()
