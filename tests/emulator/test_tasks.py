"""Jobs and tasks through the SDK: execution, environment, retries, timeouts, dependencies,
exit conditions, listing with $filter/$select/paging, terminate/reactivate/delete, counts."""

from __future__ import annotations

import datetime
import itertools
import time
from typing import Any

import pytest
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from tests.emulator.helpers import (
    error_code,
    make_job,
    make_pool,
    read,
    task,
    unique,
    wait_all,
    wait_for,
    wait_task,
)

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def pool(batch_client: Any) -> str:
    return make_pool(batch_client, nodes=2, slots=4)


def test_task_runs_with_batch_environment(batch_client: Any, pool: str) -> None:
    job_id = make_job(
        batch_client,
        pool,
        common_environment_settings=[m.EnvironmentSetting(name="COMMON", value="c")],
    )
    batch_client.create_task(
        job_id,
        task(
            "env",
            "env",
            environment_settings=[m.EnvironmentSetting(name="MINE", value="x y")],
        ),
    )
    done = wait_task(batch_client, job_id, "env")
    assert done.execution_info.exit_code == 0
    assert done.execution_info.result == "success"
    assert done.node_info.pool_id == pool
    env = dict(
        line.split("=", 1) for line in read(batch_client, job_id, "env").splitlines() if "=" in line
    )
    assert env["AZ_BATCH_JOB_ID"] == job_id
    assert env["AZ_BATCH_TASK_ID"] == "env"
    assert env["AZ_BATCH_POOL_ID"] == pool
    assert env["AZ_BATCH_NODE_ID"] == done.node_info.node_id
    assert env["AZ_BATCH_TASK_WORKING_DIR"].endswith(f"workitems/{job_id}/job-1/env/wd")
    assert env["AZ_BATCH_TASK_DIR"].endswith(f"workitems/{job_id}/job-1/env")
    assert env["AZ_BATCH_NODE_SHARED_DIR"].endswith("/shared")
    assert env["AZ_BATCH_NODE_IS_DEDICATED"] == "true"
    assert env["COMMON"] == "c" and env["MINE"] == "x y"
    assert not any("KEY" in k and "BATCH" in k for k in env)


def test_no_shell_and_exit_codes(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool)
    batch_client.create_task(job_id, task("literal", "echo $HOME '&&' x"))
    batch_client.create_task(job_id, task("fail", "/bin/sh -c 'echo oops >&2; exit 7'"))
    batch_client.create_task(job_id, task("missing", "/no/such/program"))
    assert (
        read(batch_client, job_id, wait_task(batch_client, job_id, "literal").id) == "$HOME && x\n"
    )
    failed = wait_task(batch_client, job_id, "fail")
    assert failed.execution_info.exit_code == 7
    assert failed.execution_info.result == "failure"
    assert failed.execution_info.failure_info.code == "FailureExitCode"
    assert read(batch_client, job_id, "fail", "stderr.txt") == "oops\n"
    missing = wait_task(batch_client, job_id, "missing")
    assert missing.execution_info.result == "failure"
    assert missing.execution_info.failure_info.category == "usererror"


def test_task_errors(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool)
    with pytest.raises(ResourceExistsError) as exists:
        make_job(batch_client, pool, job_id)
    assert error_code(exists) == "JobExists"
    batch_client.create_task(job_id, task("a", "true"))
    with pytest.raises(ResourceExistsError) as dup:
        batch_client.create_task(job_id, task("a", "true"))
    assert error_code(dup) == "TaskExists"
    with pytest.raises(ResourceNotFoundError) as nojob:
        batch_client.get_job(unique("nojob"))
    assert error_code(nojob) == "JobNotFound"
    with pytest.raises(ResourceNotFoundError) as notask:
        batch_client.get_task(job_id, "zzz")
    assert error_code(notask) == "TaskNotFound"
    with pytest.raises(ResourceNotFoundError):
        batch_client.create_task(unique("nojob"), task("a", "true"))


def test_retries_count_and_stop(batch_client: Any, pool: str, tmp_path: Any) -> None:
    # The marker lives outside the node: a retry may run on another node, as on Batch.
    marker = tmp_path / "marker"  # a pytest tmp path: no shell-special characters
    job_id = make_job(batch_client, pool, constraints=m.BatchJobConstraints(max_task_retry_count=1))
    batch_client.create_task(job_id, task("inherit", "false"))
    batch_client.create_task(
        job_id, task("own", "false", constraints=m.BatchTaskConstraints(max_task_retry_count=3))
    )
    batch_client.create_task(
        job_id,
        task(
            "flaky",
            f"/bin/sh -c 'echo try; test -e {marker} || {{ touch {marker}; exit 1; }}'",
            constraints=m.BatchTaskConstraints(max_task_retry_count=2),
        ),
    )
    assert wait_task(batch_client, job_id, "inherit").execution_info.retry_count == 1
    assert wait_task(batch_client, job_id, "own").execution_info.retry_count == 3
    flaky = wait_task(batch_client, job_id, "flaky")
    assert (flaky.execution_info.retry_count, flaky.execution_info.exit_code) == (1, 0)
    # each try starts with empty logs: stdout.txt is the last try's only
    stdout = b"".join(batch_client.download_task_file(job_id, "flaky", "stdout.txt"))
    assert stdout == b"try\n"


def test_max_wall_clock_time_kills_process_tree(
    batch_client: Any, pool: str, tmp_path: Any
) -> None:
    job_id = make_job(batch_client, pool)
    marker = tmp_path / "survived"
    started = time.monotonic()
    batch_client.create_task(
        job_id,
        task(
            "slow",
            f"/bin/sh -c '(sleep 2; touch {marker}) & sleep 30'",
            constraints=m.BatchTaskConstraints(
                max_wall_clock_time=datetime.timedelta(seconds=1), max_task_retry_count=2
            ),
        ),
    )
    done = wait_task(batch_client, job_id, "slow", timeout=20)
    assert time.monotonic() - started < 10
    assert done.execution_info.result == "failure"
    assert done.execution_info.retry_count == 0
    assert done.execution_info.failure_info.code == "MaxWallClockTimeExpiry"
    time.sleep(2.5)
    assert not marker.exists(), "the background child outlived the task's timeout"


def test_dependencies_ids_and_ranges(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool, uses_task_dependencies=True)
    log = f"{pool}-{job_id}.log"
    stamp = "/bin/sh -c 'date +%s%N > ../stamp'"
    tasks = [task(str(i), stamp) for i in range(1, 6)]
    tasks.append(
        task(
            "mid",
            stamp,
            depends_on=m.BatchTaskDependencies(task_id_ranges=[m.BatchTaskIdRange(start=1, end=5)]),
        )
    )
    tasks.append(task("last", stamp, depends_on=m.BatchTaskDependencies(task_ids=["mid"])))
    # create_tasks submits in reverse order: dependants arrive before their parents.
    batch_client.create_tasks(job_id, tasks, max_concurrency=1)
    wait_all(batch_client, job_id, 7)
    del log

    def end(tid: str) -> float:
        return batch_client.get_task(job_id, tid).execution_info.end_time.timestamp()

    def start(tid: str) -> float:
        return batch_client.get_task(job_id, tid).execution_info.start_time.timestamp()

    assert start("mid") >= max(end(str(i)) for i in range(1, 6))
    assert start("last") >= end("mid")


def test_blocked_dependency_and_exit_conditions(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool, uses_task_dependencies=True)
    batch_client.create_task(job_id, task("bad", "false"))
    batch_client.create_task(
        job_id,
        task(
            "ok3",
            "/bin/sh -c 'exit 3'",
            exit_conditions=m.ExitConditions(
                exit_codes=[
                    m.ExitCodeMapping(
                        code=3, exit_options=m.ExitOptions(dependency_action="satisfy")
                    )
                ]
            ),
        ),
    )
    batch_client.create_task(
        job_id, task("blocked", "true", depends_on=m.BatchTaskDependencies(task_ids=["bad"]))
    )
    batch_client.create_task(
        job_id, task("allowed", "true", depends_on=m.BatchTaskDependencies(task_ids=["ok3"]))
    )
    wait_task(batch_client, job_id, "allowed")
    assert wait_task(batch_client, job_id, "bad").execution_info.exit_code == 1
    time.sleep(0.3)
    assert batch_client.get_task(job_id, "blocked").state == "active"
    with pytest.raises(ResourceExistsError) as exc:
        other = make_job(batch_client, pool)
        batch_client.create_task(
            other, task("x", "true", depends_on=m.BatchTaskDependencies(task_ids=["y"]))
        )
    assert error_code(exc) == "TaskDependenciesNotSpecifiedOnJob"


def test_on_all_tasks_complete_and_on_task_failure(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool)
    batch_client.create_task(job_id, task("one", "true"))
    batch_client.update_job(job_id, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    job = wait_for(lambda: batch_client.get_job(job_id), lambda j: j.state == "completed")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    failing = make_job(batch_client, pool, task_failure_mode="performexitoptionsjobaction")
    batch_client.create_task(failing, task("boom", "false"))
    job = wait_for(lambda: batch_client.get_job(failing), lambda j: j.state == "completed")
    assert job.execution_info.termination_reason == "TaskFailed"
    with pytest.raises(ResourceExistsError) as exc:
        batch_client.create_task(failing, task("late", "true"))
    assert error_code(exc) == "JobCompleted"


def test_job_lifecycle(batch_client: Any, pool: str) -> None:
    job_id = make_job(
        batch_client,
        pool,
        priority=10,
        max_parallel_tasks=2,
        metadata=[m.BatchMetadataItem(name="k", value="v")],
    )
    job = batch_client.get_job(job_id)
    assert (job.priority, job.max_parallel_tasks, job.state) == (10, 2, "active")
    assert job_id in {j.id for j in batch_client.list_jobs(filter="state eq 'active'")}
    batch_client.update_job(job_id, m.BatchJobUpdateOptions(priority=5))
    assert batch_client.get_job(job_id).priority == 5
    batch_client.replace_job(
        job_id, m.BatchJob(pool_info=m.BatchPoolInfo(pool_id=pool), priority=7)
    )
    job = batch_client.get_job(job_id)
    assert job.priority == 7 and job.metadata == []
    batch_client.begin_disable_job(
        job_id, m.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0.05
    ).result()
    assert batch_client.get_job(job_id).state == "disabled"
    batch_client.create_task(job_id, task("waits", "true"))
    time.sleep(0.3)
    assert batch_client.get_task(job_id, "waits").state == "active"
    batch_client.begin_enable_job(job_id, polling_interval=0.05).result()
    wait_task(batch_client, job_id, "waits")
    batch_client.begin_terminate_job(
        job_id, BatchJobTerminateOptions(termination_reason="done"), polling_interval=0.05
    ).result()
    job = batch_client.get_job(job_id)
    assert job.state == "completed" and job.execution_info.termination_reason == "done"
    batch_client.begin_delete_job(job_id, polling_interval=0.05).result()
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job(job_id)


def test_max_parallel_tasks_and_priority(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=1, slots=4)
    low = make_job(batch_client, pool_id, max_parallel_tasks=1)
    sleeper = "/bin/sh -c 'sleep 0.3'"
    batch_client.create_tasks(low, [task(f"t{i}", sleeper) for i in range(4)])
    time.sleep(0.15)
    running = [t for t in batch_client.list_tasks(low) if t.state == "running"]
    assert len(running) == 1
    wait_all(batch_client, low, 4)
    runs = sorted(
        (t.execution_info.start_time, t.execution_info.end_time)
        for t in batch_client.list_tasks(low)
    )
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs))


def test_slots_and_pack(batch_client: Any) -> None:
    pool_id = make_pool(
        batch_client,
        nodes=2,
        slots=4,
        task_scheduling_policy=m.BatchTaskSchedulingPolicy(node_fill_type="pack"),
    )
    job_id = make_job(batch_client, pool_id)
    batch_client.create_tasks(job_id, [task(f"p{i}", "sleep 0.5") for i in range(4)])
    time.sleep(0.25)
    nodes = {t.node_info.node_id for t in batch_client.list_tasks(job_id) if t.state == "running"}
    assert len(nodes) == 1, "pack fills one node first"
    wait_all(batch_client, job_id, 4)
    spread = make_job(batch_client, pool_id)
    batch_client.create_task(spread, task("big", "sleep 0.5", required_slots=4))
    batch_client.create_task(spread, task("big2", "sleep 0.5", required_slots=4))
    batch_client.create_task(spread, task("big3", "true", required_slots=4))
    time.sleep(0.25)
    assert batch_client.get_task(spread, "big3").state == "active"
    wait_all(batch_client, spread, 3)
    counts = batch_client.get_job_task_counts(spread)
    assert counts.task_slot_counts.completed == 12 and counts.task_counts.succeeded == 3


def test_list_filter_select_and_paging(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool)
    batch_client.create_tasks(
        job_id,
        [task(f"t{i:04d}", "/bin/sh -c 'exit 0'" if i % 2 else "false") for i in range(2500)],
        max_concurrency=4,
    )
    wait_all(batch_client, job_id, 2500, timeout=120)
    ids = [t.id for t in batch_client.list_tasks(job_id, max_results=300)]
    assert len(ids) == 2500 and len(set(ids)) == 2500
    failed = list(
        batch_client.list_tasks(
            job_id,
            filter="state eq 'completed' and executionInfo/result eq 'failure'",
            select=["id", "state"],
        )
    )
    assert len(failed) == 1250 and all(t.execution_info is None for t in failed)
    either = list(batch_client.list_tasks(job_id, filter="id eq 't0001' or id eq 't0002'"))
    assert sorted(t.id for t in either) == ["t0001", "t0002"]
    counts = batch_client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (2500, 1250, 1250)


def test_terminate_reactivate_update_delete(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool)
    batch_client.create_task(job_id, task("long", "sleep 30"))
    wait_task(batch_client, job_id, "long", "running")
    batch_client.terminate_task(job_id, "long")
    done = wait_task(batch_client, job_id, "long")
    assert done.execution_info.failure_info.code == "TaskEnded"
    batch_client.reactivate_task(job_id, "long")
    assert batch_client.get_task(job_id, "long").state in ("active", "running")
    batch_client.replace_task(
        job_id,
        "long",
        m.BatchTask(
            constraints=m.BatchTaskConstraints(max_wall_clock_time=datetime.timedelta(seconds=1))
        ),
    )
    assert (
        batch_client.get_task(job_id, "long").constraints.max_wall_clock_time.total_seconds() == 1
    )
    batch_client.terminate_task(job_id, "long")
    assert list(batch_client.list_subtasks(job_id, "long")) == []
    batch_client.delete_task(job_id, "long")
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_task(job_id, "long")
    assert batch_client.get_job_task_counts(job_id).task_counts.completed == 0


def test_task_files(batch_client: Any, pool: str) -> None:
    job_id = make_job(batch_client, pool)
    batch_client.create_task(
        job_id,
        task(
            "files",
            '/bin/sh -c \'mkdir -p "out dir" && printf 0123456789 > "out dir/x.txt" && echo done\'',
        ),
    )
    wait_task(batch_client, job_id, "files")
    top = {f.name: f.is_directory for f in batch_client.list_task_files(job_id, "files")}
    assert top == {"stdout.txt": False, "stderr.txt": False, "wd": True}
    deep = {f.name for f in batch_client.list_task_files(job_id, "files", recursive=True)}
    assert "wd/out dir/x.txt" in deep
    name = "wd/out dir/x.txt"
    assert read(batch_client, job_id, "files", name) == "0123456789"
    part = b"".join(batch_client.download_task_file(job_id, "files", name, ocp_range="bytes=2-5"))
    assert part == b"2345"
    props = batch_client.get_task_file_properties(job_id, "files", name)
    assert props.content_length == 10 and props.is_directory is False
    batch_client.create_task(job_id, task("big", "head -c 3000000 /dev/urandom", required_slots=1))
    wait_task(batch_client, job_id, "big")
    whole = b"".join(batch_client.download_task_file(job_id, "big", "stdout.txt"))
    assert len(whole) == 3_000_000
    tail = b"".join(
        batch_client.download_task_file(
            job_id, "big", "stdout.txt", ocp_range="bytes=1000000-2999999"
        )
    )
    assert tail == whole[1_000_000:]
    batch_client.delete_task_file(job_id, "files", name)
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_task_file_properties(job_id, "files", name)
    with pytest.raises(ResourceExistsError):
        batch_client.delete_task_file(job_id, "files", "wd")
    batch_client.delete_task_file(job_id, "files", "wd", recursive=True)
    assert {f.name for f in batch_client.list_task_files(job_id, "files")} == {
        "stdout.txt",
        "stderr.txt",
    }


def test_job_priority_orders_scheduling(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=1, slots=1)
    blocker = make_job(batch_client, pool_id)
    batch_client.create_task(blocker, task("hold", "sleep 0.5"))
    wait_task(batch_client, blocker, "hold", "running")
    low = make_job(batch_client, pool_id, priority=-10)
    high = make_job(batch_client, pool_id, priority=100)
    batch_client.create_task(low, task("low", "true"))
    batch_client.create_task(high, task("high", "true"))
    first = wait_task(batch_client, low, "low")
    second = wait_task(batch_client, high, "high")
    assert second.execution_info.end_time <= first.execution_info.start_time


def test_job_max_wall_clock_time_and_container_settings(batch_client: Any, pool: str) -> None:
    job_id = make_job(
        batch_client,
        pool,
        constraints=m.BatchJobConstraints(max_wall_clock_time=datetime.timedelta(seconds=1)),
    )
    batch_client.create_task(
        job_id,
        task(
            "boxed",
            "sleep 20",
            container_settings=m.BatchTaskContainerSettings(image_name="python:3.11-slim"),
        ),
    )
    running = wait_task(batch_client, job_id, "boxed", "running")
    assert running.execution_info.container_info.state == "running"
    job = wait_for(lambda: batch_client.get_job(job_id), lambda j: j.state == "completed", 10)
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    done = wait_task(batch_client, job_id, "boxed")
    assert done.execution_info.failure_info.code == "TaskEnded"
    node = done.node_info.node_id
    images = b"".join(batch_client.download_node_file(pool, node, "container-images.txt")).decode()
    assert f"{job_id}/boxed python:3.11-slim" in images


def test_malformed_bodies_are_400_not_5xx(batch_client: Any, pool: str) -> None:
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as exc:
        batch_client.create_job({"id": unique("bad"), "poolInfo": "not-an-object"})
    assert exc.value.status_code == 400
    job_id = make_job(batch_client, pool)
    with pytest.raises(HttpResponseError) as exc2:
        batch_client.create_task(job_id, {"id": "t", "commandLine": "true", "constraints": "soon"})
    assert exc2.value.status_code == 400


def test_etag_conditions(batch_client: Any, pool: str) -> None:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError

    job_id = make_job(batch_client, pool)
    etag = batch_client.get_job(job_id).etag
    batch_client.update_job(
        job_id,
        m.BatchJobUpdateOptions(priority=3),
        etag=etag,
        match_condition=MatchConditions.IfNotModified,
    )
    with pytest.raises(ResourceModifiedError) as exc:
        batch_client.update_job(
            job_id,
            m.BatchJobUpdateOptions(priority=4),
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
    assert exc.value.status_code == 412
    assert batch_client.get_job(job_id).priority == 3


def test_job_wall_clock_can_be_extended(batch_client: Any, pool: str) -> None:
    job_id = make_job(
        batch_client,
        pool,
        constraints=m.BatchJobConstraints(max_wall_clock_time=datetime.timedelta(seconds=1)),
    )
    batch_client.update_job(
        job_id,
        m.BatchJobUpdateOptions(
            constraints=m.BatchJobConstraints(max_wall_clock_time=datetime.timedelta(hours=1))
        ),
    )
    time.sleep(1.5)
    assert batch_client.get_job(job_id).state == "active"
