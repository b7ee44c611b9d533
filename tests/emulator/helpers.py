"""Helpers for the emulator tier: build SDK objects and wait for states without sleeping blindly."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from azure.batch import models as m

T = TypeVar("T")
_ids = itertools.count()

UBUNTU = m.VirtualMachineConfiguration(
    image_reference=m.BatchVmImageReference(
        publisher="canonical",
        offer="0001-com-ubuntu-server-jammy",
        sku="22_04-lts",
        version="latest",
    ),
    node_agent_sku_id="batch.node.ubuntu 22.04",
)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{int(time.time() * 1000) % 100000}"


def wait_for(
    fn: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    value = fn()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or fn}: last value {value!r}")
        time.sleep(0.05)
        value = fn()
    return value


def make_pool(
    client: Any,
    pool_id: str | None = None,
    nodes: int = 1,
    slots: int = 1,
    low_priority: int = 0,
    wait: bool = True,
    **kwargs: Any,
) -> str:
    pool_id = pool_id or unique("pool")
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=UBUNTU,
            target_dedicated_nodes=nodes,
            target_low_priority_nodes=low_priority,
            task_slots_per_node=slots,
            **kwargs,
        )
    )
    if wait:
        wait_nodes(client, pool_id, nodes + low_priority)
    return pool_id


def wait_nodes(
    client: Any,
    pool_id: str,
    count: int,
    states: tuple[str, ...] = ("idle",),
    timeout: float = 30.0,
) -> list[Any]:
    return wait_for(
        lambda: list(client.list_nodes(pool_id)),
        lambda nodes: len(nodes) == count and all(n.state in states for n in nodes),
        timeout,
        f"{count} nodes in {states} in {pool_id}",
    )


def make_job(client: Any, pool_id: str, job_id: str | None = None, **kwargs: Any) -> str:
    job_id = job_id or unique("job")
    client.create_job(
        m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id), **kwargs)
    )
    return job_id


def wait_task(
    client: Any, job_id: str, task_id: str, state: str = "completed", timeout: float = 30.0
) -> Any:
    return wait_for(
        lambda: client.get_task(job_id, task_id),
        lambda t: t.state == state,
        timeout,
        f"task {task_id} {state}",
    )


def wait_all(client: Any, job_id: str, total: int, timeout: float = 60.0) -> Any:
    return wait_for(
        lambda: client.get_job_task_counts(job_id).task_counts,
        lambda c: c.completed == total,
        timeout,
        f"{total} tasks completed in {job_id}",
    )


def read(client: Any, job_id: str, task_id: str, name: str = "stdout.txt") -> str:
    return b"".join(client.download_task_file(job_id, task_id, name)).decode()


def task(task_id: str, command: str, **kwargs: Any) -> Any:
    return m.BatchTaskCreateOptions(id=task_id, command_line=command, **kwargs)


def error_code(info: Any) -> str | None:
    """The Batch error code of a `pytest.raises` result."""
    error = getattr(info.value, "error", None)
    return getattr(error, "code", None)
