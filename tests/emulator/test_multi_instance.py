"""Multi-instance (MPI-style) tasks through the SDK: one primary and N-1 subtasks on N whole
nodes, common resource files on every node, the coordination command on every instance before
the primary's command, the multi-instance variables, subtask listing, failures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from tests.emulator.helpers import (
    error_code,
    make_job,
    make_pool,
    read,
    task,
    unique,
    wait_for,
    wait_task,
)
from tests.emulator.test_durability import _stop as stop_emulator
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator


def mpi_task(task_id: str, command: str, instances: int, coordination: str, **kw: Any) -> Any:
    settings = m.MultiInstanceSettings(
        number_of_instances=instances,
        coordination_command_line=coordination,
        common_resource_files=kw.pop("common", None),
    )
    return task(task_id, command, multi_instance_settings=settings, **kw)


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def node_file(client: Any, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, path)).decode()


def mpi_pool(client: Any, nodes: int, slots: int = 1) -> str:
    return make_pool(client, nodes=nodes, slots=slots, enable_inter_node_communication=True)


def test_three_instances_see_one_host_list_and_the_common_files(
    batch_client: Any, tmp_path: Path
) -> None:
    pool_id = mpi_pool(batch_client, 3)
    job_id = make_job(batch_client, pool_id)
    common = tmp_path / "common.txt"
    common.write_text("shared input")
    batch_client.create_task(
        job_id,
        mpi_task(
            "mpi",
            "/bin/sh -c 'cat \"$AZ_BATCH_TASK_SHARED_DIR/common.txt\"; echo; env'",
            3,
            "env",
            common=[m.ResourceFile(http_url=f"file://{common}", file_path="common.txt")],
        ),
    )
    done = wait_task(batch_client, job_id, "mpi")
    assert (done.execution_info.exit_code, done.execution_info.result) == (0, "success")
    primary_out = read(batch_client, job_id, "mpi")
    assert primary_out.startswith("shared input\n")
    envs = {done.node_info.node_id: parse_env(primary_out)}
    primary_coord = parse_env(read(batch_client, job_id, "mpi", "coordination-stdout.txt"))
    assert primary_coord["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"

    subtasks = list(batch_client.list_subtasks(job_id, "mpi"))
    assert sorted(s.id for s in subtasks) == [1, 2]
    for sub in subtasks:
        assert (sub.state, sub.exit_code, sub.result) == ("completed", 0, "success")
        assert sub.node_info.pool_id == pool_id
        root = f"workitems/{job_id}/job-1/mpi"
        assert sub.node_info.task_root_directory == f"{root}/{sub.id}"
        node_id = sub.node_info.node_id
        envs[node_id] = parse_env(
            node_file(batch_client, pool_id, node_id, f"{root}/{sub.id}/stdout.txt")
        )
        assert node_file(batch_client, pool_id, node_id, f"{root}/common.txt") == "shared input"
    # Three distinct nodes: the whole pool.
    assert set(envs) == {n.id for n in batch_client.list_nodes(pool_id)}
    for node_id, env in envs.items():
        assert env["AZ_BATCH_NODE_ID"] == node_id
        assert env["AZ_BATCH_TASK_ID"] == "mpi"
        assert env["AZ_BATCH_HOST_LIST"] == "127.0.0.1,127.0.0.1,127.0.0.1"
        assert env["AZ_BATCH_NODE_LIST"] == "127.0.0.1;127.0.0.1;127.0.0.1"
        assert env["AZ_BATCH_MASTER_NODE"] == "127.0.0.1:6000"
        assert env["AZ_BATCH_TASK_SHARED_DIR"].endswith(f"{node_id}/workitems/{job_id}/job-1/mpi")
        master = env["AZ_BATCH_IS_CURRENT_NODE_MASTER"]
        assert master == ("true" if node_id == done.node_info.node_id else "false")


def test_coordination_services_live_until_the_primary_ends(batch_client: Any) -> None:
    """The coordination command exits; what it started in the background runs while the
    primary's command runs, and is ended when the primary completes. Each instance holds every
    slot of its node."""
    pool_id = mpi_pool(batch_client, 2, slots=2)
    job_id = make_job(batch_client, pool_id)
    coordination = "/bin/sh -c 'sleep 60 & echo $! > \"$AZ_BATCH_TASK_SHARED_DIR/service.pid\"'"
    batch_client.create_task(
        job_id,
        mpi_task(
            "svc",
            '/bin/sh -c \'kill -0 $(cat "$AZ_BATCH_TASK_SHARED_DIR/service.pid") && echo alive'
            " && sleep 1'",
            2,
            coordination,
        ),
    )
    wait_for(
        lambda: list(batch_client.list_nodes(pool_id)),
        lambda nodes: all(n.running_task_slots_count == 2 for n in nodes),
        10,
        "both nodes fully held by the instances",
    )
    done = wait_task(batch_client, job_id, "svc")
    assert done.execution_info.exit_code == 0
    assert read(batch_client, job_id, "svc") == "alive\n"
    nodes = [
        done.node_info.node_id,
        *(s.node_info.node_id for s in batch_client.list_subtasks(job_id, "svc")),
    ]
    roots = [f"workitems/{job_id}/job-1/svc/service.pid"] * 2
    pids = [int(node_file(batch_client, pool_id, n, r)) for n, r in zip(nodes, roots, strict=True)]
    wait_for(lambda: [_alive(p) for p in pids], lambda a: not any(a), 5, "services ended")
    wait_for(
        lambda: list(batch_client.list_nodes(pool_id)),
        lambda ns: all(n.state == "idle" and n.running_task_slots_count == 0 for n in ns),
        5,
        "nodes idle again",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent, the emulator's reaper, may not have run yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_failing_primary_fails_the_task(batch_client: Any) -> None:
    pool_id = mpi_pool(batch_client, 2)
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, mpi_task("bad", "/bin/sh -c 'exit 3'", 2, "true"))
    done = wait_task(batch_client, job_id, "bad")
    assert (done.execution_info.exit_code, done.execution_info.result) == (3, "failure")
    assert done.execution_info.failure_info.code == "FailureExitCode"
    [sub] = batch_client.list_subtasks(job_id, "bad")
    assert (sub.state, sub.exit_code, sub.result) == ("completed", 0, "success")
    assert sub.node_info.node_id != done.node_info.node_id


def test_failing_coordination_fails_the_task_without_running_the_primary(
    batch_client: Any,
) -> None:
    pool_id = mpi_pool(batch_client, 2)
    job_id = make_job(batch_client, pool_id)
    coordination = "/bin/sh -c 'test \"$AZ_BATCH_IS_CURRENT_NODE_MASTER\" = true || exit 5'"
    batch_client.create_task(job_id, mpi_task("coord", "echo primary ran", 2, coordination))
    done = wait_task(batch_client, job_id, "coord")
    assert (done.execution_info.exit_code, done.execution_info.result) == (5, "failure")
    [sub] = batch_client.list_subtasks(job_id, "coord")
    assert (sub.state, sub.exit_code, sub.result) == ("completed", 5, "failure")
    assert sub.failure_info.code == "FailureExitCode"
    assert "primary ran" not in read(batch_client, job_id, "coord", "coordination-stdout.txt")
    files = {f.name for f in batch_client.list_task_files(job_id, "coord")}
    assert "stdout.txt" not in files


def test_pool_rules_and_bad_settings(batch_client: Any) -> None:
    """Without inter-node communication a multi-instance task is never scheduled (it stays
    active, as Batch documents) and does not hold up the job's other tasks; a task asking for
    more nodes than are free waits for them."""
    plain = make_pool(batch_client, nodes=1)
    job_id = make_job(batch_client, plain)
    batch_client.create_task(job_id, mpi_task("never", "true", 1, "true"))
    batch_client.create_task(job_id, task("after", "true"))
    assert wait_task(batch_client, job_id, "after").execution_info.exit_code == 0
    assert batch_client.get_task(job_id, "never").state == "active"

    small = mpi_pool(batch_client, 1)
    job2 = make_job(batch_client, small)
    batch_client.create_task(job2, mpi_task("big", "true", 2, "true"))
    batch_client.begin_resize_pool(small, m.BatchPoolResizeOptions(target_dedicated_nodes=2))
    assert wait_task(batch_client, job2, "big").execution_info.exit_code == 0

    bad = [
        (
            task(
                unique("t"),
                "true",
                multi_instance_settings=m.MultiInstanceSettings(
                    number_of_instances=2, coordination_command_line=""
                ),
            ),
            "MissingRequiredProperty",
        ),
        (mpi_task(unique("t"), "true", 0, "true"), "InvalidPropertyValue"),
    ]
    for body, code in bad:
        with pytest.raises(HttpResponseError) as info:
            batch_client.create_task(job2, body)
        assert error_code(info) == code, body


SERVICE = "/bin/sh -c 'sleep 60 & echo $! > \"$AZ_BATCH_TASK_SHARED_DIR/service.pid\"'"


def _service_pids(
    client: Any, pool_id: str, job_id: str, task_id: str, nodes: list[str]
) -> list[int]:
    path = f"workitems/{job_id}/job-1/{task_id}/service.pid"
    return [int(node_file(client, pool_id, n, path)) for n in nodes]


def test_losing_a_subtask_node_requeues_the_whole_task(batch_client: Any) -> None:
    pool_id = mpi_pool(batch_client, 3)
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, mpi_task("lost", "sleep 1", 2, SERVICE))
    running = wait_task(batch_client, job_id, "lost", "running")
    [sub] = wait_for(
        lambda: list(batch_client.list_subtasks(job_id, "lost")),
        lambda subs: len(subs) == 1 and subs[0].state == "completed",
        10,
        "the subtask's coordination command to finish",
    )
    first = [running.node_info.node_id, sub.node_info.node_id]
    pids = _service_pids(batch_client, pool_id, job_id, "lost", first)
    batch_client.begin_remove_nodes(
        pool_id, m.BatchNodeRemoveOptions(node_ids=[sub.node_info.node_id])
    )
    wait_for(lambda: [_alive(p) for p in pids], lambda a: not any(a), 5, "services ended")
    done = wait_task(batch_client, job_id, "lost")
    assert done.execution_info.exit_code == 0
    assert done.execution_info.requeue_count == 1
    [again] = batch_client.list_subtasks(job_id, "lost")
    assert sub.node_info.node_id not in (again.node_info.node_id, done.node_info.node_id)


def test_restart_requeues_a_running_multi_instance_task(
    emulator_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = emulator_factory(state_dir=state)
    client = make_client(first)
    pool_id = mpi_pool(client, 2)
    job_id = make_job(client, pool_id)
    client.create_task(job_id, mpi_task("long", "sleep 30", 2, SERVICE))
    running = wait_task(client, job_id, "long", "running")
    [sub] = wait_for(
        lambda: list(client.list_subtasks(job_id, "long")),
        lambda subs: len(subs) == 1 and subs[0].state == "completed",
        10,
        "the subtask's coordination command to finish",
    )
    pids = _service_pids(
        client, pool_id, job_id, "long", [running.node_info.node_id, sub.node_info.node_id]
    )
    client.close()
    stop_emulator(first)
    assert not any(_alive(p) for p in pids)  # the coordination services did not outlive it

    second = emulator_factory(state_dir=state)
    client = make_client(second)
    again = wait_task(client, job_id, "long", "running")
    assert again.execution_info.requeue_count == 1
    wait_for(
        lambda: list(client.list_subtasks(job_id, "long")),
        lambda subs: len(subs) == 1 and subs[0].state == "completed",
        10,
        "the rerun's subtask",
    )
    client.terminate_task(job_id, "long")
    done = wait_task(client, job_id, "long")
    assert done.execution_info.failure_info.code == "TaskEnded"
    client.close()
