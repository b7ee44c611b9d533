"""Fixtures of the end-to-end SSH tier: the shared emulator (with its SSH endpoint), one
2-node pool for the whole session, a parameter file pointing at it, and the CLI run as a
real subprocess (`python -m launcher.cli`) with an isolated BATCHLAUNCH_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher.runs import RunRecord
from tests.conftest import REPO

PARAMS = """\
[batch]
endpoint = "{endpoint}"
account = "{account}"

[storage]
url = "local"

[pool]
id = "{pool}"
dedicated_nodes = {nodes}
task_slots_per_node = 4

[runtime]
language = "none"
{runtime}
[job]
id = "{pool}-job"
"""


def write_params(path: Path, info: Any, pool: str, nodes: int = 2, runtime: str = "") -> Path:
    path.write_text(
        PARAMS.format(
            endpoint=info.endpoint, account=info.account, pool=pool, nodes=nodes, runtime=runtime
        )
    )
    return path


def wait_nodes(
    client: Any, pool_id: str, count: int, states: set[str], timeout: float = 30
) -> list[Any]:
    deadline = time.monotonic() + timeout
    nodes: list[Any] = []
    while time.monotonic() < deadline:
        nodes = list(client.list_nodes(pool_id))
        if len(nodes) == count and all(
            str(n.state.value if hasattr(n.state, "value") else n.state) in states for n in nodes
        ):
            return nodes
        time.sleep(0.1)
    raise AssertionError(f"pool {pool_id} never reached {count} nodes in {states}: {nodes}")


@dataclass
class Cluster:
    """A pool on the emulator and how to reach it from the CLI."""

    info: Any  # EmulatorInfo
    client: Any  # azure.batch.BatchClient
    pool_id: str
    params: Path
    home: Path
    node_ids: list[str]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BATCHLAUNCH_HOME=str(self.home),
            AZURE_BATCH_ACCESS_KEY=self.info.key,
            PYTHONPATH=str(REPO),
            TERM=env.get("TERM", "xterm"),
        )
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "launcher.cli", *args]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def record(
        self, job_id: str, out_dir: Path, pool_id: str | None = None, params: Path | None = None
    ) -> RunRecord:
        """A run record for a job the test made itself (the run id is the job id)."""
        record = RunRecord(
            run_id=job_id,
            job_id=job_id,
            pool_id=pool_id or self.pool_id,
            params_path=str(params or self.params),
            out_dir=str(out_dir),
            storage_prefix=f"runs/{job_id}",
        )
        record.save()
        return record

    def job(self, prefix: str) -> str:
        from azure.batch import models

        job_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client.create_job(
            models.BatchJobCreateOptions(
                id=job_id, pool_info=models.BatchPoolInfo(pool_id=self.pool_id)
            )
        )
        return job_id

    def wait_task(self, job_id: str, task_id: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.client.get_task(job_id, task_id)
            if str(getattr(task.state, "value", task.state)) == "completed":
                return task
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not complete in {timeout} s")


@pytest.fixture(scope="session")
def cluster(
    emulator: Any, batch_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    from azure.batch import models

    root = tmp_path_factory.mktemp("ssh-emulator")
    pool_id = f"sshemu-{uuid.uuid4().hex[:6]}"
    image = models.BatchVmImageReference(
        publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
    )
    batch_client.create_pool(
        models.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=2,
            task_slots_per_node=4,
            virtual_machine_configuration=models.VirtualMachineConfiguration(
                image_reference=image, node_agent_sku_id="batch.node.ubuntu 22.04"
            ),
        )
    )
    nodes = wait_nodes(batch_client, pool_id, 2, {"idle"})
    params = write_params(root / "params.toml", emulator, pool_id)
    yield Cluster(
        emulator, batch_client, pool_id, params, root / "home", sorted(n.id for n in nodes)
    )
    batch_client.begin_delete_pool(pool_id, polling_interval=0.1).result()


@pytest.fixture(autouse=True)
def _home(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process calls use the same BATCHLAUNCH_HOME (keys, known hosts, runs) as the CLI."""
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(cluster.home))
    monkeypatch.setenv("AZURE_BATCH_ACCESS_KEY", cluster.info.key)
    return cluster.home
