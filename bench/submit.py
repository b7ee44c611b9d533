"""Benchmark: submitting 10,000 tasks, `batchlaunch run --detach` vs one create_task per task.

Both run side by side against the same emulator, on a pool with no nodes (so the tasks
queue and only submission is measured). The baseline is how the tools our users come from
submit: one REST call per task, sending the same task definitions as `batchlaunch run`, in
slices interleaved with the CLI runs. Targets: batchlaunch >= 20x faster, and a progress
poll of a 10,000-task job costs at most 2 requests.

On loopback a request costs ~1 ms, far less than from a laptop to an Azure region, which
flatters the one-call-per-task baseline. So the comparison is made twice: with no added
latency, and with the emulator's simulated round trip (`--latency-ms`, default 10 ms
here, an optimistic figure for a client in the same region).

    .venv/bin/python bench/submit.py [N_TASKS] [LATENCY_MS ...]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUNS = 5
sys.path.insert(0, str(REPO))

from emulator.server import start_emulator  # noqa: E402


def batch_client(info: Any, **kwargs: Any) -> Any:
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    return BatchClient(info.endpoint, AzureNamedKeyCredential(info.account, info.key), **kwargs)


def compile_bytecode() -> None:
    """Byte-compile the project and its dependencies first, as `pip install` leaves them.

    Under PYTHONDONTWRITEBYTECODE (set on some CI machines) nothing is ever cached, and each
    CLI start would compile ~400 modules from source (~0.4 s), which is no user's normal.
    """
    import compileall
    import sysconfig

    for folder in (REPO / "launcher", REPO / "bootstrap", REPO / "emulator"):
        compileall.compile_dir(folder, quiet=1, workers=2)
    compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=1, workers=2)


def main() -> None:
    compile_bytecode()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    latencies = [float(v) for v in sys.argv[2:]] or [0.0, 10.0]
    print(f"tasks: {n} (pool without nodes: submission only)")
    for latency in latencies:
        measure(n, latency)


def measure(n: int, latency_ms: float) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_emulator(Path(tmp) / "state", latency_ms=latency_ms) as info,
    ):
        folder = Path(tmp)
        params = folder / "params.toml"
        params.write_text(
            textwrap.dedent(
                f"""
                [batch]
                endpoint = "emulator"
                [pool]
                id = "bench"
                dedicated_nodes = 0
                [job]
                id = "bench"
                [[tasks]]
                id = "t"
                command = "echo {{i}}"
                sweep = {{ i = {{ from = 0, to = {n - 1} }} }}
                """
            )
        )
        env = {
            **os.environ,
            "BATCHLAUNCH_HOME": str(folder / "home"),
            "AZURE_BATCH_ENDPOINT": info.endpoint,
            "AZURE_BATCH_ACCOUNT": info.account,
            "AZURE_BATCH_ACCESS_KEY": info.key,
            "PYTHONPATH": str(REPO),
        }
        cli = [sys.executable, "-m", "launcher.cli", "run", str(params), "--detach", "-q"]

        def run_cli(k: int) -> float:
            started = time.perf_counter()
            proc = subprocess.run(
                [*cli, "--run-id", f"fast-{k}"], env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                sys.exit(f"batchlaunch run failed:\n{proc.stderr}")
            return time.perf_counter() - started

        # The first run also creates the pool, which the baseline's job needs.
        times = [run_cli(1)]

        from azure.batch import models

        from launcher.batch import BatchConnection
        from launcher.client import Client
        from launcher.params import load_params
        from launcher.run import TaskBuilder, sas_lifetime

        client = batch_client(info)
        client.create_job(
            models.BatchJobCreateOptions({"id": "slow", "poolInfo": {"poolId": "bench"}})
        )
        # The same task definitions `batchlaunch run` sent (command line, output files with
        # their SAS URL, environment, constraints), built before the clock starts: the
        # baseline pays only for sending them one call at a time.
        os.environ["BATCHLAUNCH_HOME"] = env["BATCHLAUNCH_HOME"]
        run_params = load_params(params)
        library = Client(
            run_params, batch=BatchConnection(client, info.endpoint, info.account, 0.05, True)
        )
        builder = TaskBuilder(library, "slow", sas_lifetime(run_params))
        bodies = [library.task_body("slow", builder.spec(t)) for t in run_params.task_instances()]

        # Interleaved: a slice of the baseline, then a CLI run, and so on. This VM's speed
        # drifts by a third over a minute; measured in two blocks, that drift lands in the
        # ratio. Each CLI run is a new job of n tasks; their median is counted.
        slow = 0.0
        for k in range(RUNS):
            started = time.perf_counter()
            for body in bodies[k * n // RUNS : (k + 1) * n // RUNS]:
                client.create_task("slow", models.BatchTaskCreateOptions(body))
            slow += time.perf_counter() - started
            if k + 1 < RUNS:
                times.append(run_cli(k + 2))
        fast = statistics.median(times)

        counted = {"requests": 0}

        def count(_request: Any) -> None:
            counted["requests"] += 1

        counting = batch_client(info, raw_request_hook=count)
        monitor = Client(
            None, batch=BatchConnection(counting, info.endpoint, info.account, 0.05, True)
        )
        summary = monitor.monitor_job("fast-1", timeout=1.0, progress=False, poll_interval=0.1)
        per_poll = counted["requests"] / summary.polls

        fast_tasks = len(list(client.list_tasks("fast-1", select=["id"])))
        slow_tasks = len(list(client.list_tasks("slow", select=["id"])))
        print(f"-- simulated round trip: {latency_ms:g} ms per request")
        print(
            f"batchlaunch run --detach (whole CLI): {fast:7.2f} s  ({fast_tasks} tasks; median of"
            f" {RUNS} runs: {', '.join(f'{t:.2f}' for t in times)}; the first creates the pool)"
        )
        print(f"one create_task call per task:       {slow:7.2f} s  ({slow_tasks} tasks)")
        print(f"ratio: {slow / fast:.1f}x faster (target >= 20x)")
        print(
            f"requests per progress poll of a {n}-task job: {per_poll:.2f} "
            f"({counted['requests']} requests / {summary.polls} polls; target <= 2)"
        )


if __name__ == "__main__":
    main()
