"""Faults and throttling: transient answers decided before any work, so retries are safe."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from tests.emulator.helpers import make_job, make_pool
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator


def test_create_tasks_10000_under_faults_and_throttling(emulator_factory: Any) -> None:
    info = emulator_factory(fault_rate=0.05, throttle_rate=0.05, seed=1234)
    client = make_client(info, retry_backoff_factor=0.05, retry_total=6)
    pool_id = make_pool(client, nodes=0, wait=False)
    job_id = make_job(client, pool_id)
    tasks = [
        m.BatchTaskCreateOptions(id=f"task-{i:05d}", command_line="true") for i in range(10_000)
    ]
    results = client.create_tasks(job_id, tasks, max_concurrency=4)
    assert len(results.result_values) == 10_000
    assert all(
        r.status == "success" or (r.error and r.error.code == "TaskExists")
        for r in results.result_values
    )
    ids = Counter(t.id for t in client.list_tasks(job_id, select=["id"]))
    assert len(ids) == 10_000
    assert set(ids.values()) == {1}
    assert client.get_job_task_counts(job_id).task_counts.active == 10_000
    client.close()


def test_fault_and_throttle_answers_are_transient_and_seeded(emulator_factory: Any) -> None:
    info = emulator_factory(fault_rate=0.3, throttle_rate=0.3, seed=99)
    bare = make_client(info, retry_total=0)
    statuses: list[int | str] = []
    for _ in range(40):
        try:
            list(bare.list_pools())
            statuses.append(200)
        except HttpResponseError as exc:
            statuses.append(exc.status_code or 0)
        except Exception as exc:  # a dropped connection
            statuses.append(type(exc).__name__)
    assert 200 in statuses and 429 in statuses
    assert {500, 503} & set(statuses)
    assert any(isinstance(s, str) for s in statuses), statuses
    # With retries on, the same client code succeeds.
    patient = make_client(info, retry_backoff_factor=0.01, retry_total=10)
    assert list(patient.list_pools()) == []
    bare.close()
    patient.close()


def test_oversized_collection_is_413_and_the_sdk_splits_it(batch_client: Any) -> None:
    from tests.emulator.helpers import unique

    pool_id = make_pool(batch_client, nodes=0, wait=False)
    job_id = make_job(batch_client, pool_id)
    padding = "x" * 20_000
    big = [
        m.BatchTaskCreateOptions(id=f"big{i}", command_line=f"echo {padding}") for i in range(100)
    ]
    with pytest.raises(HttpResponseError) as exc:
        batch_client.create_task_collection(job_id, m.BatchTaskGroup(task_values=big))
    assert exc.value.status_code == 413
    assert exc.value.error is not None and exc.value.error.code == "RequestBodyTooLarge"
    result = batch_client.create_tasks(job_id, big, max_concurrency=2)
    assert sorted(r.task_id for r in result.result_values) == sorted(t.id for t in big)
    assert batch_client.get_job_task_counts(job_id).task_counts.active == 100
    dup = batch_client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[
                m.BatchTaskCreateOptions(id="big0", command_line="true"),
                m.BatchTaskCreateOptions(id=unique("fresh"), command_line="true"),
            ]
        ),
    )
    statuses = sorted((r.status, r.error.code if r.error else None) for r in dup.result_values)
    assert statuses == [("clienterror", "TaskExists"), ("success", None)]
