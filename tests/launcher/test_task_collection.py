"""Bulk task submission (`launcher.task_collection`): chunking, ordering, retries and
refusals, against the emulator through the real SDK client's pipeline."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from launcher.task_collection import (
    MAX_TASKS_PER_REQUEST,
    CollectionResult,
    TaskTooLarge,
    _read_results,
    add_task_collection,
    chunks,
)
from tests.fixtures.emulator import make_client


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _bodies(n: int, prefix: str = "t", pad: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i:05d}", "commandLine": "true" + " " * pad if pad else "true"}
        for i in range(n)
    ]


# ------------------------------------------------------------------ chunking (no service)


def test_chunks_keep_order_and_both_limits() -> None:
    bodies = _bodies(250, pad=300)
    cut = list(chunks(bodies, max_tasks=100, max_bytes=10_000))
    assert [task_id for c in cut for task_id in c.ids] == [b["id"] for b in bodies]
    for chunk in cut:
        payload = chunk.payload()
        assert len(payload) <= 10_000 and len(chunk.ids) <= 100
        assert [v["id"] for v in json.loads(payload)["value"]] == chunk.ids
    assert len(cut) > 3  # the byte limit, not the count, cut these
    assert [len(c.ids) for c in chunks(_bodies(250))] == [100, 100, 50]


def test_chunk_sizes_count_the_bytes_sent_not_the_characters() -> None:
    # Non-ASCII text goes out escaped (\u00e9: 6 bytes for 1 character); the byte limit holds.
    bodies = [{"id": f"t{i:05d}", "commandLine": "echo " + "é" * 200} for i in range(60)]
    cut = list(chunks(bodies, max_tasks=100, max_bytes=20_000))
    assert len(cut) > 1 and all(len(c.payload()) <= 20_000 for c in cut)
    assert [v["commandLine"] for c in cut for v in json.loads(c.payload())["value"]] == [
        b["commandLine"] for b in bodies
    ]


def test_a_task_too_large_for_any_request_is_named() -> None:
    bodies = [*_bodies(1), {"id": "t00001", "commandLine": "x" * 5000}]
    with pytest.raises(TaskTooLarge, match=r"'t00001'.*resource files"):
        list(chunks(bodies, 100, 4096))


def test_results_are_sorted_into_added_existing_refused_and_retried() -> None:
    result = CollectionResult()
    reply = {
        "value": [
            {"status": "success", "taskId": "a"},
            {"status": "clienterror", "taskId": "b", "error": {"code": "TaskExists"}},
            {
                "status": "clienterror",
                "taskId": "c",
                "error": {"code": "InvalidPropertyValue", "message": {"value": "bad slots"}},
            },
            {"status": "servererror", "taskId": "d", "error": {"code": "ServerBusy"}},
        ]
    }
    assert _read_results(reply, result) == {"d"}
    assert result.added == ["a"] and result.existed == ["b"]
    assert result.refused == [("c", "InvalidPropertyValue", "bad slots")]


# ------------------------------------------------------------------ against the emulator


class Posts:
    """azure-core hook: the addtaskcollection requests sent, with their task counts."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, request: Any) -> None:
        http = request.http_request
        if urllib.parse.urlparse(http.url).path.endswith("/addtaskcollection"):
            self.sizes.append(len(json.loads(http.content)["value"]))


@pytest.fixture
def idle_job(batch_client: Any) -> Iterator[str]:
    from azure.batch import models

    pool_id, job_id = _uid("tc-pool"), _uid("tc-job")
    batch_client.create_pool(
        models.BatchPoolCreateOptions(
            {
                "id": pool_id,
                "vmSize": "standard_d2s_v3",
                "targetDedicatedNodes": 0,
                "virtualMachineConfiguration": {
                    "imageReference": {
                        "publisher": "canonical",
                        "offer": "ubuntu-24_04-lts",
                        "sku": "server",
                    },
                    "nodeAgentSKUId": "batch.node.ubuntu 24.04",
                },
            }
        )
    )
    batch_client.create_job(
        models.BatchJobCreateOptions({"id": job_id, "poolInfo": {"poolId": pool_id}})
    )
    yield job_id
    batch_client.begin_delete_job(job_id, polling_interval=0.05)
    batch_client.begin_delete_pool(pool_id, polling_interval=0.05)


def _listed_ids(client: Any, job_id: str) -> list[str]:
    return [str(t.id) for t in client.list_tasks(job_id, select=["id"])]


@pytest.mark.emulator
def test_a_generator_of_tasks_is_added_in_order_once(emulator: Any, idle_job: str) -> None:
    posts = Posts()
    client = make_client(emulator, raw_request_hook=posts)
    bodies = _bodies(1050)
    pulled: list[str] = []

    def lazily() -> Iterator[dict[str, Any]]:
        for body in bodies:
            pulled.append(body["id"])
            yield body

    result = add_task_collection(client, idle_job, lazily(), max_concurrency=4)
    assert sorted(result.added) == [b["id"] for b in bodies] and not result.existed
    assert posts.sizes == [MAX_TASKS_PER_REQUEST] * 10 + [50]
    listed = _listed_ids(client, idle_job)  # in creation order
    assert sorted(listed) == [b["id"] for b in bodies]
    # Chunks may land in any order (4 in flight); each keeps its tasks together, in order.
    where = {task_id: n for n, task_id in enumerate(listed)}
    for start in range(0, len(bodies), MAX_TASKS_PER_REQUEST):
        places = [where[b["id"]] for b in bodies[start : start + MAX_TASKS_PER_REQUEST]]
        assert places == list(range(places[0], places[0] + len(places)))
    # Sent again with new ones (a resumed run): the old count as existing, nothing twice.
    again = add_task_collection(client, idle_job, bodies[1000:] + _bodies(5, "new"))
    assert sorted(again.existed) == [b["id"] for b in bodies[1000:]]
    assert sorted(again.added) == [f"new{i:05d}" for i in range(5)]
    assert len(_listed_ids(client, idle_job)) == 1055


@pytest.mark.emulator
def test_a_request_the_service_finds_too_large_is_split(emulator: Any, idle_job: str) -> None:
    posts = Posts()
    client = make_client(emulator, raw_request_hook=posts)
    bodies = _bodies(100, pad=20_000)  # ~2 MB in one chunk when the size limit is lifted
    result = add_task_collection(client, idle_job, bodies, max_bytes=10 * 1024 * 1024)
    assert len(result.added) == 100
    assert posts.sizes[0] == 100 and len(posts.sizes) >= 3  # refused whole, sent in halves
    assert _listed_ids(client, idle_job) == [b["id"] for b in bodies]


@pytest.mark.emulator
def test_refused_tasks_are_reported_and_the_rest_added(batch_client: Any, idle_job: str) -> None:
    bodies = [*_bodies(3), {"id": "no-command"}, {"id": "bad id!", "commandLine": "true"}]
    result = add_task_collection(batch_client, idle_job, bodies)
    assert sorted(result.added) == ["t00000", "t00001", "t00002"]
    codes = {task_id: code for task_id, code, _ in result.refused}
    assert set(codes) == {"no-command", "bad id!"}
    assert codes["no-command"] == "MissingRequiredProperty"


@pytest.mark.emulator
def test_a_missing_job_is_an_error_not_a_silent_success(batch_client: Any) -> None:
    with pytest.raises(HttpResponseError, match="JobNotFound"):
        add_task_collection(batch_client, _uid("no-such-job"), _bodies(3))


@pytest.mark.emulator
def test_an_error_from_the_generator_stops_the_submission_there(
    batch_client: Any, idle_job: str
) -> None:
    def failing() -> Iterator[dict[str, Any]]:
        yield from _bodies(250)
        raise ValueError("task 250 is invalid")

    with pytest.raises(ValueError, match="task 250"):
        add_task_collection(batch_client, idle_job, failing(), max_concurrency=4)
    # The two full chunks were sent; the 50 tasks cut off by the error were not.
    assert sorted(_listed_ids(batch_client, idle_job)) == [f"t{i:05d}" for i in range(200)]


@pytest.mark.emulator
def test_under_faults_and_throttling_every_task_is_added_exactly_once(
    emulator_factory: Any,
) -> None:
    from azure.batch import models

    faulty = emulator_factory(fault_rate=0.2, throttle_rate=0.2, seed=11)
    client = make_client(faulty, retry_backoff_factor=0.01, retry_backoff_max=0.05)
    job_id = _uid("faults")
    for attempt in range(20):  # the job itself may be hit by a fault
        try:
            client.create_job(
                models.BatchJobCreateOptions({"id": job_id, "poolInfo": {"poolId": "none"}})
            )
            break
        except HttpResponseError as exc:
            if getattr(exc.error, "code", "") == "JobExists":
                break
            assert attempt < 19
    bodies = _bodies(2000)
    result = add_task_collection(client, job_id, bodies, sleep=lambda _s: None)
    assert sorted(result.added + result.existed) == [b["id"] for b in bodies]
    listed = _listed_ids(client, job_id)
    assert sorted(listed) == [b["id"] for b in bodies]  # present, and each once


def test_an_unreachable_service_raises_after_the_attempts() -> None:
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    from emulator.config import DEFAULT_ACCOUNT, DEFAULT_KEY

    client = BatchClient(
        "http://127.0.0.1:9",  # discard port: nothing listens
        AzureNamedKeyCredential(DEFAULT_ACCOUNT, DEFAULT_KEY),
        retry_total=0,
    )
    delays: list[float] = []
    with pytest.raises(ServiceRequestError):
        add_task_collection(client, "job", _bodies(3), attempts=3, sleep=delays.append)
    assert len(delays) == 2
