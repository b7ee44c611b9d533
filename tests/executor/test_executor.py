"""`BatchExecutor` against the emulator: real tasks on the emulator's nodes (processes on this
machine), real uploads to the local store, results through OutputFiles.

The shared pool's python3 sees only the standard library (conftest.bare_node_python: no
cloudpickle, not batchlaunch, not the tests, not the user's modules); the executor ships the
client's cloudpickle beside the runner.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, as_completed, wait
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest

import launcher.pickling
from launcher import runners
from launcher.client import Client
from launcher.executor import BatchExecutor, BatchFuture, PoolUnusable, r
from launcher.fetch import gather, reduce_as_completed
from launcher.remote_errors import (
    PayloadLoadError,
    PayloadTooLarge,
    PythonVersionMismatch,
    RemoteError,
    RemoteTraceback,
    TaskCrashed,
    TaskTimedOut,
)
from tests.executor.conftest import ParamsFactory
from tests.functions.node import STALE_MISSING, STALE_VERSION, stale_cloudpickle_site

pytestmark = pytest.mark.emulator


def square(x: int) -> int:
    return x * x


def store_blobs(ex: BatchExecutor, prefix: str) -> list[str]:
    return ex.store.list(prefix)


def wait_task_state(ex: BatchExecutor, task_id: str, state: str, timeout: float = 30) -> None:
    """Poll the Batch task until it reaches `state` (it may not exist for a moment)."""
    from azure.core.exceptions import ResourceNotFoundError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if state in str(ex.client.batch.get_task(ex.job_id, task_id).state).lower():
                return
        except ResourceNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {state}")


# ---- map, chunks, uploads --------------------------------------------------------------


def test_map_500_items_chunksize_10_uploads_the_function_once(py_params: Path) -> None:
    offset = 1000

    def shifted(x: int) -> int:  # a closure: pickled by value
        return x * x + offset

    with BatchExecutor(py_params, keep_pool=True) as ex:
        results = list(ex.map(shifted, range(500), chunksize=10))
        assert results == [x * x + 1000 for x in range(500)]
        assert ex.stats.tasks == 50
        assert ex.stats.add_tasks_calls <= 2  # one bulk submission, not one request per task
        fn_blobs = [b for b in store_blobs(ex, "cas/") if "/function-" in b]
        uploaded, args, fn_bytes = (
            ex.stats.bytes_uploaded,
            ex.stats.args_bytes,
            ex.stats.function_bytes,
        )
        # The same function mapped again: no new function blob, only the argument blobs.
        assert list(ex.map(shifted, range(20), chunksize=10)) == [x * x + 1000 for x in range(20)]
        assert [b for b in store_blobs(ex, "cas/") if "/function-" in b] == fn_blobs
        assert ex.stats.function_bytes == fn_bytes
        assert ex.stats.bytes_uploaded - uploaded == ex.stats.args_bytes - args > 0
        # every task carried one args blob and got one result envelope back
        task_dirs = {b.split("/")[2] for b in store_blobs(ex, f"functions/{ex.job_id}/")}
        assert len(task_dirs) == 52
        assert ex.stats.results_downloaded == 52
        # polling costs: a few count polls and list queries, not one request per task
        assert ex.stats.list_queries < 52


def test_closure_state_kwargs_and_none(py_params: Path) -> None:
    table = {"a": 1, "b": 2}
    weights = [0.5, 2.0]

    def lookup(key: str, *, scale: float = 1.0, extra: int = 0) -> float:
        return table[key] * weights[1] * scale + extra

    def returns_none() -> None:
        return None

    with BatchExecutor(py_params, keep_pool=True) as ex:
        fut = ex.submit(lookup, "b", scale=10.0, extra=3)
        none = ex.submit(returns_none)
        assert isinstance(fut, BatchFuture) and fut.job_id == ex.job_id
        assert fut.result(timeout=60) == 43.0
        assert none.result(timeout=60) is None and none.exception() is None
        assert fut.task_id in fut.log_location and ex.job_id in fut.log_location
        # the log copies are where the future says
        logs = store_blobs(ex, f"functions/{ex.job_id}/{fut.task_id}/")
        assert {Path(b).name for b in logs} >= {"stdout.txt", "stderr.txt", "result.pkl"}


@pytest.fixture
def local_module(tmp_path: Path) -> Iterator[ModuleType]:
    """A user's module in a temp dir, imported here, absent from the nodes' path."""
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import threading

            class ModelError(Exception):
                pass

            class Locked(Exception):
                def __init__(self, message):
                    super().__init__(message)
                    self.lock = threading.Lock()

            FACTOR = 7

            def helper(x):
                return x + 1

            def model(x, bias=0):
                return helper(x) * FACTOR + bias

            def failing(x):
                raise ModelError(f"cannot model {x}")

            def failing_unpicklable(x):
                raise Locked(f"locked {x}")
            """
        )
    )
    sys.path.insert(0, str(src))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(src))
    yield module
    sys.modules.pop(name, None)


def test_function_from_a_local_module_not_on_the_node(
    py_params: Path, local_module: ModuleType
) -> None:
    with BatchExecutor(py_params, keep_pool=True) as ex:
        assert ex.submit(local_module.model, 2, bias=1).result(timeout=60) == 22
        assert list(ex.map(local_module.model, [0, 1], [10, 20])) == [17, 34]


def test_exceptions_come_back_with_type_and_remote_traceback(
    py_params: Path, local_module: ModuleType
) -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    def missing_key() -> Any:
        empty: dict[str, int] = {}
        return empty["nope"]

    def crash() -> None:
        sys.stderr.write("about to die\n")
        sys.stderr.flush()
        os._exit(3)

    with BatchExecutor(py_params, keep_pool=True) as ex:
        zero = ex.submit(divide, 1, 0)
        key = ex.submit(missing_key)
        custom = ex.submit(local_module.failing, 5)
        locked = ex.submit(local_module.failing_unpicklable, 6)
        died = ex.submit(crash)

        with pytest.raises(ZeroDivisionError) as info:
            zero.result(timeout=60)
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in divide" in cause.traceback_text and "return a / b" in cause.traceback_text
        assert zero.task_id in "".join(info.value.__notes__)

        with pytest.raises(KeyError, match="nope"):
            key.result(timeout=60)

        with pytest.raises(local_module.ModelError, match="cannot model 5") as info2:
            custom.result(timeout=60)
        assert "in failing" in str(info2.value.__cause__)

        with pytest.raises(RemoteError) as info3:  # the exception does not pickle
            locked.result(timeout=60)
        assert info3.value.type_name.endswith("Locked") and "locked 6" in str(info3.value)
        assert "failing_unpicklable" in info3.value.traceback

        with pytest.raises(TaskCrashed) as info4:
            died.result(timeout=60)
        assert info4.value.exit_code == 3 and "about to die" in info4.value.stderr_tail


def test_map_raises_the_first_error_at_its_position(py_params: Path) -> None:
    def check(x: int) -> int:
        if x == 7:
            raise ValueError("seven")
        return x

    with BatchExecutor(py_params, keep_pool=True) as ex:
        it = ex.map(check, range(12), chunksize=4)
        assert [next(it) for _ in range(7)] == list(range(7))
        with pytest.raises(ValueError, match="seven"):
            next(it)


def test_time_limit_gives_task_timed_out(py_params: Path) -> None:
    def slow() -> str:
        time.sleep(60)
        return "too late"

    with BatchExecutor(py_params, keep_pool=True) as ex:
        started = time.monotonic()
        fut = ex.options(timeout_minutes=0.05).submit(slow)  # 3 s
        with pytest.raises(TaskTimedOut) as info:
            fut.result(timeout=60)
        assert time.monotonic() - started < 30
        assert "wall-clock" in str(info.value) and fut.task_id in str(info.value)
        task = ex.client.batch.get_task(ex.job_id, fut.task_id)
        assert task.constraints.max_wall_clock_time.total_seconds() == 3


def test_payload_over_the_limit_is_refused_at_submit(py_params: Path) -> None:
    big = os.urandom(300_000)

    def uses_big(i: int) -> int:
        return big[i]

    with BatchExecutor(py_params, keep_pool=True, function_limit=100_000) as ex:
        with pytest.raises(PayloadTooLarge, match=r"`big`.*resource file") as info:
            ex.submit(uses_big, 1)
        assert "\n" not in str(info.value)
        with pytest.raises(PayloadTooLarge, match="arguments"):
            ex.submit(len, os.urandom(11 * 1024 * 1024))
        assert ex.stats.tasks == 0 and ex.stats.function_bytes == 0


def test_python_version_mismatch_is_reported_by_the_runner(
    py_params: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = launcher.pickling.base_header

    def older(kind: str) -> dict[str, Any]:
        header = real(kind)
        header["python"] = "3.9.18"
        return header

    monkeypatch.setattr(launcher.pickling, "base_header", older)
    with BatchExecutor(py_params, keep_pool=True) as ex:
        fut = ex.submit(square, 3)
        with pytest.raises(PythonVersionMismatch, match=r"3\.9\.18.*3\.11"):
            fut.result(timeout=60)


def test_as_completed_wait_gather_and_reduce(py_params: Path) -> None:
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    with BatchExecutor(py_params, keep_pool=True) as ex:
        futures = [ex.submit(nap, s) for s in (1.5, 0.0, 0.2)]
        done, not_done = wait(futures, timeout=60, return_when=FIRST_COMPLETED)
        assert done and futures[0] in not_done  # the 1.5 s nap is not first
        assert sorted(f.result() for f in as_completed(futures, timeout=60)) == [0.0, 0.2, 1.5]
        assert gather(futures) == [1.5, 0.0, 0.2]
        squares = [ex.submit(square, i) for i in range(6)]
        total = reduce_as_completed(lambda acc, x: acc + x, squares, 0)
        assert total == sum(i * i for i in range(6))

        def maybe(x: int) -> int:
            if x % 2:
                raise ArithmeticError(f"odd {x}")
            return x

        mixed = gather([ex.submit(maybe, i) for i in range(4)], return_exceptions=True)
        assert mixed[0] == 0 and mixed[2] == 2
        assert isinstance(mixed[1], ArithmeticError) and "odd 1" in str(mixed[1])
        with pytest.raises(ArithmeticError):
            gather([ex.submit(maybe, i) for i in range(3)])


# ---- cloudpickle on the nodes ----------------------------------------------------------


def where_is_cloudpickle() -> tuple[str, str, int]:
    """Run on a node: which cloudpickle the runner loaded, and whether site was off."""
    module = sys.modules["cloudpickle"]
    return module.__version__, str(module.__file__), sys.flags.no_site


def test_node_python_without_cloudpickle_runs_functions(py_params: Path) -> None:
    with BatchExecutor(py_params, keep_pool=True) as ex:
        fut = ex.submit(where_is_cloudpickle)
        version, file, no_site = fut.result(timeout=60)
        assert no_site == 1  # the node's python3 is `python -S`: no cloudpickle of its own
        assert version == cloudpickle.__version__
        assert f"{os.sep}{runners.CLOUDPICKLE_ZIP}{os.sep}cloudpickle" in file
        task = ex.client.batch.get_task(ex.job_id, fut.task_id)
        shipped = {rf.file_path: rf.http_url for rf in task.resource_files}
        assert runners.CLOUDPICKLE_ZIP in shipped and runners.runner_file("python") in shipped
        # content-addressed: one blob whatever the number of tasks and executors
        zips = [b for b in store_blobs(ex, "cas/") if b.endswith("/" + runners.CLOUDPICKLE_ZIP)]
        assert len(zips) == 1 and shipped[runners.CLOUDPICKLE_ZIP].endswith(zips[0])


def test_node_with_another_cloudpickle_version_runs_functions(
    params_factory: ParamsFactory, tmp_path: Path
) -> None:
    """The nodes' python3 imports a stale cloudpickle (2.1.0, which cannot load a 3.x
    function pickle) unless the runner puts the shipped one first."""
    site = stale_cloudpickle_site(tmp_path)
    params = params_factory(
        pool_id=f"fx-stale-{uuid.uuid4().hex[:6]}",
        nodes=1,
        slots=2,
        extra=f'[runtime.environment]\nPYTHONPATH = "{site}"',
    )

    def node_sees() -> tuple[tuple[str, str, int], bool]:
        return where_is_cloudpickle(), str(site) in sys.path

    with BatchExecutor(params, keep_pool=False) as ex:
        (version, file, _), stale_on_path = ex.submit(node_sees).result(timeout=60)
    assert stale_on_path  # the node's python3 would import the stale copy by itself
    assert version == cloudpickle.__version__ != STALE_VERSION
    assert runners.CLOUDPICKLE_ZIP in file and str(site) not in file


def test_function_that_fails_to_load_on_the_node_keeps_the_hint(
    py_params: Path, local_module: ModuleType
) -> None:
    name = local_module.__name__
    with BatchExecutor(py_params, keep_pool=True, by_reference=[name]) as ex:
        single = ex.submit(local_module.model, 1)
        mapped = ex.map(local_module.model, [1, 2, 3], chunksize=3)
        with pytest.raises(PayloadLoadError) as info:
            single.result(timeout=60)
        with pytest.raises(PayloadLoadError):
            next(mapped)
    err = info.value
    assert isinstance(err, RemoteError) and err.type_name == "ModuleNotFoundError"
    text = str(err)
    assert f"module {name!r} is not importable on the node" in text
    assert "while loading the function" in text and "[runtime] packages" in text
    assert f"cloudpickle {cloudpickle.__version__}" in text and single.task_id in text
    assert STALE_MISSING not in text


# ---- cancel -------------------------------------------------------------------------


def test_shutdown_cancel_futures_terminates_queued_tasks(params_factory: ParamsFactory) -> None:
    params = params_factory(pool_id=f"fx-one-{uuid.uuid4().hex[:6]}", nodes=1, slots=1)

    def nap(i: int) -> int:
        time.sleep(1.5)
        return i

    ex = BatchExecutor(params, keep_pool=False)
    futures = [ex.submit(nap, i) for i in range(6)]
    wait_task_state(ex, futures[0].task_id, "running")  # the only slot is busy
    ex.shutdown(wait=True, cancel_futures=True)
    assert futures[0].result() == 0
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= 4
    assert not wait(futures, timeout=5).not_done  # cancelled futures count as done
    for fut in cancelled:
        with pytest.raises(CancelledError):
            fut.result()
        task = ex.client.batch.get_task(ex.job_id, fut.task_id)
        assert "completed" in str(task.state).lower()
        assert task.execution_info.failure_info.code == "TaskEnded"
        assert task.execution_info.start_time is None  # it never ran
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    pool = ex.client.get_pool(ex.pool_id)  # keep_pool=False: deleted at shutdown
    assert pool is None or pool["state"] == "deleting"


def test_future_cancel_terminates_its_task(py_params: Path) -> None:
    def nap() -> str:
        time.sleep(30)
        return "finished"

    with BatchExecutor(py_params, keep_pool=True) as ex:
        fut = ex.submit(nap)
        wait_task_state(ex, fut.task_id, "running")
        assert fut.cancel()
        assert fut in as_completed([fut], timeout=1)
        wait_task_state(ex, fut.task_id, "completed", timeout=10)
        info = ex.client.batch.get_task(ex.job_id, fut.task_id).execution_info
        assert info.failure_info.code == "TaskEnded"
        started = time.monotonic()
    assert time.monotonic() - started < 10  # shutdown did not wait for the 30 s nap


# ---- pools that cannot run anything ---------------------------------------------------


def test_pool_whose_start_task_fails_resolves_futures(params_factory: ParamsFactory) -> None:
    params = params_factory(
        pool_id=f"fx-broken-{uuid.uuid4().hex[:6]}",
        nodes=1,
        slots=1,
        extra="pre_install = [\"sh -c 'echo no-such-runtime >&2; exit 9'\"]",
    )
    with BatchExecutor(params, keep_pool=False, poll_interval=0.1) as ex:
        fut = ex.submit(square, 2)
        with pytest.raises(PoolUnusable) as info:
            fut.result(timeout=60)
    assert "no-such-runtime" in str(info.value)
    assert "start task" in str(info.value)


# ---- R --------------------------------------------------------------------------------


R_MODEL = """
simulate <- function(n, rate = 1) {
  set.seed(n)
  list(n = n, mean = mean(rexp(1000, rate)), label = paste0("run-", n))
}
add <- function(a, b) a + b
fails <- function(x) {
  if (x > 1) stop("x too large: ", x)
  x
}
"""


def test_r_function_runs_for_real(r_params: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.R"
    model.write_text(R_MODEL)
    with BatchExecutor(r_params, keep_pool=True) as ex:
        out = ex.submit(r(model, "simulate"), 3, rate=2).result(timeout=90)
        assert out["n"] == 3 and out["label"] == "run-3"
        assert 0.3 < out["mean"] < 0.7  # mean of Exp(rate=2) is 0.5
        assert list(ex.map(r(model, "add"), [1, 2, 3], [10, 20, 30], chunksize=2)) == [11, 22, 33]
        with pytest.raises(RemoteError) as info:
            ex.submit(r(model, "fails"), 5).result(timeout=90)
        assert "x too large: 5" in str(info.value) and info.value.language == "r"
        # a Python function on an R pool is refused before anything is sent
        with pytest.raises(Exception, match=r"\[runtime\] language"):
            ex.submit(square, 1)


# ---- preemption -----------------------------------------------------------------------


def test_preempted_node_requeues_and_the_rerun_resolves_the_future(
    emulator_factory: Any, tmp_path: Path
) -> None:
    from tests.executor.conftest import write_params

    info = emulator_factory(preempt_rate=1.0, seed=7)  # every low-priority node, once
    params = write_params(
        tmp_path / "spot.toml",
        info.endpoint,
        pool_id="fx-spot",
        nodes=0,
        low_priority=1,
        slots=1,
    )

    def nap(x: int) -> int:
        time.sleep(1.5)
        return x + 1

    with BatchExecutor(params, keep_pool=False) as ex:
        fut = ex.submit(nap, 41)
        assert fut.result(timeout=60) == 42
        task = ex.client.batch.get_task(ex.job_id, fut.task_id)
        assert task.execution_info.requeue_count == 1  # preempted once, then rerun


def test_logs_of_a_task_after_shutdown_deleted_the_pool(
    params_factory: ParamsFactory, fx_home: Path
) -> None:
    """The error note names `batchlaunch logs JOB TASK` and the stored copies: both work
    after shutdown deleted the pool (a run record points `logs` at the uploaded copies)."""
    import subprocess

    from tests.conftest import REPO
    from tests.executor.conftest import bare_node_python

    def noisy(x: int) -> int:
        print(f"out-{x}", flush=True)
        raise ValueError(f"bad {x}")

    params = params_factory(
        pool_id=f"fx-logs-{uuid.uuid4().hex[:6]}",
        nodes=1,
        slots=1,
        extra=bare_node_python(fx_home),
    )
    with BatchExecutor(params, keep_pool=False, poll_interval=0.1) as ex:
        fut = ex.submit(noisy, 5)
        with pytest.raises(ValueError, match="bad 5") as info:
            fut.result(timeout=60)
    note = "".join(info.value.__notes__)
    assert f"`batchlaunch logs {ex.job_id} {fut.task_id}`" in note
    where = Path(fut.log_location.rsplit(" in ", 1)[1].rstrip("/"))
    stored = (where / "stdout.txt").read_text()
    assert stored.startswith("out-5\n")
    client = Client(params)
    deadline = time.monotonic() + 30
    while client.get_pool() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get_pool() is None, "shutdown should have deleted the pool"

    shown = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "logs", ex.job_id, fut.task_id],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == stored
