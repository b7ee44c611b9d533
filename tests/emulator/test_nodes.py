"""Nodes through the SDK: start task (env, waitForSuccess, failure), reboot, users, remote
login, node files, scheduling on/off."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as m
from azure.batch.models._models import BatchNodeRebootOptions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from tests.emulator.helpers import (
    error_code,
    make_job,
    make_pool,
    task,
    wait_for,
    wait_nodes,
    wait_task,
)

pytestmark = pytest.mark.emulator

COUNT_BOOTS = (
    "/bin/sh -c 'echo boot >> $AZ_BATCH_NODE_SHARED_DIR/boots;"
    " env > $AZ_BATCH_NODE_STARTUP_DIR/env.txt'"
)


def test_start_task_environment_and_shared_dir(batch_client: Any, tmp_path: Any) -> None:
    script = tmp_path / "setup.sh"
    script.write_text('#!/bin/sh\necho ready > "$AZ_BATCH_NODE_SHARED_DIR/ready"\n')
    pool_id = make_pool(
        batch_client,
        nodes=1,
        wait=False,
        start_task=m.BatchStartTask(
            command_line="/bin/sh setup.sh",
            resource_files=[m.ResourceFile(http_url=script.as_uri(), file_path="setup.sh")],
            environment_settings=[m.EnvironmentSetting(name="STAGE", value="boot")],
            wait_for_success=True,
        ),
    )
    node = wait_nodes(batch_client, pool_id, 1)[0]
    assert node.start_task_info.state == "completed"
    assert node.start_task_info.exit_code == 0
    assert node.start_task_info.result == "success"
    assert node.start_task.command_line == "/bin/sh setup.sh"
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, task("reads", "cat ../../../../../shared/ready"))
    done = wait_task(batch_client, job_id, "reads")
    assert b"".join(batch_client.download_task_file(job_id, "reads", "stdout.txt")) == b"ready\n"
    names = {f.name for f in batch_client.list_node_files(pool_id, node.id, recursive=True)}
    assert {"startup/stdout.txt", "startup/wd/setup.sh", "shared/ready"} <= names
    assert f"workitems/{job_id}/job-1/reads/stdout.txt" in names
    top = {f.name for f in batch_client.list_node_files(pool_id, node.id)}
    assert {"startup", "shared", "workitems", "fsmounts"} <= top
    assert done.node_info.node_id == node.id


def test_start_task_failure_and_no_wait(batch_client: Any) -> None:
    failing = make_pool(
        batch_client,
        nodes=1,
        wait=False,
        start_task=m.BatchStartTask(
            command_line="/bin/sh -c 'echo nope >&2; exit 4'",
            wait_for_success=True,
            max_task_retry_count=1,
        ),
    )
    node = wait_nodes(batch_client, failing, 1, states=("starttaskfailed",))[0]
    info = node.start_task_info
    assert (info.exit_code, info.result, info.retry_count) == (4, "failure", 1)
    assert info.failure_info.category == "usererror"
    stderr = b"".join(batch_client.download_node_file(failing, node.id, "startup/stderr.txt"))
    assert stderr == b"nope\n"  # the last try's log only (retry_count 1 shows both ran)
    counts = {c.pool_id: c for c in batch_client.list_pool_node_counts()}[failing]
    assert counts.dedicated.start_task_failed == 1
    no_wait = make_pool(
        batch_client,
        nodes=1,
        wait=False,
        start_task=m.BatchStartTask(command_line="sleep 5", wait_for_success=False),
    )
    node = wait_nodes(batch_client, no_wait, 1, states=("idle",), timeout=3)[0]
    assert node.start_task_info.state == "running"


def test_waiting_for_start_task_blocks_scheduling(batch_client: Any) -> None:
    pool_id = make_pool(
        batch_client,
        nodes=1,
        wait=False,
        start_task=m.BatchStartTask(command_line="sleep 1", wait_for_success=True),
    )
    wait_nodes(batch_client, pool_id, 1, states=("waitingforstarttask",))
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, task("after", "true"))
    time.sleep(0.2)
    assert batch_client.get_task(job_id, "after").state == "active"
    done = wait_task(batch_client, job_id, "after")
    node = batch_client.get_node(pool_id, done.node_info.node_id)
    assert done.execution_info.start_time >= node.start_task_info.end_time


def test_reboot_reruns_start_task_and_requeues(batch_client: Any) -> None:
    pool_id = make_pool(
        batch_client, nodes=1, start_task=m.BatchStartTask(command_line=COUNT_BOOTS)
    )
    node = wait_nodes(batch_client, pool_id, 1)[0]
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, task("victim", "sleep 1"))
    wait_task(batch_client, job_id, "victim", "running")
    batch_client.begin_reboot_node(
        pool_id, node.id, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=0.05
    ).result()
    wait_nodes(batch_client, pool_id, 1)
    boots = b"".join(batch_client.download_node_file(pool_id, node.id, "shared/boots"))
    assert boots == b"boot\nboot\n"
    done = wait_task(batch_client, job_id, "victim")
    assert done.execution_info.requeue_count == 1
    assert done.execution_info.result == "success"


def test_node_users_and_remote_login(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=1)
    node = wait_nodes(batch_client, pool_id, 1)[0]
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    user = m.BatchNodeUserCreateOptions(
        name="dbg", is_admin=False, expiry_time=expiry, ssh_public_key="ssh-ed25519 AAAAC3Nza test"
    )
    batch_client.create_node_user(pool_id, node.id, user)
    with pytest.raises(ResourceExistsError):
        batch_client.create_node_user(pool_id, node.id, user)
    batch_client.replace_node_user(
        pool_id,
        node.id,
        "dbg",
        m.BatchNodeUserReplaceOptions(ssh_public_key="ssh-ed25519 BBBB other"),
    )
    settings = batch_client.get_node_remote_login_settings(pool_id, node.id)
    assert settings.remote_login_ip_address == "127.0.0.1"
    assert settings.remote_login_port > 0
    batch_client.delete_node_user(pool_id, node.id, "dbg")
    with pytest.raises(ResourceNotFoundError):
        batch_client.delete_node_user(pool_id, node.id, "dbg")
    with pytest.raises(ResourceNotFoundError) as exc:
        batch_client.get_node(pool_id, "tvmps_nope_d")
    assert error_code(exc) == "NodeNotFound"


def test_node_scheduling_and_file_properties(batch_client: Any) -> None:
    pool_id = make_pool(batch_client, nodes=1)
    node = wait_nodes(batch_client, pool_id, 1)[0]
    batch_client.disable_node_scheduling(
        pool_id,
        node.id,
        m.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="requeue"),
    )
    assert batch_client.get_node(pool_id, node.id).scheduling_state == "disabled"
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, task("held", "echo hi"))
    time.sleep(0.2)
    assert batch_client.get_task(job_id, "held").state == "active"
    batch_client.enable_node_scheduling(pool_id, node.id)
    wait_task(batch_client, job_id, "held")
    path = f"workitems/{job_id}/job-1/held/stdout.txt"
    props = batch_client.get_node_file_properties(pool_id, node.id, path)
    assert props.content_length == 3 and not props.is_directory
    batch_client.delete_node_file(pool_id, node.id, path)
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_node_file_properties(pool_id, node.id, path)
    node = batch_client.get_node(pool_id, node.id)
    assert node.total_tasks_run == 1 and node.total_tasks_succeeded == 1


def test_mount_configuration_paths_exist(batch_client: Any) -> None:
    pool_id = make_pool(
        batch_client,
        nodes=1,
        mount_configuration=[
            m.MountConfiguration(
                azure_blob_file_system_configuration=m.AzureBlobFileSystemConfiguration(
                    account_name="acct",
                    container_name="inputs",
                    relative_mount_path="data",
                    sas_key="sv=x",
                ),
            )
        ],
    )
    node = wait_nodes(batch_client, pool_id, 1)[0]
    top = {f.name for f in batch_client.list_node_files(pool_id, node.id, recursive=True)}
    assert "fsmounts/data" in top
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(
        job_id, task("mnt", "/bin/sh -c 'test -d $AZ_BATCH_NODE_MOUNTS_DIR/data'")
    )
    assert wait_task(batch_client, job_id, "mnt").execution_info.exit_code == 0


def test_reboot_stops_a_running_start_task(batch_client: Any) -> None:
    record = "/bin/sh -c 'echo $$ >> $AZ_BATCH_NODE_SHARED_DIR/pids; exec sleep 30'"
    pool_id = make_pool(
        batch_client,
        nodes=1,
        start_task=m.BatchStartTask(command_line=record, wait_for_success=False),
    )
    node = wait_nodes(batch_client, pool_id, 1)[0]

    def pids() -> list[int]:
        try:
            raw = b"".join(batch_client.download_node_file(pool_id, node.id, "shared/pids"))
        except ResourceNotFoundError:
            return []
        return [int(x) for x in raw.split()]

    first = wait_for(pids, lambda p: len(p) == 1)[0]
    batch_client.begin_reboot_node(
        pool_id, node.id, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=0.05
    ).result()
    wait_for(pids, lambda p: len(p) == 2)
    time.sleep(0.2)
    status = f"/proc/{first}/status"
    assert not Path(status).exists() or "zombie" in Path(status).read_text()


def test_deallocate_and_start_node(batch_client: Any) -> None:
    from azure.batch.models._models import BatchNodeDeallocateOptions

    pool_id = make_pool(
        batch_client, nodes=1, start_task=m.BatchStartTask(command_line=COUNT_BOOTS)
    )
    node = wait_nodes(batch_client, pool_id, 1)[0]
    job_id = make_job(batch_client, pool_id)
    batch_client.create_task(job_id, task("work", "sleep 0.5"))
    wait_task(batch_client, job_id, "work", "running")
    batch_client.begin_deallocate_node(
        pool_id,
        node.id,
        BatchNodeDeallocateOptions(node_deallocate_option="requeue"),
        polling_interval=0.05,
    ).result()
    assert batch_client.get_node(pool_id, node.id).state == "deallocated"
    assert batch_client.get_task(job_id, "work").state == "active"
    batch_client.begin_start_node(pool_id, node.id, polling_interval=0.05).result()
    wait_nodes(batch_client, pool_id, 1)
    done = wait_task(batch_client, job_id, "work")
    assert done.execution_info.requeue_count == 1
    boots = b"".join(batch_client.download_node_file(pool_id, node.id, "shared/boots"))
    assert boots == b"boot\nboot\n"
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job_schedule("nope")
