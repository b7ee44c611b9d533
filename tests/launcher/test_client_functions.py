"""`Client` pieces function shipping relies on: bulk adds in submission order, job and task
termination, and pool specs that do not depend on where the local store lives."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher.batch import connect
from launcher.client import Client, PoolSpec, TaskSpec, spec_hash
from launcher.storage import LocalStore


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client(emulator: Any, root: Path) -> Client:
    conn = connect(
        SimpleNamespace(endpoint=emulator.endpoint, account=emulator.account),
        env={"AZURE_BATCH_ACCESS_KEY": emulator.key},
    )
    store = LocalStore("batchlaunch", root=root)
    store.ensure_container()
    return Client(batch=conn, store=store)


@pytest.fixture
def client(emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    yield _client(emulator, tmp_path / "store")


@pytest.fixture
def idle_job(client: Client) -> Iterator[str]:
    """A job on a pool without nodes: tasks stay active, nothing runs."""
    pool_id = client.create_pool(_uid("order"), dedicated_nodes=0).id
    job_id = client.create_job(_uid("order"), pool_id)
    yield job_id
    client.delete_job(job_id)
    client.delete_pool(pool_id)


def _listed(client: Client, job_id: str) -> list[Any]:
    return list(client.batch.list_tasks(job_id, select=["id", "creationTime", "state"]))


@pytest.mark.emulator
@pytest.mark.parametrize(("count", "concurrency"), [(80, 8), (250, 1)])
def test_add_tasks_creates_tasks_in_submission_order(
    client: Client, idle_job: str, count: int, concurrency: int
) -> None:
    # ids whose sorted order is NOT the submission order, so sorting cannot fake a pass
    ids = [f"k{(i * 37) % count:04d}" for i in range(count)]
    assert sorted(ids) != ids
    tasks = [TaskSpec(command="true", task_id=task_id) for task_id in ids]
    assert client.add_tasks(idle_job, tasks, max_concurrency=concurrency) == ids
    listed = _listed(client, idle_job)
    assert [str(t.id) for t in listed] == ids  # the emulator lists in creation order
    times = [t.creation_time for t in listed]
    assert times == sorted(times)


@pytest.mark.emulator
def test_terminate_task_and_job(client: Client, idle_job: str) -> None:
    client.add_tasks(idle_job, [TaskSpec(command="true", task_id=f"a{i}") for i in range(3)])
    assert client.terminate_task(idle_job, "a0")
    task = client.batch.get_task(idle_job, "a0")
    assert "completed" in str(task.state).lower()
    assert task.execution_info.failure_info.code == "TaskEnded"
    assert not client.terminate_task(idle_job, "no-such-task")

    assert client.terminate_job(idle_job, "ExecutorShutdown")
    job = client.batch.get_job(idle_job)
    for _ in range(100):  # the terminate is asynchronous on Azure; the emulator is quick
        if "completed" in str(job.state).lower():
            break
        time.sleep(0.05)
        job = client.batch.get_job(idle_job)
    assert "completed" in str(job.state).lower()
    assert job.execution_info.termination_reason == "ExecutorShutdown"
    assert not client.terminate_job(idle_job)  # already completed: not an error
    assert not client.terminate_job(_uid("no-such-job"))


def test_spec_hash_ignores_the_local_store_root(tmp_path: Path) -> None:
    """The same pool seen through two BATCHLAUNCH_HOMEs (two local store roots) is the same
    spec: file:// URLs count from the store root, as SAS URLs count without their query."""
    one = Client(store=LocalStore("batchlaunch", root=tmp_path / "home-a" / "store"))
    two = Client(store=LocalStore("batchlaunch", root=tmp_path / "elsewhere" / "store"))
    spec = PoolSpec(id="same-pool")
    a = one.pool_body(spec, start_script="echo hi\n")
    b = two.pool_body(spec, start_script="echo hi\n")
    urls = [body["startTask"]["resourceFiles"][0]["httpUrl"] for body in (a, b)]
    assert urls[0] != urls[1] and all(u.startswith("file:///") for u in urls)
    assert spec_hash(a) == spec_hash(b)
    # ... while what the node would run still counts
    assert spec_hash(two.pool_body(spec, start_script="echo bye\n")) != spec_hash(a)
    # plain file URLs (not content-addressed) count from their last component
    assert spec_hash({"u": {"containerUrl": "file:///x/store/c1"}}) == spec_hash(
        {"u": {"containerUrl": "file:///y/other/c1"}}
    )
    assert spec_hash({"u": {"containerUrl": "file:///x/store/c1"}}) != spec_hash(
        {"u": {"containerUrl": "file:///x/store/c2"}}
    )


@pytest.mark.emulator
def test_same_pool_through_another_store_root_is_reused(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    first = _client(emulator, tmp_path / "store-a")
    second = _client(emulator, tmp_path / "store-b")
    pool_id = _uid("roots")
    assert first.create_pool(pool_id, dedicated_nodes=0, start_script="echo ready\n").created
    again = second.create_pool(pool_id, dedicated_nodes=0, start_script="echo ready\n")
    assert not again.created  # not "exists with a different spec"
    first.delete_pool(pool_id)
