"""Benchmark: the local Batch emulator, each figure measured side by side in one run.

(a) 1,000 tasks running `true` on 2 nodes x 4 slots, from submission (`create_tasks`) to all
    completed (task counts polled), against `xargs -P 8` running the same 1,000 commands.
    Target: within 1.5x.
(b) 10,000 tasks added with `create_tasks(max_concurrency=8)` against the same 10,000 added
    one `create_task` call at a time (how the tools our users come from submit): the ratio.
(c) Peak RSS of the emulator process holding 100,000 tasks in one job. Target: < 1 GiB.

    .venv/bin/python bench/emulator.py [--rounds N] [--per-call N] [--big N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from emulator.server import EmulatorInfo, start_emulator

IMAGE = m.VirtualMachineConfiguration(
    image_reference=m.BatchVmImageReference(
        publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
    ),
    node_agent_sku_id="batch.node.ubuntu 22.04",
)


def client_for(info: EmulatorInfo) -> Any:
    return BatchClient(info.endpoint, AzureNamedKeyCredential(info.account, info.key))


def pool(client: Any, pool_id: str, nodes: int, slots: int) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=IMAGE,
            target_dedicated_nodes=nodes,
            task_slots_per_node=slots,
        )
    )
    while sum(n.state == "idle" for n in client.list_nodes(pool_id)) < nodes:
        time.sleep(0.02)


def job(client: Any, job_id: str, pool_id: str) -> None:
    client.create_job(
        m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id))
    )


def tasks(count: int, command: str = "true") -> list[Any]:
    return [m.BatchTaskCreateOptions(id=f"t{i}", command_line=command) for i in range(count)]


def run_emulator(client: Any, job_id: str, count: int) -> float:
    start = time.perf_counter()
    client.create_tasks(job_id, tasks(count), max_concurrency=8)
    while client.get_job_task_counts(job_id).task_counts.completed < count:
        time.sleep(0.01)
    return time.perf_counter() - start


def run_xargs(count: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", "8", "-n", "1", "true"],
        input="\n".join(map(str, range(count))),
        text=True,
        check=True,
    )
    return time.perf_counter() - start


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a), medians reported")
    parser.add_argument("--per-call", type=int, default=10_000, help="tasks in (b)")
    parser.add_argument("--big", type=int, default=100_000, help="tasks in (c)")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="emulator state dir (default: a temp dir)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        state = args.state_dir or Path(tmp) / "state"
        with start_emulator(state) as info:
            client = client_for(info)
            pool(client, "run", nodes=2, slots=4)
            emu, base = [], []
            for round_no in range(args.rounds):
                job(client, f"a{round_no}", "run")
                emu.append(run_emulator(client, f"a{round_no}", 1000))
                base.append(run_xargs(1000))
            e, b = statistics.median(emu), statistics.median(base)
            print(
                f"(a) 1,000 x `true`, 2 nodes x 4 slots: emulator {e:.2f} s, xargs -P 8 {b:.2f} s, "
                f"ratio {e / b:.2f}x (target <= 1.5x); rounds: "
                + ", ".join(f"{x:.2f}/{y:.2f}" for x, y in zip(emu, base, strict=True))
            )

            pool(client, "idle", nodes=0, slots=1)
            n = args.per_call
            job(client, "bulk", "idle")
            start = time.perf_counter()
            client.create_tasks("bulk", tasks(n), max_concurrency=8)
            bulk = time.perf_counter() - start
            job(client, "single", "idle")
            start = time.perf_counter()
            for item in tasks(n):
                client.create_task("single", item)
            single = time.perf_counter() - start
            print(
                f"(b) {n:,} tasks: create_tasks(max_concurrency=8) {bulk:.2f} s, "
                f"one create_task per "
                f"task {single:.2f} s, ratio {single / bulk:.1f}x faster"
            )
            client.close()

        with start_emulator(Path(tmp) / "big") as info:
            client = client_for(info)
            pool(client, "idle", nodes=0, slots=1)
            job(client, "big", "idle")
            start = time.perf_counter()
            client.create_tasks(
                "big", tasks(args.big, "/bin/sh -c 'echo hello from a task'"), max_concurrency=8
            )
            added = time.perf_counter() - start
            counts = client.get_job_task_counts("big").task_counts
            assert counts.active == args.big, counts
            time.sleep(1.0)  # let the state flush settle
            rss = peak_rss_mib(info.pid or 0)
            print(
                f"(c) {args.big:,} tasks in one job (added in {added:.1f} s): emulator peak RSS "
                f"{rss:.0f} MiB (target < 1024 MiB)"
            )
            client.close()


if __name__ == "__main__":
    main()
