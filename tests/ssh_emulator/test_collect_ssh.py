"""`collect --via ssh` (`collect_via_ssh`): 200 output files from the nodes' task dirs over
SFTP, only the declared outputs (not inputs or scratch files), logs under logs/, nothing
fetched twice, and a clear error when the pool is gone."""

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
    " echo {task}-$n >> out/f-$n.txt; done; mv out/f-000.txt out/deep/;"
    " echo scratch > scratch.tmp; echo notes > out/notes.md; echo h > out/.hidden.txt;"
    " echo s > summary.csv; echo done-{task}"
)
#: As in a parameter file: `**` spans out/deep, a literal name, and nothing for the stray
#: files (scratch.tmp, out/notes.md, the dotfile) or the input.
OUTPUTS = '["out/**/*.txt", "summary.csv"]'


def _params_with_tasks(cluster: Cluster, path: Path, tasks: list[str]) -> Path:
    entries = "".join(
        f'\n[[tasks]]\nid = "{t}"\ncommand = "true"\noutputs = {OUTPUTS}\n' for t in tasks
    )
    path.write_text(cluster.params.read_text() + entries)
    return path


def test_collect_200_files_over_sftp(cluster: Cluster, tmp_path: Path) -> None:
    from azure.batch import models

    job_id = cluster.job("collect")
    out_dir = tmp_path / "out"
    record = cluster.record(
        job_id, out_dir, params=_params_with_tasks(cluster, tmp_path / "p.toml", ["a", "b"])
    )
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
    # outputs + summary.csv + stdout.txt + stderr.txt per task
    assert got.files == 2 * (PER_TASK + 3)
    for task in ("a", "b"):
        root = out_dir / job_id / task
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert "input.txt" not in files  # a resource file is an input
        # undeclared files stay on the node, as with --via blob
        assert not {"scratch.tmp", "out/notes.md", "out/.hidden.txt"} & set(files)
        assert "logs/stdout.txt" in files and "logs/stderr.txt" in files
        assert "summary.csv" in files
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


def test_output_patterns_match_as_batch_output_files() -> None:
    from launcher.collect_ssh import output_matcher

    rx = output_matcher(["out/**/*.txt", "summary.csv", "x/?[ab].dat", "*.log", "[!z]*.q"])
    assert rx is not None
    yes = ["out/a.txt", "out/d/e/a.txt", "summary.csv", "x/1a.dat", "a.log", "b.q"]
    no = ["out/.h.txt", "out/a.csv", "sub/summary.csv", "x/1c.dat", "d/a.log", ".a.log", "z.q"]
    assert [p for p in yes if not rx.match(p)] == []
    assert [p for p in no if rx.match(p)] == []
    assert output_matcher([]) is None


def test_collect_after_the_pool_is_gone_says_so(cluster: Cluster, tmp_path: Path) -> None:
    import uuid

    from azure.batch import models

    from tests.ssh_emulator.conftest import wait_nodes

    pool_id = f"sshgone-{uuid.uuid4().hex[:6]}"
    cluster.client.create_pool(
        models.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=1,
            virtual_machine_configuration=models.VirtualMachineConfiguration(
                image_reference=models.BatchVmImageReference(
                    publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
                ),
                node_agent_sku_id="batch.node.ubuntu 22.04",
            ),
        )
    )
    wait_nodes(cluster.client, pool_id, 1, {"idle"})
    job_id = f"gone-{uuid.uuid4().hex[:8]}"
    cluster.client.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id))
    )
    cluster.record(job_id, tmp_path / "out", pool_id=pool_id)
    cluster.client.create_task(
        job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true")
    )
    cluster.wait_task(job_id, "t")
    cluster.client.begin_delete_pool(pool_id, polling_interval=0.1).result()

    done = cluster.cli("collect", job_id, "--via", "ssh", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: collect --via ssh: pool {pool_id} is gone")
    assert f"batchlaunch collect {job_id} --via blob" in done.stderr
    assert "0 file(s)" not in done.stdout
