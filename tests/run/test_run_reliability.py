"""Runs that survive a flaky service, a killed client, and never leak a key.

- fault and throttle injection: every task runs exactly once, every output is collected;
- SIGKILL in the middle of submission, then the same run id again: all tasks once;
- Azurite as storage: the real blob path, and a search of everything the Batch service
  stored and every file on the nodes for the storage and Batch keys.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.emulator import make_client
from tests.run.conftest import CliResult, cli_subprocess

pytestmark = [pytest.mark.emulator]

PARAMS = """
    [batch]
    endpoint = "emulator"
    [storage]
    url = "{storage}"
    container = "reliable"
    [pool]
    id = "{pool}"
    dedicated_nodes = 2
    task_slots_per_node = 16
    [job]
    id = "reliable"
    [[tasks]]
    id = "t"
    command = "echo {{i}} >> {ledger} && mkdir -p out && echo {{i}} > out/v.txt"
    outputs = ["out/v.txt"]
    sweep = {{ i = {values} }}
"""


def _env_for(info: Any, home: Path) -> dict[str, str]:
    return {
        "BATCHLAUNCH_HOME": str(home),
        "AZURE_BATCH_ENDPOINT": info.endpoint,
        "AZURE_BATCH_ACCOUNT": info.account,
        "AZURE_BATCH_ACCESS_KEY": info.key,
    }


def _assert_each_ran_once(ledger: Path, n: int) -> None:
    counts = Counter(ledger.read_text().split())
    assert len(counts) == n, f"{n - len(counts)} task(s) never ran"
    repeated = {k: v for k, v in counts.items() if v != 1}
    assert not repeated, f"tasks ran more than once: {repeated}"


def _assert_all_outputs(run_dir: Path, n: int) -> None:
    values = sorted(int((d / "out" / "v.txt").read_text()) for d in run_dir.iterdir() if d.is_dir())
    assert values == list(range(n))


@pytest.mark.slow
def test_2000_tasks_through_faults_and_throttling_run_once_each(
    emulator_factory: Callable[..., Any],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info = emulator_factory(fault_rate=0.1, throttle_rate=0.1, seed=7)
    for name, value in _env_for(info, tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    n = 2000
    ledger = tmp_path / "ledger.txt"
    params = write_params(
        PARAMS.format(storage="local", pool="faulty", ledger=ledger, values=list(range(n)))
    )
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "faulty1", "--out", str(out), "-q")
    assert result.code == 0, result.err
    _assert_each_ran_once(ledger, n)
    _assert_all_outputs(out / "faulty1", n)


def _kill_mid_submission(
    client: Any, params: Path, run_id: str, out: Path, env: dict[str, str], n: int
) -> int:
    """Start `batchlaunch run`, SIGKILL it once its first tasks exist; tasks present then."""
    proc = cli_subprocess(["run", str(params), "--run-id", run_id, "--out", str(out), "-q"], env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                counts = client.get_job_task_counts(run_id).task_counts
                seen = counts.active + counts.running + counts.completed
            except Exception:  # the job does not exist yet
                seen = 0
            if seen > 0:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return len(list(client.list_tasks(run_id, select=["id"])))


@pytest.mark.slow
def test_sigkill_during_submission_then_resume_adds_every_task_once(
    emulator_factory: Callable[..., Any],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A simulated 40 ms round trip stretches submission (30 requests of 100 tasks) over a
    # few hundred milliseconds, so the kill lands inside it; should submission still win
    # the race, the experiment is repeated with a new run id.
    info = emulator_factory(latency_ms=40)
    env = _env_for(info, tmp_path / "home")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    n = 3000
    client = make_client(info)
    out = tmp_path / "out"
    for attempt in range(3):
        run_id = f"killed{attempt}"
        ledger = tmp_path / f"ledger-{attempt}.txt"
        params = write_params(
            PARAMS.format(storage="local", pool="killed", ledger=ledger, values=list(range(n))),
            name=f"params-{attempt}.toml",
        )
        at_kill = _kill_mid_submission(client, params, run_id, out, env, n)
        if 0 < at_kill < n:
            break
    assert 0 < at_kill < n, f"the kill never landed mid-submission ({at_kill} of {n} tasks)"

    result = cli("run", str(params), "--run-id", run_id, "--out", str(out), "-q")
    assert result.code == 0, result.err
    ids = [t.id for t in client.list_tasks(run_id, select=["id"])]
    assert len(ids) == n and len(set(ids)) == n
    _assert_each_ran_once(ledger, n)
    _assert_all_outputs(out / run_id, n)


@pytest.mark.azurite
def test_azurite_run_and_no_key_reaches_the_service_or_nodes(
    emulator_factory: Callable[..., Any],
    azurite: Any,
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_dir = tmp_path / "emulator-state"
    info = emulator_factory(state_dir=state_dir)
    for name, value in _env_for(info, tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    n = 20
    ledger = tmp_path / "ledger.txt"
    sim = "import sys; open('out/v.txt', 'w').write(sys.argv[1])"
    params = write_params(
        PARAMS.format(storage="azurite", pool="azure", ledger=ledger, values=list(range(n)))
        .replace("mkdir -p out && echo {i} > out/v.txt", "mkdir -p out && python3 sim.py {i}")
        .replace('outputs = ["out/v.txt"]', 'outputs = ["out/v.txt"]\nresource_files = ["sim.py"]'),
        **{"sim.py": sim},
    )
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "azr1", "--out", str(out), "--keep-pool", "-q")
    assert result.code == 0, result.err
    _assert_each_ran_once(ledger, n)
    _assert_all_outputs(out / "azr1", n)
    # the inputs really went through Azurite: the resource file is a blob there
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    blobs = [b.name for b in service.get_container_client("reliable").list_blobs()]
    assert any(b.startswith("cas/") and b.endswith("/sim.py") for b in blobs)
    assert sum(b.startswith("runs/azr1/") for b in blobs) == 3 * n  # v.txt + 2 logs

    # Everything the service stored (pool, job and task definitions, environment settings,
    # command lines) and every file on the nodes: neither key may appear, in any encoding.
    secrets = {
        "storage key": azurite.key,
        "batch key": info.key,
    }
    needles = {
        name: {value.encode(), value.replace("+", "%2B").replace("/", "%2F").encode()}
        for name, value in secrets.items()
    }
    scanned = 0
    for path in state_dir.rglob("*"):
        if not path.is_file() or path.name in ("emulator.log",):
            continue
        data = path.read_bytes()
        scanned += 1
        for name, forms in needles.items():
            for form in forms:
                assert form not in data, f"{name} found in {path}"
    assert scanned > 3 * n  # the node dirs (task dirs, logs) were really searched
