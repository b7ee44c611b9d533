"""`collect --via ssh` (`collect_via_ssh`): 200 output files from the nodes' task dirs over
SFTP, inputs left out, logs under logs/, and nothing fetched twice."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import pytest

from launcher.collect_ssh import collect_via_ssh
from tests.ssh_emulator.conftest import Cluster

pytestmark = pytest.mark.emulator

PER_TASK = 100
# Each file's content is its task and index repeated a varying number of times.
WRITE = (
    "mkdir -p out/deep; for i in $(seq 0 {last}); do n=$(printf %03d $i);"
    " head -c $((i * 37 + 1)) /dev/zero | tr '\\0' x > out/f-$n.txt;"
    " echo {task}-$n >> out/f-$n.txt; done; mv out/f-000.txt out/deep/; echo done-{task}"
)


def test_collect_200_files_over_sftp(cluster: Cluster, tmp_path: Path) -> None:
    from azure.batch import models

    job_id = cluster.job("collect")
    out_dir = tmp_path / "out"
    record = cluster.record(job_id, out_dir)
    source = tmp_path / "input.txt"
    source.write_text("an input, not an output\n")
    for task in ("a", "b"):
        script = WRITE.format(last=PER_TASK - 1, task=task)
        cluster.client.create_task(
            job_id,
            models.BatchTaskCreateOptions(
                id=task,
                command_line=f"/bin/bash -c {shlex.quote(script)}",
                resource_files=[
                    models.ResourceFile(http_url=source.as_uri(), file_path="input.txt")
                ],
            ),
        )
    for task in ("a", "b"):
        done = cluster.wait_task(job_id, task)
        assert done.execution_info.exit_code == 0

    got = collect_via_ssh(record, out_dir, max_workers=4, progress=False)
    assert got.files == 2 * (PER_TASK + 2)  # outputs + stdout.txt + stderr.txt per task
    for task in ("a", "b"):
        root = out_dir / job_id / task
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert "input.txt" not in files  # a resource file is an input
        assert "logs/stdout.txt" in files and "logs/stderr.txt" in files
        outputs = [f for f in files if f.startswith("out/")]
        assert len(outputs) == PER_TASK
        assert (root / "out" / "deep" / "f-000.txt").read_text() == f"x{task}-000\n"
        for i in (1, 57, PER_TASK - 1):
            data = (root / "out" / f"f-{i:03d}.txt").read_bytes()
            assert data == b"x" * (i * 37 + 1) + f"{task}-{i:03d}\n".encode()
        assert (root / "logs" / "stdout.txt").read_text() == f"done-{task}\n"
    expected = sum(p.stat().st_size for p in (out_dir / job_id).rglob("*") if p.is_file())
    assert got.bytes == expected and got.skipped == 0 and got.missing == []

    # again: everything is there with the same size, nothing is downloaded
    victim = out_dir / job_id / "a" / "out" / "f-042.txt"
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    victim.write_bytes(b"truncated")  # a different size: fetched again
    again = collect_via_ssh(record, out_dir, progress=False)
    assert (again.files, again.skipped) == (1, got.files - 1)
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest

    # the same through `batchlaunch collect RUN_ID --via ssh`
    victim.unlink()
    cli = cluster.cli("collect", job_id, "--via", "ssh", "--out", str(out_dir))
    assert cli.returncode == 0, cli.stderr
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest


def test_tasks_that_never_ran_are_reported_missing(cluster: Cluster, tmp_path: Path) -> None:
    import uuid

    from azure.batch import models

    job_id = f"blocked-{uuid.uuid4().hex[:8]}"
    cluster.client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=cluster.pool_id),
            uses_task_dependencies=True,
        )
    )
    record = cluster.record(job_id, tmp_path / "out")
    cluster.client.create_task(
        job_id, models.BatchTaskCreateOptions(id="bad", command_line="/bin/false")
    )
    cluster.client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="never",
            command_line="/bin/true",
            depends_on=models.BatchTaskDependencies(task_ids=["bad"]),
        ),
    )
    cluster.wait_task(job_id, "bad")
    got = collect_via_ssh(record, tmp_path / "out", progress=False)
    assert got.missing == ["never"]
    assert got.files == 2  # bad's stdout.txt and stderr.txt
    assert (tmp_path / "out" / job_id / "bad" / "logs" / "stderr.txt").is_file()
