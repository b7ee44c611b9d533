"""Benchmark: shipping a function that closes over 20 MB to 2,000 map items, side by side.

Ours: `BatchExecutor.map(fn, items, chunksize=C)`: the function is pickled once and uploaded
once (content-addressed); each task gets only its own arguments. Target: bytes uploaded by
the client within 1.1x of (the pickled function once + all argument payloads).

Baseline (the tools we replace: AzureClusterlessHPC/doAzureParallel-style shipping): the same
map with the function pickled into every task (each task's payload = function + its items).

Both run in one process against one local emulator (nodes are processes on this machine)
and a local store; the ratios of bytes uploaded and of wall time are printed.

    .venv/bin/python bench/functions.py [--items 2000] [--mb 20] [--chunksize 20] [--nodes 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.server import start_emulator
from launcher.executor import BatchExecutor
from launcher.pickling import chunks, dumps_chunk, dumps_function
from launcher.runners import cloudpickle_zip, runner_bytes


def make_function(megabytes: int) -> Any:
    """A function closing over `megabytes` MB of data (what a model or a table would be)."""
    data = os.urandom(megabytes * 1024 * 1024)

    def score(i: int) -> int:
        return data[(i * 7919) % len(data)] + i

    return score


def apply_chunk(fn: Any, items: list[int]) -> list[int]:
    """Baseline task body: the function travels inside every task's payload."""
    return [fn(i) for i in items]


def write_params(root: Path, endpoint: str, nodes: int, slots: int) -> Path:
    """Emulator pool whose nodes run this machine's python3 as it is (with whatever
    cloudpickle it has, or none: the executor ships the client's beside the runner)."""
    path = root / "params.toml"
    path.write_text(
        f"""
[batch]
endpoint = "{endpoint}"
[storage]
url = "local"
container = "bench"
[pool]
id = "bench-functions"
dedicated_nodes = {nodes}
task_slots_per_node = {slots}
[runtime]
language = "python"
"""
    )
    return path


def store_bytes(ex: BatchExecutor, job_id: str) -> int:
    """Bytes the client put in storage, counted from the store itself: content-addressed
    blobs (runner, functions) plus the job's argument blobs (not results or logs)."""
    blobs = ex.store.list_blobs("cas/") + ex.store.list_blobs(f"functions/{job_id}/")
    return sum(b.size for b in blobs if b.name.startswith("cas/") or b.name.endswith("args.pkl"))


def run(params: Path, items: list[int], fn: Any, chunksize: int, baseline: bool) -> dict[str, Any]:
    started = time.monotonic()
    with BatchExecutor(params, keep_pool=True, function_limit=1 << 30) as ex:
        before = store_bytes(ex, "-")
        if baseline:
            futures = [
                ex.submit(functools.partial(apply_chunk, fn, [items[i] for i in span]))
                for span in chunks(len(items), chunksize)
            ]
            results = [x for f in futures for x in f.result()]
        else:
            results = list(ex.map(fn, items, chunksize=chunksize))
        elapsed = time.monotonic() - started
        stats = ex.stats
        in_store = store_bytes(ex, ex.job_id) - before
    assert results == [fn(i) for i in items], "wrong results"
    return {"seconds": elapsed, "stats": stats, "in_store": in_store}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--chunksize", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    options = parser.parse_args()

    fn = make_function(options.mb)
    items = list(range(options.items))
    spans = chunks(len(items), options.chunksize)
    fn_once = len(dumps_function(fn, limit=1 << 30))
    args_all = sum(len(dumps_chunk([((items[i],), {}) for i in span])) for span in spans)
    reference = fn_once + args_all
    print(
        f"map of {options.items} items, function closing over {options.mb} MB, chunksize "
        f"{options.chunksize} -> {len(spans)} tasks; emulator pool {options.nodes} nodes x "
        f"{options.slots} slots"
    )
    print(f"pickled function once {fn_once:,} B + all arguments {args_all:,} B = {reference:,} B")

    with tempfile.TemporaryDirectory(prefix="bench-functions-") as tmp:
        root = Path(tmp)
        os.environ["BATCHLAUNCH_HOME"] = str(root / "home")
        with start_emulator(root / "emulator") as info:
            params = write_params(root, info.endpoint, options.nodes, options.slots)
            # Warm-up: pool creation and node start, so neither side pays for them.
            with BatchExecutor(params, keep_pool=True) as ex:
                assert ex.submit(abs, -1).result(timeout=120) == 1
            ours = run(params, items, fn, options.chunksize, baseline=False)
            base = run(params, items, fn, options.chunksize, baseline=True)

    o, b = ours["stats"], base["stats"]
    print()
    print(f"{'':28}{'ours (function once)':>24}{'baseline (per task)':>24}")
    print(f"{'bytes uploaded (counted)':28}{o.bytes_uploaded:>24,}{b.bytes_uploaded:>24,}")
    print(f"{'bytes in store (listed)':28}{ours['in_store']:>24,}{base['in_store']:>24,}")
    print(f"{'blobs uploaded':28}{o.blobs_uploaded:>24,}{b.blobs_uploaded:>24,}")
    print(f"{'tasks':28}{o.tasks:>24,}{b.tasks:>24,}")
    print(f"{'add_tasks requests':28}{o.add_tasks_calls:>24,}{b.add_tasks_calls:>24,}")
    print(f"{'task-count polls':28}{o.count_polls:>24,}{b.count_polls:>24,}")
    print(f"{'completed-task queries':28}{o.list_queries:>24,}{b.list_queries:>24,}")
    print(f"{'wall time (s)':28}{ours['seconds']:>24.2f}{base['seconds']:>24.2f}")
    print()
    ratio = o.bytes_uploaded / reference
    print(f"ours / (function once + arguments): {ratio:.3f}x (target <= 1.1x)")
    print(
        f"(the node-side runner, {len(runner_bytes('python')):,} B, and the client's "
        f"cloudpickle zip, {len(cloudpickle_zip()):,} B, are content-addressed too: "
        "uploaded once by the warm-up, by neither side)"
    )
    print(f"bytes: baseline / ours = {b.bytes_uploaded / o.bytes_uploaded:.1f}x")
    print(f"time:  baseline / ours = {base['seconds'] / ours['seconds']:.2f}x")


if __name__ == "__main__":
    main()
