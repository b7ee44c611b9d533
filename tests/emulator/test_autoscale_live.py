"""Live autoscale in the emulator under accelerated time (`time_scale=0.002`: 30 s of
simulated time is 60 ms, a 5-minute evaluation interval 0.6 s), and the node deallocation
options honoured for running tasks when a pool shrinks (formula, resize, remove nodes)."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.batch import models as m

from emulator.server import EmulatorInfo, start_emulator
from launcher.batch import connect
from launcher.client import Client
from launcher.storage import LocalStore
from tests.emulator.helpers import (
    UBUNTU,
    make_job,
    make_pool,
    task,
    unique,
    wait_all,
    wait_for,
)
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator

TIME_SCALE = 0.002
MAX_NODES = 4


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorInfo]:
    with start_emulator(tmp_path_factory.mktemp("fast-emulator"), time_scale=TIME_SCALE) as info:
        yield info


@pytest.fixture(scope="module")
def sdk(fast: EmulatorInfo) -> Iterator[Any]:
    client = make_client(fast)
    yield client
    client.close()


def _shell(script: str) -> str:
    return f"/bin/sh -c '{script}'"


class Recorder:
    """Polls the pool from a thread: (dedicated target, current dedicated, nodes listed)."""

    def __init__(self, sdk: Any, pool_id: str) -> None:
        self.sdk, self.pool_id = sdk, pool_id
        self.rows: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            pool = self.sdk.get_pool(self.pool_id)
            listed = len(list(self.sdk.list_nodes(self.pool_id)))
            self.rows.append(
                (pool.target_dedicated_nodes or 0, pool.current_dedicated_nodes or 0, listed)
            )
            time.sleep(0.05)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_default_formula_grows_for_50_tasks_and_shrinks_to_zero(
    fast: EmulatorInfo, sdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    conn = connect(
        SimpleNamespace(endpoint=fast.endpoint, account=fast.account),
        env={"AZURE_BATCH_ACCESS_KEY": fast.key},
    )
    store = LocalStore("batchlaunch", root=tmp_path / "store")
    store.ensure_container()
    client = Client(batch=conn, store=store)
    pool_id = unique("grow")
    info = client.create_pool(
        pool_id, autoscale=True, max_autoscale_nodes=MAX_NODES, autoscale_interval_minutes=5
    )
    assert info.autoscale and "max 4 nodes" in str(info.autoscale_formula)
    assert sdk.get_pool(pool_id).target_dedicated_nodes == 0  # nothing pending yet
    log = tmp_path / "runs.log"
    job_id = make_job(sdk, pool_id)
    with Recorder(sdk, pool_id) as recorder:
        sdk.create_tasks(
            job_id,
            [
                task(f"t{i:02d}", _shell(f'echo "$AZ_BATCH_TASK_ID" >> {log}; sleep 0.25'))
                for i in range(50)
            ],
        )
        wait_all(sdk, job_id, 50, timeout=60)
        wait_for(
            lambda: recorder.rows[-1] if recorder.rows else (1, 1, 1),
            lambda row: row == (0, 0, 0),
            30,
            "the pool to shrink to zero nodes",
        )
    peak = max(current for _, current, _ in recorder.rows)
    assert peak > 1, recorder.rows
    assert all(max(row) <= MAX_NODES for row in recorder.rows), recorder.rows
    tasks = list(sdk.list_tasks(job_id))
    assert len(tasks) == 50
    assert all(t.execution_info.result == "success" for t in tasks)
    assert all(t.execution_info.requeue_count == 0 for t in tasks)
    # each task ran exactly once: none lost, none run twice
    assert sorted(log.read_text().split()) == [f"t{i:02d}" for i in range(50)]
    pool = sdk.get_pool(pool_id)
    assert pool.current_dedicated_nodes == 0 and pool.target_dedicated_nodes == 0
    run = pool.auto_scale_run
    # the formula's target may still hold a fraction of the window's average (0.33): the
    # service truncates it when applying, and prints it as computed
    assert run.error is None and run.results.startswith("$TargetDedicatedNodes=0")
    assert "$NodeDeallocationOption=taskcompletion" in run.results
    client.conn.client.close()


def test_auto_scale_run_is_re_evaluated_and_shows_errors(sdk: Any) -> None:
    # 20 minutes of samples (40) are needed at 95 %: the first runs fail, later ones succeed.
    formula = (
        "pending = $PendingTasks.GetSample(TimeInterval_Minute * 20, 95);\n"
        "$TargetDedicatedNodes = 1;"
    )
    pool_id = unique("runs")
    sdk.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=UBUNTU,
            enable_auto_scale=True,
            auto_scale_formula=formula,
            auto_scale_evaluation_interval=datetime.timedelta(minutes=5),
        )
    )
    first = sdk.get_pool(pool_id).auto_scale_run
    assert first.error is not None and first.error.code == "InsufficientSampleData"
    assert first.results.startswith("$TargetDedicatedNodes=0;")
    assert sdk.get_pool(pool_id).target_dedicated_nodes == 0
    later = wait_for(
        lambda: sdk.get_pool(pool_id),
        lambda p: p.auto_scale_run.error is None,
        20,
        "an evaluation with 20 minutes of samples",
    )
    assert later.auto_scale_run.timestamp > first.timestamp
    assert later.target_dedicated_nodes == 1
    assert later.auto_scale_run.results.startswith("$TargetDedicatedNodes=1;")


def test_sampled_metrics_follow_tasks_and_nodes(sdk: Any) -> None:
    pool_id = unique("metrics")
    sdk.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=UBUNTU,
            task_slots_per_node=2,
            enable_auto_scale=True,
            auto_scale_formula="$TargetDedicatedNodes = 2;",
            auto_scale_evaluation_interval=datetime.timedelta(minutes=5),
        )
    )
    wait_for(
        lambda: [n.state for n in sdk.list_nodes(pool_id)],
        lambda states: states == ["idle", "idle"],
        20,
        "two idle nodes",
    )
    job_id = make_job(sdk, pool_id)
    sdk.create_tasks(job_id, [task("ok", "true"), task("bad", "false")])
    wait_all(sdk, job_id, 2, timeout=20)
    sdk.create_tasks(job_id, [task(f"r{i}", "sleep 3") for i in range(6)])
    wait_for(
        lambda: sdk.get_job_task_counts(job_id).task_counts,
        lambda c: (c.running, c.active) == (4, 2),
        20,
        "4 running and 2 active tasks",
    )
    time.sleep(30 * TIME_SCALE * 3)  # a few 30 s samples of the steady state
    formula = (
        "a = max($ActiveTasks.GetSample(1)); r = max($RunningTasks.GetSample(1));\n"
        "p = max($PendingTasks.GetSample(1)); cpu = max($CPUPercent.GetSample(1));\n"
        "n = max($SampleNodeCount.GetSample(1)); u = max($UsableNodeCount.GetSample(1));\n"
        "ok = sum($SucceededTasks.GetSample(TimeInterval_Minute * 60));\n"
        "bad = sum($FailedTasks.GetSample(TimeInterval_Minute * 60));\n"
        "gone = max($PreemptedNodeCount.GetSample(1));\n"
        "d = $CurrentDedicatedNodes; lp = $CurrentLowPriorityNodes; s = $TaskSlotsPerNode;\n"
        "$TargetDedicatedNodes = d;"
    )
    run = sdk.evaluate_pool_auto_scale(
        pool_id, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=formula)
    )
    assert run.error is None, run.error
    values = dict(item.split("=", 1) for item in run.results.split(";"))
    assert {k: values[k] for k in ("a", "r", "p", "cpu", "n", "u", "ok", "bad")} == {
        "a": "2", "r": "4", "p": "6", "cpu": "100", "n": "2", "u": "2", "ok": "1", "bad": "1",
    }  # fmt: skip
    assert (values["gone"], values["d"], values["lp"], values["s"]) == ("0", "2", "0", "2")


# ------------------------------------------------------------- deallocation options
OPTIONS = ("taskcompletion", "requeue", "terminate", "retaineddata")
RETENTION = datetime.timedelta(minutes=20)  # 2.4 s of real time at TIME_SCALE


def _running_pair(sdk: Any, tmp_path: Path) -> tuple[str, str, dict[str, str]]:
    """A 2-node pool (1 slot each) running two tasks, one per node: (pool, job, task->node).

    The tasks finish when the test creates `tmp_path/release` (at most 30 s), so timing
    on a loaded machine cannot end them before the shrink is observed."""
    pool_id = make_pool(sdk, unique("dealloc"), nodes=2)
    job_id = make_job(sdk, pool_id)
    constraints = m.BatchTaskConstraints(retention_time=RETENTION)
    sdk.create_tasks(
        job_id,
        [
            task(
                name,
                _shell(
                    f"echo start >> {tmp_path}/{name}; i=0; "
                    f"while [ ! -e {tmp_path}/release ] && [ $i -lt 600 ]; "
                    "do sleep 0.05; i=$((i+1)); done; "
                    f"echo done >> {tmp_path}/{name}"
                ),
                constraints=constraints,
            )
            for name in ("a", "b")
        ],
    )
    running = wait_for(
        lambda: [sdk.get_task(job_id, name) for name in ("a", "b")],
        lambda tasks: all(t.state == "running" for t in tasks),
        20,
        "both tasks running",
    )
    placed = {t.id: t.node_info.node_id for t in running}
    assert len(set(placed.values())) == 2
    # "running" is set as the process is launched; on a loaded machine the shell may not have
    # run its first line yet, and a shrink then would find nothing started to stop.
    wait_for(
        lambda: [(tmp_path / name).exists() for name in ("a", "b")],
        all,
        20,
        "both commands started",
    )
    return pool_id, job_id, placed


def _shrink(sdk: Any, how: str, option: str, pool_id: str, victim: str) -> None:
    if how == "formula":
        sdk.enable_pool_auto_scale(
            pool_id,
            m.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula=(
                    f"$TargetDedicatedNodes = 1; $NodeDeallocationOption = {option};"
                ),
                auto_scale_evaluation_interval=datetime.timedelta(minutes=5),
            ),
        )
    elif how == "resize":
        sdk.begin_resize_pool(
            pool_id,
            m.BatchPoolResizeOptions(target_dedicated_nodes=1, node_deallocation_option=option),
            polling_interval=0.05,
        ).result()
    else:
        sdk.begin_remove_nodes(
            pool_id,
            m.BatchNodeRemoveOptions(node_ids=[victim], node_deallocation_option=option),
            polling_interval=0.05,
        ).result()


@pytest.mark.parametrize("how", ["formula", "resize", "remove"])
@pytest.mark.parametrize("option", OPTIONS)
def test_shrinking_honours_the_deallocation_option(
    sdk: Any, tmp_path: Path, option: str, how: str
) -> None:
    pool_id, job_id, placed = _running_pair(sdk, tmp_path)
    # remove_nodes names its victim; resize and formula pick one of two equally busy nodes
    _shrink(sdk, how, option, pool_id, victim=placed["a"])
    leaving = wait_for(
        lambda: {n.id: n.state for n in sdk.list_nodes(pool_id)},
        lambda nodes: "leavingpool" in nodes.values() or len(nodes) == 1,
        10,
        "a node leaving the pool",
    )
    victim = next(
        (node for node, state in leaving.items() if state == "leavingpool"),
        next(iter(set(placed.values()) - set(leaving)), None),
    )
    assert victim in placed.values()
    evicted = next(name for name, node in placed.items() if node == victim)
    kept = "b" if evicted == "a" else "a"
    early = sdk.get_task(job_id, evicted)
    if option in ("taskcompletion", "retaineddata"):
        # the running task keeps its node: the node waits in leavingpool
        assert early.state == "running" and victim in {n.id for n in sdk.list_nodes(pool_id)}
    elif option == "requeue":
        wait_for(
            lambda: sdk.get_task(job_id, evicted),
            lambda t: (t.execution_info.requeue_count or 0) == 1,
            10,
            "the evicted task to be requeued",
        )
    (tmp_path / "release").touch()
    wait_all(sdk, job_id, 2, timeout=30)
    finished = sdk.get_task(job_id, evicted)
    marks = (tmp_path / evicted).read_text().split()
    assert (tmp_path / kept).read_text().split() == ["start", "done"]
    assert sdk.get_task(job_id, kept).execution_info.result == "success"
    if option == "requeue":
        # stopped and queued again: it ran a second time (on the node that stayed) and finished
        assert finished.execution_info.result == "success"
        assert finished.execution_info.requeue_count == 1
        assert finished.node_info.node_id != victim
        assert marks == ["start", "start", "done"]
    elif option == "terminate":
        assert finished.execution_info.result == "failure"
        assert finished.execution_info.failure_info.code == "TaskEnded"
        assert finished.execution_info.requeue_count == 0
        assert marks == ["start"]  # killed, never run again
    else:
        assert finished.execution_info.result == "success"
        assert finished.execution_info.requeue_count == 0
        assert finished.node_info.node_id == victim
        assert marks == ["start", "done"]
    wait_for(
        lambda: {n.id for n in sdk.list_nodes(pool_id)},
        lambda nodes: victim not in nodes and len(nodes) == 1,
        10,
        "the victim node to leave",
    )
    # seconds from the end of the last task that ran on the victim to the node's removal
    held = time.time() - finished.execution_info.end_time.timestamp()
    retention = RETENTION.total_seconds() * TIME_SCALE
    if option == "retaineddata":
        # the node waited for the evicted task's data retention after the task ended
        assert held >= retention * 0.9, held
    else:
        assert held < retention, held
    pool = sdk.get_pool(pool_id)
    assert pool.current_dedicated_nodes == 1 and pool.target_dedicated_nodes == 1
    sdk.begin_delete_pool(pool_id)
