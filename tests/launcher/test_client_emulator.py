"""`Client` against the emulator: the real azure-batch SDK over HTTP on loopback."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher.batch import connect
from launcher.client import Client, PoolSpec, TaskSpec
from launcher.errors import UserError
from launcher.storage import LocalStore

pytestmark = pytest.mark.emulator


class RequestLog:
    """azure-core per-call hook: every request the SDK sends, as (method, path)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request: Any) -> None:
        http = request.http_request
        self.calls.append((http.method, urllib.parse.urlparse(http.url).path))

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def requests_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def client(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requests_log: RequestLog
) -> Iterator[Client]:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    conn = connect(
        SimpleNamespace(endpoint=emulator.endpoint, account=emulator.account),
        env={"AZURE_BATCH_ACCESS_KEY": emulator.key},
        raw_request_hook=requests_log,
    )
    store = LocalStore("batchlaunch", root=tmp_path / "store")
    store.ensure_container()
    c = Client(batch=conn, store=store)
    yield c


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_create_pool_is_idempotent_and_replace(client: Client, requests_log: RequestLog) -> None:
    pool_id = _uid("idem")
    first = client.create_pool(
        pool_id, dedicated_nodes=0, vm_size="standard_d2s_v3", start_script="echo ready\n"
    )
    assert first.created and first.vm_size == "standard_d2s_v3"
    requests_log.clear()
    second = client.create_pool(
        pool_id, dedicated_nodes=0, vm_size="standard_d2s_v3", start_script="echo ready\n"
    )
    assert not second.created
    assert [m for m, _ in requests_log.calls] == ["GET"]  # looked, did not create
    with pytest.raises(UserError, match=r"different spec.*vm_size.*replace_existing") as info:
        client.create_pool(pool_id, dedicated_nodes=0, vm_size="standard_d4s_v3")
    assert "\n" not in str(info.value)
    replaced = client.create_pool(
        pool_id, dedicated_nodes=0, vm_size="standard_d4s_v3", replace_existing=True
    )
    assert replaced.created and replaced.vm_size == "standard_d4s_v3"
    assert client.delete_pool(pool_id, wait=True)
    assert not client.delete_pool(pool_id)
    with pytest.raises(UserError, match="not found"):
        client.show_pool(pool_id)


def test_autoscale_pool_gets_the_default_formula(client: Client) -> None:
    from launcher.autoscale import default_formula

    pool_id = _uid("auto")
    client.create_pool(pool_id, autoscale=True, max_autoscale_nodes=4, autoscale_interval_minutes=5)
    pool = client.get_pool(pool_id)
    assert pool is not None
    assert pool["enableAutoScale"] is True
    assert pool["autoScaleFormula"] == default_formula(4)
    import isodate

    assert isodate.parse_duration(pool["autoScaleEvaluationInterval"]).total_seconds() == 300
    with pytest.raises(UserError, match="autoscales"):
        client.resize_pool(pool_id, dedicated_nodes=2)
    client.delete_pool(pool_id)


def test_pool_settings_reach_the_service(client: Client) -> None:
    pool_id = _uid("settings")
    client.create_pool(
        spec=PoolSpec(
            id=pool_id,
            dedicated_nodes=0,
            low_priority_nodes=0,
            task_slots_per_node=2,
            task_scheduling="pack",
            availability_zones="zonal",
            container_image="python:3.11-slim",
            mounts=["input-test", {"source": "output-test", "target": "results"}],
            cache_blobfuse=False,
        )
    )
    pool = client.get_pool(pool_id)
    assert pool is not None
    vm = pool["virtualMachineConfiguration"]
    assert vm["containerConfiguration"]["containerImageNames"] == ["python:3.11-slim"]
    assert vm["nodePlacementConfiguration"]["policy"] == "zonal"
    assert pool["taskSlotsPerNode"] == 2
    assert pool["taskSchedulingPolicy"]["nodeFillType"] == "pack"
    mounts = [m["azureBlobFileSystemConfiguration"] for m in pool["mountConfiguration"]]
    assert {(m["containerName"], m["relativeMountPath"]) for m in mounts} == {
        ("input-test", "input-test"),
        ("output-test", "results"),
    }
    assert all(m["blobfuseOptions"] == "-o direct_io" for m in mounts)

    gallery = (
        "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/galleries/"
        "gal/images/julia-node/versions/1.0.0"
    )
    gallery_pool = _uid("gallery")
    client.create_pool(
        gallery_pool,
        dedicated_nodes=0,
        image={"gallery_image_id": gallery, "node_agent_sku_id": "batch.node.ubuntu 22.04"},
    )
    got = client.get_pool(gallery_pool)
    assert got is not None
    assert got["virtualMachineConfiguration"]["imageReference"]["virtualMachineImageId"] == gallery
    client.delete_pool(pool_id)
    client.delete_pool(gallery_pool)


def test_create_job_options(client: Client) -> None:
    pool_id = _uid("jobpool")
    client.create_pool(pool_id, dedicated_nodes=0)
    with pytest.raises(UserError, match="pool 'no-such-pool' not found"):
        client.create_job(_uid("job"), "no-such-pool")
    job_id = client.create_job(
        _uid("job"),
        pool_id,
        uses_deps=True,
        save_logs_to_blob="output-test",
        logs_folder="logs",
        task_retries=2,
        mark_complete_after_tasks_run=True,
        timeout_minutes=90,
    )
    job = client.batch.get_job(job_id).as_dict()
    assert job["poolInfo"]["poolId"] == pool_id
    assert job["usesTaskDependencies"] is True
    assert job["onAllTasksComplete"] == "terminatejob"
    assert job["constraints"]["maxTaskRetryCount"] == 2
    import isodate

    assert isodate.parse_duration(job["constraints"]["maxWallClockTime"]).total_seconds() == 5400
    assert client.sas_expiry(job_id).total_seconds() == 5400 + 3600  # time limit + margin
    with pytest.raises(UserError, match="already exists"):
        client.create_job(job_id, pool_id)
    assert client.create_job(job_id, pool_id, exist_ok=True) == job_id
    client.delete_job(job_id)
    client.delete_pool(pool_id)


def test_add_task_options(client: Client) -> None:
    pool_id = _uid("taskpool")
    client.create_pool(pool_id, dedicated_nodes=0)
    job_id = client.create_job(
        _uid("job"), pool_id, task_id_ints=True, save_logs_to_blob=True, logs_folder="logs"
    )
    first = client.add_task(job_id, "echo 'hello, world'")
    assert first == "1"
    second = client.add_task(
        job_id,
        "python3 second.py",
        depends_on=[first],
        depends_on_range=(1, 1),
        run_dependents_on_failure=True,
        container_image="python:3.12",
        timeout_minutes=10,
        max_retries=3,
        environment={"SEED": "7"},
        resource_files=[client.resource_file(b"print(1)\n", "second.py")],
    )
    assert second == "2"
    named = client.add_task(job_id, "true", task_id="reduce", name_suffix="-final")
    assert named == "reduce-final"
    task = client.batch.get_task(job_id, second).as_dict()
    assert task["dependsOn"] == {"taskIds": ["1"], "taskIdRanges": [{"start": 1, "end": 1}]}
    assert task["exitConditions"]["default"]["dependencyAction"] == "satisfy"
    assert task["containerSettings"]["imageName"] == "python:3.12"
    assert task["constraints"]["maxTaskRetryCount"] == 3
    import isodate

    assert isodate.parse_duration(task["constraints"]["maxWallClockTime"]).total_seconds() == 600
    assert {"name": "SEED", "value": "7"} in task["environmentSettings"]
    assert task["commandLine"].startswith("/bin/bash")
    assert task["resourceFiles"][0]["filePath"] == "second.py"
    logs = [o for o in task["outputFiles"] if o["filePattern"] == "../std*.txt"]
    assert logs and logs[0]["destination"]["container"]["path"] == "logs/2"
    with pytest.raises(UserError, match="depends_on_range"):
        client.add_task(job_id, "true", depends_on_range=(5, 2))
    client.delete_job(job_id)
    client.delete_pool(pool_id)


def test_add_tasks_bulk_and_task_counts_cost(client: Client, requests_log: RequestLog) -> None:
    pool_id = _uid("bulkpool")
    client.create_pool(pool_id, dedicated_nodes=0)
    job_id = client.create_job(_uid("bulk"), pool_id)
    tasks = [TaskSpec(command=f"echo {i}", task_id=f"t{i:04d}") for i in range(1000)]
    requests_log.clear()
    ids = client.add_tasks(job_id, tasks, max_concurrency=8)
    assert len(ids) == 1000 and ids[0] == "t0000"
    posts = [p for m, p in requests_log.calls if m == "POST" and p.endswith("/addtaskcollection")]
    assert len(posts) == 10  # 100 tasks per request
    # Re-submitting (a resumed run) adds nothing twice and is not an error.
    client.add_tasks(job_id, [*tasks[:250], TaskSpec(command="echo new", task_id="t1000")])
    requests_log.clear()
    counts = client.task_counts(job_id)
    assert len(requests_log.calls) == 1 and requests_log.calls[0][1].endswith("/taskcounts")
    assert counts.total == 1001 and counts.active == 1001
    client.delete_job(job_id)
    client.delete_pool(pool_id)


def test_monitor_job_to_completion_with_failure_tail(client: Client, tmp_path: Path) -> None:
    pool_id = _uid("runpool")
    client.create_pool(pool_id, dedicated_nodes=1, task_slots_per_node=4)
    job_id = client.create_job(_uid("run"), pool_id, save_logs_to_blob=True, logs_folder="logs")
    ok = client.add_tasks(
        job_id, [TaskSpec(command=f"echo out-{i}", task_id=f"ok{i}") for i in range(6)]
    )
    bad = client.add_task(job_id, "echo first >&2; echo boom-line >&2; exit 3", task_id="bad")
    after = client.add_task(job_id, "echo after", task_id="after", depends_on=[bad])
    summary = client.monitor_job(job_id, timeout=60, progress=True, expected_tasks=8)
    assert not summary.timed_out, summary
    assert summary.counts.succeeded == 6 and summary.counts.failed == 1
    assert summary.counts.active == 1 and summary.blocked == [after]  # waits on a failure
    assert summary.polls >= 1 and not summary.succeeded
    failed = client.failed_tasks(job_id)
    assert [f.task_id for f in failed] == [bad]
    assert failed[0].exit_code == 3 and failed[0].stderr_tail.splitlines()[-1] == "boom-line"
    assert after and ok
    store = client.store
    assert isinstance(store, LocalStore)
    assert (store.container_dir / "logs" / "ok3" / "stdout.txt").read_text().strip() == "out-3"
    client.delete_job(job_id)
    client.delete_pool(pool_id)


@pytest.mark.azurite
def test_no_storage_key_reaches_the_service(
    emulator: Any, azurite: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from launcher.storage import BlobStore

    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    conn = connect(
        SimpleNamespace(endpoint=emulator.endpoint, account=emulator.account),
        env={"AZURE_BATCH_ACCESS_KEY": emulator.key},
    )
    store = BlobStore("secrets-check", connection_string=azurite.connection_string)
    store.ensure_container()
    client = Client(batch=conn, store=store)
    pool_id = _uid("keyless")
    client.create_pool(
        pool_id, dedicated_nodes=0, mounts=["input-test"], start_script="echo start\n"
    )
    job_id = client.create_job(_uid("keyless"), pool_id, save_logs_to_blob=True)
    task_id = client.add_task(
        job_id,
        "cat in.txt > out.txt",
        resource_files=[client.resource_file(b"data", "in.txt")],
        output_files=[client.output_file("out.txt", "outputs/t1/out.txt")],
    )
    seen = json.dumps(
        [
            client.get_pool(pool_id),
            client.batch.get_job(job_id).as_dict(),
            client.batch.get_task(job_id, task_id).as_dict(),
        ]
    )
    assert azurite.key not in seen and emulator.key not in seen
    assert "AccountKey" not in seen and "accountKey" not in seen
    assert seen.count("sig=") >= 4  # start script, mount, resource file, outputs + logs
    client.delete_job(job_id)
    client.delete_pool(pool_id)


def test_bad_credentials_and_unreachable_endpoint(emulator: Any) -> None:
    wrong = connect(
        SimpleNamespace(endpoint=emulator.endpoint, account=emulator.account),
        env={"AZURE_BATCH_ACCESS_KEY": "d3Jvbmcta2V5LXdyb25nLWtleQ=="},
    )
    with pytest.raises(UserError, match="AZURE_BATCH_ACCESS_KEY") as info:
        Client(batch=wrong, store=None).show_pool("any-pool")
    assert "\n" not in str(info.value)
    closed = connect(
        SimpleNamespace(endpoint="http://127.0.0.1:9", account="devbatch"),
        env={"AZURE_BATCH_ACCESS_KEY": emulator.key},
        retry_total=0,
    )
    with pytest.raises(UserError, match="cannot reach"):
        Client(batch=closed).task_counts("job")


def test_embedded_emulator_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[batch] endpoint = "emulator"` starts (then reuses) the daemon under BATCHLAUNCH_HOME."""
    from emulator.daemon import stop_emulator
    from launcher import paths

    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    try:
        conn = connect(SimpleNamespace(endpoint="emulator", account=None), env={})
        assert conn.emulator and conn.polling_interval < 1
        assert conn.endpoint.startswith("http://127.0.0.1:")
        client = Client(batch=conn, store=LocalStore("batchlaunch", root=tmp_path / "store"))
        client.create_pool("embedded", dedicated_nodes=0)
        again = connect(SimpleNamespace(endpoint="emulator", account=None), env={})
        assert again.endpoint == conn.endpoint  # the same daemon, found again
        assert Client(batch=again).show_pool("embedded").id == "embedded"
    finally:
        stop_emulator(paths.emulator_state_dir())


def test_images_resize_show_and_seal(client: Client) -> None:
    images = client.list_available_images()
    assert images and {i.os for i in images} <= {"linux", "windows"}
    linux = client.list_available_images(os="linux")
    assert linux and all(i.os == "linux" for i in linux)
    assert "ubuntu-22.04" in {i.alias for i in linux}
    with pytest.raises(UserError, match="--os"):
        client.list_available_images(os="macos")

    pool_id = _uid("resize")
    client.create_pool(pool_id, dedicated_nodes=0)
    info = client.resize_pool(pool_id, dedicated_nodes=2, wait=True, timeout=60)
    assert info.target_dedicated_nodes == 2 and info.allocation_state == "steady"
    shown = client.show_pool(pool_id)
    assert sum(shown.node_states.values()) == 2 and shown.dedicated_nodes == 2

    job_id = client.create_job(_uid("seal"), pool_id)
    client.add_tasks(job_id, [TaskSpec(command="true", task_id=f"s{i}") for i in range(3)])
    client.seal_job(job_id)
    assert client.batch.get_job(job_id).as_dict()["onAllTasksComplete"] == "terminatejob"
    assert client.monitor_job(job_id, timeout=60, progress=False).succeeded
    client.delete_job(job_id, wait=True)
    client.delete_pool(pool_id)


def test_generated_task_ids_skip_ids_taken_by_another_client(client: Client) -> None:
    pool_id = _uid("ids")
    client.create_pool(pool_id, dedicated_nodes=0)
    job_id = client.create_job(_uid("ids"), pool_id)
    assert [client.add_task(job_id, "true") for _ in range(2)] == [f"{job_id}-1", f"{job_id}-2"]
    other = Client(batch=client.conn, store=client.store)
    assert other.add_task(job_id, "true", name_suffix="-x") == f"{job_id}-1-x"
    assert other.add_task(job_id, "true") == f"{job_id}-4"  # 1..3 taken: counted, skipped
    assert client.add_task(job_id, "true", task_id="named") == "named"
    assert client.add_task(job_id, "true", task_id="named") == "named"  # re-add: no error
    assert client.task_counts(job_id).total == 5
    client.delete_pool(pool_id)


def test_a_resize_while_one_is_in_progress_replaces_its_target(client: Client) -> None:
    pool_id = _uid("reresize")
    client.create_pool(pool_id, dedicated_nodes=0)
    client.resize_pool(pool_id, dedicated_nodes=3)  # no wait: allocating
    assert client.batch.get_pool(pool_id).allocation_state == "resizing"
    info = client.resize_pool(pool_id, dedicated_nodes=1, wait=True, timeout=60)
    assert info.target_dedicated_nodes == 1 and info.allocation_state == "steady"
    assert client.show_pool(pool_id).dedicated_nodes <= 1
    client.delete_pool(pool_id)
