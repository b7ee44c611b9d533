"""Pools through the real azure-batch SDK: create/get/exists/list/delete, resize, errors, auth."""

from __future__ import annotations

from typing import Any

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from emulator.server import EmulatorInfo
from tests.emulator.helpers import UBUNTU, error_code, make_pool, unique, wait_for, wait_nodes
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator


def test_create_get_exists_list(batch_client: Any) -> None:
    pool_id = unique("pool")
    batch_client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="STANDARD_D2S_V3",
            virtual_machine_configuration=UBUNTU,
            target_dedicated_nodes=2,
            task_slots_per_node=3,
            task_scheduling_policy=m.BatchTaskSchedulingPolicy(node_fill_type="pack"),
            metadata=[m.BatchMetadataItem(name="owner", value="tests")],
            start_task=m.BatchStartTask(command_line="true", wait_for_success=True),
        )
    )
    pool = batch_client.get_pool(pool_id)
    assert pool.id == pool_id
    assert pool.state == "active"
    assert pool.vm_size == "standard_d2s_v3"
    assert pool.task_slots_per_node == 3
    assert pool.task_scheduling_policy.node_fill_type == "pack"
    assert pool.virtual_machine_configuration.node_agent_sku_id == "batch.node.ubuntu 22.04"
    assert pool.metadata[0].name == "owner"
    assert pool.start_task.command_line == "true"
    assert batch_client.pool_exists(pool_id) is True
    with pytest.raises(ResourceNotFoundError):
        batch_client.pool_exists(unique("nope"))
    nodes = wait_nodes(batch_client, pool_id, 2)
    assert {n.is_dedicated for n in nodes} == {True}
    pool = wait_for(
        lambda: batch_client.get_pool(pool_id), lambda p: p.allocation_state == "steady"
    )
    assert pool.current_dedicated_nodes == 2
    listed = {p.id for p in batch_client.list_pools()}
    assert pool_id in listed
    only = list(batch_client.list_pools(filter=f"id eq '{pool_id}'", select=["id", "vmSize"]))
    assert [(p.id, p.vm_size, p.state) for p in only] == [(pool_id, "standard_d2s_v3", None)]


def test_errors(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=0, wait=False)
    with pytest.raises(ResourceExistsError) as exc:
        make_pool(batch_client, pool_id, wait=False)
    assert error_code(exc) == "PoolExists"
    assert exc.value.status_code == 409
    with pytest.raises(ResourceNotFoundError) as missing:
        batch_client.get_pool(unique("missing"))
    assert error_code(missing) == "PoolNotFound"
    with pytest.raises(HttpResponseError) as bad:
        batch_client.create_pool(
            m.BatchPoolCreateOptions(
                id=unique("pool"),
                vm_size="standard_d2s_v3",
                virtual_machine_configuration=m.VirtualMachineConfiguration(
                    image_reference=UBUNTU.image_reference, node_agent_sku_id="beos.agent 5"
                ),
            )
        )
    assert bad.value.status_code == 400
    assert error_code(bad) == "InvalidPropertyValue"


def test_bad_key_and_account(emulator: EmulatorInfo) -> None:
    wrong_key = EmulatorInfo(emulator.endpoint, emulator.account, "d3Jvbmcta2V5LXdyb25nLWtleQ==")
    with pytest.raises(HttpResponseError) as exc:
        list(make_client(wrong_key, retry_total=0).list_pools())
    assert exc.value.status_code == 403
    assert error_code(exc) == "AuthenticationFailed"
    wrong_account = EmulatorInfo(emulator.endpoint, "other", emulator.key)
    with pytest.raises(HttpResponseError) as exc2:
        make_client(wrong_account, retry_total=0).get_pool("x")
    assert exc2.value.status_code == 403


def test_resize_remove_nodes_and_delete(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=1)
    batch_client.begin_resize_pool(
        pool_id,
        m.BatchPoolResizeOptions(target_dedicated_nodes=3, target_low_priority_nodes=1),
        polling_interval=0.05,
    ).result()
    nodes = wait_nodes(batch_client, pool_id, 4)
    assert sorted(n.is_dedicated for n in nodes) == [False, True, True, True]
    assert all(n.id.endswith("_p") == (not n.is_dedicated) for n in nodes)
    pool = wait_for(
        lambda: batch_client.get_pool(pool_id), lambda p: p.allocation_state == "steady"
    )
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (3, 1)
    victim = next(n.id for n in nodes if n.is_dedicated)
    batch_client.begin_remove_nodes(
        pool_id, m.BatchNodeRemoveOptions(node_ids=[victim]), polling_interval=0.05
    ).result()
    wait_nodes(batch_client, pool_id, 3)
    assert victim not in {n.id for n in batch_client.list_nodes(pool_id)}
    assert batch_client.get_pool(pool_id).target_dedicated_nodes == 2
    batch_client.begin_stop_pool_resize(pool_id, polling_interval=0.05).result()
    counts = {c.pool_id: c for c in batch_client.list_pool_node_counts()}[pool_id]
    assert counts.dedicated.idle == 2 and counts.low_priority.idle == 1
    assert counts.dedicated.total == 2
    batch_client.begin_delete_pool(pool_id, polling_interval=0.05).result()
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_pool(pool_id)


def test_delete_shows_deleting_then_gone(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=1)
    poller = batch_client.begin_delete_pool(pool_id, polling_interval=0.05)
    assert batch_client.get_pool(pool_id).state == "deleting"
    with pytest.raises(ResourceExistsError) as exc:
        batch_client.begin_resize_pool(pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=2))
    assert error_code(exc) == "PoolBeingDeleted"
    poller.result()
    assert pool_id not in {p.id for p in batch_client.list_pools()}


def test_update_and_replace_properties(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=0, wait=False)
    batch_client.update_pool(
        pool_id, m.BatchPoolUpdateOptions(metadata=[m.BatchMetadataItem(name="a", value="1")])
    )
    assert batch_client.get_pool(pool_id).metadata[0].value == "1"
    batch_client.replace_pool_properties(
        pool_id,
        m.BatchPoolReplaceOptions(
            start_task=m.BatchStartTask(command_line="echo hi"),
            application_package_references=[],
            metadata=[m.BatchMetadataItem(name="b", value="2")],
        ),
    )
    pool = batch_client.get_pool(pool_id)
    assert [(x.name, x.value) for x in pool.metadata] == [("b", "2")]
    assert pool.start_task.command_line == "echo hi"


def test_supported_images_and_usage(batch_client: Any) -> None:
    images = list(batch_client.list_supported_images())
    agents = {i.node_agent_sku_id for i in images}
    assert {
        "batch.node.ubuntu 22.04",
        "batch.node.ubuntu 24.04",
        "batch.node.debian 12",
        "batch.node.el 9",
        "batch.node.windows amd64",
    } <= agents
    linux = list(batch_client.list_supported_images(filter="osType eq 'linux'"))
    assert linux and all(i.os_type == "linux" for i in linux)
    assert len(linux) < len(images)
    assert list(batch_client.list_pool_usage_metrics()) == []


def test_remove_node_with_task_completion_lets_the_task_finish(batch_client: Any) -> None:
    from tests.emulator.helpers import make_job, task, wait_task

    pool_id = make_pool(batch_client, nodes=1)
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, task("finishing", "sleep 1"))
    node_id = wait_task(batch_client, job_id, "finishing", "running").node_info.node_id
    batch_client.begin_remove_nodes(
        pool_id,
        m.BatchNodeRemoveOptions(node_ids=[node_id], node_deallocation_option="taskcompletion"),
        polling_interval=0.05,
    ).result()
    done = wait_task(batch_client, job_id, "finishing")
    assert done.execution_info.result == "success"
    assert done.execution_info.requeue_count == 0
    wait_nodes(batch_client, pool_id, 0)
