"""Restart durability and low-priority preemption: nothing lost, nothing completed twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as m

from tests.emulator.helpers import make_job, make_pool, task, wait_all, wait_for, wait_task
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator


def test_restart_keeps_state_and_requeues_running_tasks(
    emulator_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    record = f"/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> {ledger}/runs; sleep ${{NAP:-0}}'"
    first = emulator_factory(state_dir=state)
    client = make_client(first)
    pool_id = make_pool(client, nodes=1, slots=4)
    job_id = make_job(client, pool_id)
    client.create_tasks(job_id, [task(f"quick{i}", record) for i in range(20)])
    wait_all(client, job_id, 20)
    client.create_task(
        job_id,
        task("long", record, environment_settings=[m.EnvironmentSetting(name="NAP", value="30")]),
    )
    wait_task(client, job_id, "long", "running")
    before = {
        t.id: t.execution_info.end_time for t in client.list_tasks(job_id) if t.state == "completed"
    }
    client.close()
    _stop(first)

    second = emulator_factory(state_dir=state)
    client = make_client(second)
    assert client.get_pool(pool_id).id == pool_id
    assert client.get_job(job_id).state == "active"
    long = client.get_task(job_id, "long")
    assert long.execution_info.requeue_count == 1
    assert long.state in ("active", "running")
    after = {
        t.id: t.execution_info.end_time for t in client.list_tasks(job_id) if t.state == "completed"
    }
    assert after == before
    counts = client.get_job_task_counts(job_id).task_counts
    assert counts.completed == 20 and counts.succeeded == 20
    wait_task(client, job_id, "long", "running")
    runs = (ledger / "runs").read_text().split()
    assert sorted(runs) == sorted([f"quick{i}" for i in range(20)] + ["long", "long"])
    client.close()


def _stop(info: Any) -> None:
    """SIGTERM the emulator and wait until it has exited (a zombie of the fixture's Popen)."""
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return
        status = Path(f"/proc/{info.pid}/status")
        if status.exists() and "zombie" in status.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("emulator did not stop on SIGTERM")


def test_preempted_low_priority_node_requeues_running_task(emulator_factory: Any) -> None:
    info = emulator_factory(preempt_rate=1.0, seed=7, time_scale=1.0)
    client = make_client(info)
    pool_id = make_pool(client, nodes=0, low_priority=1)
    job_id = make_job(client, pool_id)
    client.create_task(job_id, task("work", "sleep 1"))
    wait_for(
        lambda: [n.state for n in client.list_nodes(pool_id)],
        lambda s: s == ["preempted"],
        10,
        "the node to be preempted",
    )
    requeued = client.get_task(job_id, "work")
    assert requeued.state == "active"
    assert requeued.execution_info.requeue_count == 1
    done = wait_task(client, job_id, "work", timeout=20)
    assert done.execution_info.result == "success"
    assert done.execution_info.requeue_count == 1
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}[pool_id]
    assert counts.low_priority.total == 1
    client.close()


def test_restart_mid_run_loses_nothing_and_reruns_nothing_completed(
    emulator_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = emulator_factory(state_dir=state)
    client = make_client(first)
    pool_id = make_pool(client, nodes=2, slots=4)
    job_id = make_job(client, pool_id)
    client.create_tasks(
        job_id, [task(f"t{i:03d}", "sleep 0.05") for i in range(300)], max_concurrency=4
    )
    wait_for(
        lambda: client.get_job_task_counts(job_id).task_counts,
        lambda c: c.completed >= 60,
        60,
        "some tasks to complete",
    )
    client.close()
    _stop(first)

    second = emulator_factory(state_dir=state)
    client = make_client(second)
    before = {
        t.id: t.execution_info.end_time for t in client.list_tasks(job_id) if t.state == "completed"
    }
    assert len(before) >= 60
    wait_all(client, job_id, 300, timeout=120)
    after = {t.id: t for t in client.list_tasks(job_id)}
    assert len(after) == 300
    assert all(t.execution_info.result == "success" for t in after.values())
    assert all(after[tid].execution_info.end_time == end for tid, end in before.items())
    requeued = [t.id for t in after.values() if t.execution_info.requeue_count]
    assert all(tid not in before for tid in requeued)
    assert len(requeued) <= 8  # at most the 8 slots that were busy at shutdown
    client.close()
