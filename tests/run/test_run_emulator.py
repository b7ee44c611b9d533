"""`batchlaunch run/status/collect` end to end against the emulator (local store).

The real CLI, the real azure-batch SDK over HTTP, tasks as processes on this machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.run.conftest import CliResult

pytestmark = pytest.mark.emulator

SWEEP = """
    [batch]
    endpoint = "emulator"
    [storage]
    url = "local"
    container = "runs"
    [pool]
    id = "{pool}"
    dedicated_nodes = 2
    task_slots_per_node = 8
    [job]
    id = "sweep"
    [[tasks]]
    id = "t"
    command = "mkdir -p out && echo value-{{i}} > out/r.txt && echo done {{i}}"
    outputs = ["out/*.txt"]
    sweep = {{ i = {values} }}
"""


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_sweep_of_200_tasks_collects_every_output(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(SWEEP.format(pool="sweep200", values=list(range(200))))
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "sweep200", "--out", str(out), "-q")
    assert result.code == 0, result.err
    run_dir = out / "sweep200"
    task_dirs = sorted(p.name for p in run_dir.iterdir())
    assert task_dirs == [f"t-{i:03d}" for i in range(200)]
    for i in (0, 57, 199):
        task = run_dir / f"t-{i:03d}"
        assert (task / "out" / "r.txt").read_text() == f"value-{i}\n"
        assert (task / "logs" / "stdout.txt").read_text() == f"done {i}\n"
    assert "succeeded" in result.err and "200" in result.err


def test_rerun_with_same_run_id_adds_and_downloads_nothing(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    batch_client: Any,
) -> None:
    params = write_params(SWEEP.format(pool="rerun", values=list(range(5))))
    out = tmp_path / "out"
    first = cli("run", str(params), "--run-id", "rerun1", "--out", str(out), "--keep-pool", "-q")
    assert first.code == 0, first.err
    before = {p: p.stat().st_mtime_ns for p in (out / "rerun1").rglob("*") if p.is_file()}
    assert len(before) == 15  # 5 x (r.txt, stdout.txt, stderr.txt)

    second = cli("run", str(params), "--run-id", "rerun1", "--out", str(out), "--keep-pool")
    assert second.code == 0, second.err
    assert "0 task(s) added, 5 already present" in second.err
    assert "0 downloaded, 15 already there" in second.err.replace("\n", " ").replace("│", "")
    after = {p: p.stat().st_mtime_ns for p in (out / "rerun1").rglob("*") if p.is_file()}
    assert after == before  # nothing fetched again
    ids = [t.id for t in batch_client.list_tasks("rerun1")]
    assert sorted(ids) == [f"t-{i}" for i in range(5)]
    for task in batch_client.list_tasks("rerun1"):
        assert task.execution_info.retry_count == 0  # each ran once


def test_failing_task_exits_1_with_its_stderr_tail(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        """
        [batch]
        endpoint = "emulator"
        [pool]
        id = "failing"
        [job]
        id = "failing"
        [[tasks]]
        id = "good"
        command = "echo fine"
        [[tasks]]
        id = "bad"
        command = "echo 'cannot open input.csv: no such file' >&2; exit 1"
        """
    )
    result = cli("run", str(params), "--run-id", "failing1", "--out", str(tmp_path / "o"), "-q")
    assert result.code == 1
    assert "task bad failed (exit code 1)" in result.err
    assert "cannot open input.csv: no such file" in result.err
    assert "task good failed" not in result.err
    assert "1 task(s) failed in run failing1" in result.err


def test_fan_out_then_reduce_runs_in_dependency_order(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    params = write_params(
        f"""
        [batch]
        endpoint = "emulator"
        [pool]
        id = "fanout"
        dedicated_nodes = 2
        task_slots_per_node = 4
        [job]
        id = "fanout"
        [[tasks]]
        id = "part"
        command = "sleep 0.2; echo {{n}} > {shared}/part-{{n}}"
        sweep = {{ n = [1, 2, 3, 4, 5, 6] }}
        [[tasks]]
        id = "reduce"
        command = "cat {shared}/part-* | paste -sd+ | bc > total.txt; ls {shared} | wc -l"
        outputs = ["total.txt"]
        depends_on = ["part"]
        """
    )
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "fan1", "--out", str(out), "-q")
    assert result.code == 0, result.err
    # the reduce saw all six parts, so it started after every part finished
    assert (out / "fan1" / "reduce" / "total.txt").read_text().strip() == "21"
    assert (out / "fan1" / "reduce" / "logs" / "stdout.txt").read_text().strip() == "6"


def test_detach_then_status_then_collect(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    batch_client: Any,
) -> None:
    params = write_params(SWEEP.format(pool="detach", values=[1, 2, 3]))
    out = tmp_path / "out"
    submitted = cli("run", str(params), "--run-id", "det1", "--out", str(out), "--detach")
    assert submitted.code == 0, submitted.err
    assert submitted.out.strip() == "det1"
    assert not (out / "det1").exists()  # detached: nothing collected yet

    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts = batch_client.get_job_task_counts("det1").task_counts
        if counts.completed == 3:
            break
        time.sleep(0.2)
    status = cli("status", "det1")
    assert status.code == 0, status.err
    assert "succeeded" in status.err and "3" in status.err

    collected = cli("collect", "det1")
    assert collected.code == 0, collected.err
    assert (out / "det1" / "t-1" / "out" / "r.txt").read_text() == "value-2\n"
    again = cli("collect", "det1")
    assert "0 file(s) downloaded" in again.err


def test_status_of_unknown_run_is_one_clear_line(
    run_env: dict[str, str], cli: Callable[..., CliResult]
) -> None:
    result = cli("status", "no-such-run")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: run 'no-such-run': no record")
    assert "batchlaunch run PARAMS" in lines[0]


def test_pool_created_by_run_is_deleted_unless_kept(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    batch_client: Any,
) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    params = write_params(SWEEP.format(pool="teardown", values=[1]))
    kept = cli("run", str(params), "--run-id", "td1", "--out", str(tmp_path / "o"), "--keep-pool")
    assert kept.code == 0, kept.err
    assert batch_client.get_pool("teardown").id == "teardown"
    # The pool now exists before the run: the default keeps it ...
    reused = cli("run", str(params), "--run-id", "td2", "--out", str(tmp_path / "o"), "-q")
    assert reused.code == 0, reused.err
    assert batch_client.get_pool("teardown").state != "deleting"
    # ... and --delete-pool removes it.
    deleted = cli(
        "run", str(params), "--run-id", "td3", "--out", str(tmp_path / "o"), "--delete-pool", "-q"
    )
    assert deleted.code == 0, deleted.err
    try:
        state = str(batch_client.get_pool("teardown").state)
    except ResourceNotFoundError:
        state = "gone"
    assert state in ("gone", "deleting", "BatchPoolState.DELETING")


def test_run_record_holds_no_secret(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(SWEEP.format(pool="record", values=[1]))
    result = cli("run", str(params), "--run-id", "rec1", "--out", str(tmp_path / "o"), "-q")
    assert result.code == 0, result.err
    record_file = Path(run_env["BATCHLAUNCH_HOME"]) / "runs" / "rec1.json"
    record = json.loads(record_file.read_text())
    assert record["job_id"] == "rec1" and record["task_count"] == 1
    assert run_env["AZURE_BATCH_ACCESS_KEY"] not in record_file.read_text()


def test_rerun_keeps_a_pool_that_existed_before_this_command(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    batch_client: Any,
) -> None:
    params = write_params(SWEEP.format(pool="prior", values=[1]))
    first = cli("run", str(params), "--run-id", "prior1", "--out", str(tmp_path / "o"), "-q")
    assert first.code == 0, first.err  # created the pool, then deleted it
    created = cli("pool", "create", str(params))
    assert created.code == 0, created.err
    again = cli("run", str(params), "--run-id", "prior1", "--out", str(tmp_path / "o"), "-q")
    assert again.code == 0, again.err
    assert batch_client.get_pool("prior").id == "prior"  # still there: not this command's


def test_timeout_with_unfinished_tasks_is_not_success(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        """
        [pool]
        id = "slowpool"
        [job]
        id = "slow"
        [[tasks]]
        id = "nap"
        command = "sleep 30"
        """
    )
    result = cli(
        "run",
        str(params),
        "--run-id",
        "slow1",
        "--out",
        str(tmp_path / "o"),
        "--timeout",
        "1",
        "-q",
    )
    assert result.code == 1
    assert "run slow1: still running after 1 s; the pool is kept" in result.err
    cli("pool", "delete", str(params))


def test_status_and_stderr_tails_after_the_pool_is_gone(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        """
        [pool]
        id = "gonepool"
        [job]
        id = "gone"
        [[tasks]]
        id = "bad"
        command = "echo 'disk quota exceeded' >&2; exit 3"
        """
    )
    run = cli("run", str(params), "--run-id", "gone1", "--out", str(tmp_path / "o"), "-q")
    assert run.code == 1  # and the pool, created by this run, is deleted
    status = cli("status", "gone1")
    assert status.code == 1
    assert "task bad failed (exit code 3)" in status.err
    assert "disk quota exceeded" in status.err  # read from the stored copy
    assert "Traceback" not in status.err


def test_parent_outputs_land_under_each_parent_for_wildcards_and_literals(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        """
        [pool]
        id = "parents"
        dedicated_nodes = 2
        task_slots_per_node = 2
        [job]
        id = "parents"
        [[tasks]]
        id = "sq"
        command = "mkdir -p res && echo $(({n} * {n})) > res/sq.txt && echo {n} > lit.txt"
        outputs = ["res/*.txt", "lit.txt"]
        sweep = { n = [2, 3] }
        [[tasks]]
        id = "sum"
        command = '''find parents -type f | sort > tree.txt
        cat parents/*/res/*.txt | paste -sd+ | bc > total.txt'''
        outputs = ["tree.txt", "total.txt"]
        depends_on = ["sq"]
        parent_outputs = "parents"
        """
    )
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "par1", "--out", str(out), "-q")
    assert result.code == 0, result.err
    assert (out / "par1" / "sum" / "total.txt").read_text().strip() == "13"
    assert (out / "par1" / "sum" / "tree.txt").read_text().split() == [
        "parents/sq-0/lit.txt",
        "parents/sq-0/res/sq.txt",
        "parents/sq-1/lit.txt",
        "parents/sq-1/res/sq.txt",
    ]


def test_fixed_file_warns_on_resume_and_retry_failed_reruns_with_the_fix(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    batch_client: Any,
) -> None:
    text = """
        [pool]
        id = "retry"
        [job]
        id = "retry"
        [[tasks]]
        id = "prep"
        command = "{prep}"
        [[tasks]]
        id = "use"
        command = "echo used"
        depends_on = ["prep"]
        [[tasks]]
        id = "other"
        command = "echo other"
    """
    out = tmp_path / "out"
    params = write_params(text.format(prep="exit 5"))
    first = cli("run", str(params), "--run-id", "retry1", "--out", str(out), "--keep-pool", "-q")
    assert first.code == 1
    assert "task prep failed (exit code 5)" in first.err
    assert "1 blocked by a failed dependency" in first.err

    write_params(text.format(prep="echo fixed"))
    resumed = cli("run", str(params), "--run-id", "retry1", "--out", str(out), "--keep-pool")
    assert resumed.code == 1  # nothing re-ran
    assert "changed since run retry1 started" in resumed.err.replace("\n", " ")

    retried = cli(
        "run", str(params), "--run-id", "retry1", "--out", str(out), "--retry-failed", "-q"
    )
    assert retried.code == 0, retried.err
    assert (out / "retry1" / "prep" / "logs" / "stdout.txt").read_text() == "fixed\n"
    assert (out / "retry1" / "use" / "logs" / "stdout.txt").read_text() == "used\n"
    # the task that had succeeded was not run again
    other = batch_client.get_task("retry1", "other")
    assert other.execution_info.retry_count == 0 and other.execution_info.exit_code == 0


def test_pool_errors_name_the_parameter_file(
    run_env: dict[str, str], cli: Callable[..., CliResult], write_params: Callable[..., Path]
) -> None:
    params = write_params(SWEEP.format(pool="never-created", values=[1]))
    shown = cli("pool", "show", str(params))
    assert shown.code == 2
    assert shown.err.strip() == (
        f"error: {params}: [pool] id: pool 'never-created' not found; "
        "create it with `batchlaunch pool create PARAMS`"
    )


def test_an_output_pattern_that_matches_nothing_is_reported(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        """
        [pool]
        id = "nomatch"
        [job]
        id = "nomatch"
        [[tasks]]
        id = "w"
        command = "echo {n} > r{n}.txt"
        outputs = ["res/*.txt", "r{n}.txt"]
        sweep = { n = [1, 2] }
        """
    )
    result = cli("run", str(params), "--run-id", "nm1", "--out", str(tmp_path / "o"), "-q")
    assert result.code == 0, result.err  # the tasks themselves succeeded
    err = result.err.replace("\n", " ")
    assert "output pattern 'res/*.txt' matched no file in 2 successful task(s): w-0, w-1" in err
    assert "'r{n}.txt'" not in err  # the literal outputs were there (r1.txt, r2.txt)
