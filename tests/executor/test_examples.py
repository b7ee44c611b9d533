"""The function examples (examples/python-map, r-function, julia-function) on the emulator.

Each example's own parameter file is loaded with the test's emulator as endpoint, nothing
else changed (the Python example's nodes use this machine's python3 with whatever
cloudpickle it has, or none: the executor ships the client's). The Julia example runs as far
as this machine allows: no Julia binary here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from azure.core.exceptions import ResourceNotFoundError

from launcher import envelope, runners
from launcher.executor import BatchExecutor
from launcher.params import PythonRuntime, load_params
from launcher.remote_errors import RemoteError

pytestmark = pytest.mark.emulator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(path: Path) -> ModuleType:
    """Import an example script the way `python path` would find its functions."""
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_map_example(emulator: Any) -> None:
    params = load_params(
        EXAMPLES / "python-map" / "params.toml", overrides={"batch.endpoint": emulator.endpoint}
    )
    runtime = params.runtime
    assert isinstance(runtime, PythonRuntime) and not runtime.packages and not runtime.environment
    pi = load_example(EXAMPLES / "python-map" / "pi.py")
    value = pi.estimate_pi(params)
    # 2,000,000 draws: the standard error of the estimate is ~0.0012
    assert abs(value - math.pi) < 0.01
    # the same sampler, run here, gives the same count for a seed (the tasks really ran it)
    assert pi.sample(3, 1000) == pi.sample(3, 1000)


def test_r_function_example(emulator: Any) -> None:
    folder = EXAMPLES / "r-function"
    params = load_params(folder / "params.toml", overrides={"batch.endpoint": emulator.endpoint})
    run = load_example(folder / "run.py")
    rows = run.run(params, seeds=range(1, 5))
    assert [row["seed"] for row in rows] == [1, 2, 3, 4]
    assert all(abs(row["mean"] - 0.5) < 0.1 and row["p95"] > row["mean"] for row in rows)
    # exactly what Rscript computes here for seed 1 (the values crossed JSON unchanged)
    local = subprocess.run(
        [
            "Rscript",
            "-e",
            f'source("{folder / "model.R"}"); '
            "cat(jsonlite::toJSON(simulate(1000, rate = 2, seed = 1), digits = NA, "
            "auto_unbox = TRUE))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(local.stdout)["mean"] == pytest.approx(rows[0]["mean"], rel=1e-12)


def _wait_task(ex: BatchExecutor, task_id: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return ex.client.batch.get_task(ex.job_id, task_id)
        except ResourceNotFoundError:
            time.sleep(0.05)
    raise AssertionError(f"task {task_id} was never added")


def _local(url: str) -> Path:
    assert url.startswith("file://")
    return Path(unquote(urlparse(url).path))


def test_julia_function_example(emulator: Any) -> None:
    folder = EXAMPLES / "julia-function"
    params = load_params(
        folder / "params.toml",
        # no nodes: the calls stay queued (the start task could not download Julia here)
        overrides={"batch.endpoint": emulator.endpoint, "pool.dedicated_nodes": 0},
    )
    script = params.start_task_script()
    assert "JSON3" in script and "1.10.4" in script and "julialang" in script

    run = load_example(folder / "run.py")
    ex = BatchExecutor(params, keep_pool=False)
    futures = run.submit_all(ex, seeds=range(1, 3))
    task = _wait_task(ex, futures[0].task_id)
    assert (
        "julia --startup-file=no run.jl --file model.jl --function simulate "
        "--args args.json --out result.json" in task.command_line
    )
    files = {rf.file_path: _local(rf.http_url) for rf in task.resource_files}
    assert set(files) == {"run.jl", "model.jl", "args.json"}
    assert files["run.jl"].read_bytes() == runners.runner_bytes("julia")
    assert files["model.jl"].read_bytes() == (folder / "model.jl").read_bytes()
    assert json.loads(files["args.json"].read_text()) == {
        "args": [10000],
        "kwargs": {"drift": 0.01, "seed": 1},
    }
    uploads = {o.file_pattern: o.upload_options.upload_condition for o in task.output_files}
    assert getattr(uploads["result.json"], "value", None) == "taskcompletion"

    # run.jl's envelope (keys as run.jl writes them) through the executor's reader
    source = runners.runner_bytes("julia").decode()
    ok = {
        "status": "ok",
        "value": {"n": 10000, "final": 1.25, "max": 3.5, "seed": 1},
        "runner": "run.jl",
        "language": "julia",
        "version": "1.10.4",
        "host": "node-1",
        "started": "2026-01-01T00:00:00.000Z",
        "finished": "2026-01-01T00:00:01.000Z",
        "elapsed_seconds": 1.0,
    }
    failed = {
        "status": "error",
        "type": "DomainError",
        "message": "DomainError with -1.0: sqrt was called with a negative real argument",
        "traceback": "Stacktrace:\n [1] simulate(n::Int64) @ Main.model model.jl:7",
        "runner": "run.jl",
        "language": "julia",
    }
    for key in {*ok, *failed} - {"value"}:
        assert f'"{key}" =>' in source, key
    completed = SimpleNamespace(
        execution_info=SimpleNamespace(exit_code=0, failure_info=None, requeue_count=0),
        node_info=None,
    )
    records = [ex._outstanding[f.task_id] for f in futures]
    for record, doc in zip(records, (ok, failed), strict=True):
        blob = f"functions/{ex.job_id}/{record.task_id}/{envelope.RESULT_JSON}"
        ex.store.upload_bytes(json.dumps(doc).encode(), blob)
    assert ex._outcomes(records[0], completed)[0].result() == ok["value"]
    with pytest.raises(RemoteError) as info:
        ex._outcomes(records[1], completed)[0].result()
    assert info.value.language == "julia" and "sqrt was called" in str(info.value)
    assert "model.jl:7" in str(info.value) and records[1].task_id in str(info.value)

    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
