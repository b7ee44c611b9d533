"""`batchlaunch emulator serve` and the embedded daemon (ensure/stop across processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from emulator.config import DEFAULT_ACCOUNT, DEFAULT_KEY
from emulator.daemon import ensure_emulator, running_emulator, stop_emulator
from emulator.server import EmulatorInfo
from tests.emulator.helpers import make_job, make_pool, task, wait_task
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator

BIN = Path(sys.executable).parent / "batchlaunch"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_serve_prints_one_line_and_shuts_down_cleanly(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    command = [
        str(BIN),
        "emulator",
        "serve",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
        "--account",
        "acct",
        "--key",
        "c2VjcmV0LWtleS1mb3ItdGVzdHM=",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("BATCH_ENDPOINT=http://127.0.0.1:")
        endpoint = line.strip().split("=", 1)[1]
        client = make_client(EmulatorInfo(endpoint, "acct", "c2VjcmV0LWtleS1mb3ItdGVzdHM="))
        pool_id = make_pool(client, nodes=1)
        job_id = make_job(client, pool_id)
        client.create_task(job_id, task("sleeper", "/bin/sh -c 'echo $$ > ../pid; exec sleep 60'"))
        done = wait_task(client, job_id, "sleeper", "running")
        pid_file = (
            tmp_path
            / "state"
            / "nodes"
            / pool_id
            / done.node_info.node_id
            / "workitems"
            / job_id
            / "job-1"
            / "sleeper"
            / "pid"
        )
        deadline = time.monotonic() + 5
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child = int(pid_file.read_text())
        assert _alive(child)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.stdout.read() == "", "serve prints exactly one line"
        time.sleep(0.1)
        assert not _alive(child), "the task's process must not outlive the emulator"
        assert (tmp_path / "state" / "state.sqlite").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_rejects_bad_options(tmp_path: Path) -> None:
    bad = subprocess.run(
        [str(BIN), "emulator", "serve", "--fault-rate", "2", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "fault-rate" in bad.stderr


def test_daemon_is_reused_and_stopped(tmp_path: Path) -> None:
    state = tmp_path / "daemon"
    first = ensure_emulator(state)
    try:
        again = ensure_emulator(state)
        assert (again.endpoint, again.pid) == (first.endpoint, first.pid)
        client = make_client(first)
        assert list(client.list_pools()) == []
        assert running_emulator(state) is not None
    finally:
        assert stop_emulator(state) is True
    assert first.pid is not None and not _alive(first.pid)
    assert running_emulator(state) is None
    assert stop_emulator(state) is False


def test_idle_timeout_exits_and_removes_the_endpoint_file(tmp_path: Path) -> None:
    state = tmp_path / "idle"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "serve",
            "--state-dir",
            str(state),
            "--idle-timeout",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("BATCH_ENDPOINT=")
        assert (state / "endpoint.json").exists()
        assert proc.wait(15) == 0
        assert not (state / "endpoint.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_emulator_status_and_stop_commands(tmp_path: Path) -> None:
    state = tmp_path / "state"
    info = ensure_emulator(state)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), "emulator", *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    shown = cli("status")
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"# emulator running: pid={info.pid} state={state}")
    # the output is shell: sourcing it sets the Azure CLI names to the running emulator
    env = subprocess.run(
        ["bash", "-c", 'eval "$1"; echo "$AZURE_BATCH_ENDPOINT $AZURE_BATCH_ACCOUNT '
         '$AZURE_BATCH_ACCESS_KEY"', "-", shown.stdout],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert env.stdout.split() == [info.endpoint, DEFAULT_ACCOUNT, DEFAULT_KEY]
    stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert info.pid is not None and not _alive(info.pid)
    after = cli("status")
    assert after.returncode == 1 and "no emulator running" in after.stdout


def test_responses_on_a_kept_alive_connection_do_not_wait_for_delayed_acks(
    emulator: EmulatorInfo,
) -> None:
    """With Nagle on, a response written as headers then body stalls ~40 ms per request on a
    reused connection (the client's delayed ACK): every list, get and task collection."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", int(emulator.endpoint.rsplit(":", 1)[1]))
    timings = []
    try:
        for _ in range(12):
            started = time.perf_counter()
            connection.request("GET", "/pools?api-version=2025-06-01")  # 403 with a JSON body
            response = connection.getresponse()
            assert response.read()
            timings.append(time.perf_counter() - started)
    finally:
        connection.close()
    later = sorted(timings[1:])  # the first request rides the new connection's quick ACKs
    assert later[len(later) // 2] < 0.02, [f"{t * 1000:.1f} ms" for t in timings]
