"""The Batch service itself: state transitions, scheduling and task execution.

Everything runs on one asyncio loop (the HTTP server's), so handlers and the scheduler
mutate state without locks. Scheduling is event-driven: any change that could let a task
start calls `kick()`, which coalesces into one scheduling pass on the next loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import shutil
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from emulator import files, process
from emulator.catalog import node_agents
from emulator.config import Settings
from emulator.errors import BatchError, invalid, missing
from emulator.model import Job, Node, Pool, Task
from emulator.scaling import AutoScaler, check_formula, check_interval
from emulator.store import Store
from emulator.util import INFINITE, etag, iso, now, parse_iso, seconds

log = logging.getLogger("emulator")
_ASCII_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

BOOT_DELAY = 0.05
DELETE_DELAY = 0.2
FLUSH_INTERVAL = 0.3
PREEMPT_DELAY = 0.5
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "USER",
    "LOGNAME",
    "TZ",
    "SHELL",
    "TMPDIR",
    "TERM",
)
NODE_STATES = (
    "creating",
    "idle",
    "offline",
    "preempted",
    "rebooting",
    "reimaging",
    "running",
    "starting",
    "startTaskFailed",
    "leavingPool",
    "unknown",
    "unusable",
    "waitingForStartTask",
    "deallocated",
    "deallocating",
    "upgradingOS",
)


def _touch(data: dict[str, Any], stamp: str | None = None) -> None:
    data["eTag"] = etag()
    data["lastModified"] = stamp or iso()


def _set_state(data: dict[str, Any], state: str, previous: bool = True) -> None:
    if data.get("state") == state:
        return
    if previous and "state" in data:
        data["previousState"] = data["state"]
        data["previousStateTransitionTime"] = data.get("stateTransitionTime")
    data["state"] = state
    data["stateTransitionTime"] = iso()


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = f"http://{settings.host}:{settings.port}"
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.jobs_by_pool: dict[str, set[Job]] = {}
        self.store = Store(settings.state_dir / "state.sqlite")
        self.rng = random.Random(settings.seed)
        self.seq = 0
        self._kicked = False
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.scaler = AutoScaler(self)
        self.procs: set[process.Running] = set()
        self._env_cache: dict[int, tuple[Node, dict[str, str]]] = {}
        self._live_pids: set[int] = set()
        self._groups: set[int] = set()  # coordination process groups left running on purpose
        self._pid_lock = threading.Lock()
        # fork/exec and file creation block; a few threads overlap them across cores.
        self.spawner = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spawn")

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def delay(self, base: float) -> float:
        return base * self.settings.time_scale

    async def start(self) -> None:
        """Load durable state (requeueing interrupted tasks) and start the flusher."""
        self._load()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        self.scaler.start()
        self.kick()

    async def stop(self) -> None:
        """Kill every child process group and write the final state."""
        with self._pid_lock:
            self._closing = True
        for running in list(self.procs):
            running.kill("shutdown")
        # Spawns in flight finish on their threads; then no child may outlive the service.
        await asyncio.to_thread(self.spawner.shutdown, True)
        with self._pid_lock:
            for pid in self._live_pids | self._groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        self.scaler.stop()
        if self._flusher:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for task in list(self._background):
            task.cancel()
        self.store.flush()
        self.store.close()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self.store.has_pending():
                rows = self.store.take()
                await asyncio.to_thread(self.store.write, rows)

    def busy(self) -> bool:
        """True while any process runs (the idle-timeout daemon must not exit then)."""
        return bool(self.procs) or any(j.ready for j in self.jobs.values() if j.state == "active")

    def _load(self) -> None:
        pools = []
        for _key, body in self.store.load("pool"):
            pool = Pool(body["data"], body["seq"])
            pool.node_serial = body.get("node_serial", 0)
            pools.append(pool)
            self.seq = max(self.seq, pool.seq)
        for pool in sorted(pools, key=lambda p: p.seq):
            self.pools[pool.id] = pool
        for key, body in self.store.load("node"):
            pool_id = key.split("/", 1)[0]
            owner = self.pools.get(pool_id)
            if owner is None:
                continue
            pool = owner
            node = Node(pool, body["data"], self._node_root(pool_id, body["data"]["id"]))
            node.users = body.get("users", {})
            node.data["runningTasksCount"] = 0
            node.data["runningTaskSlotsCount"] = 0
            node.data.pop("recentTasks", None)
            pool.nodes[node.id] = node
            interrupted = (node.data.get("startTaskInfo") or {}).get("state") == "running"
            if node.state == "leavingpool":
                self._spawn(self._drop_node(node))
            elif node.state in ("running", "idle") and not interrupted:
                node.data["state"] = "idle"
            elif node.state not in ("starttaskfailed", "unusable", "offline", "deallocated"):
                # Booting, or its start task was cut off by the shutdown: boot again.
                self._spawn(self._boot(node, node.generation))
        for pool in self.pools.values():
            if pool.data.get("state") == "deleting":
                self._spawn(self._finish_pool_delete(pool))
            elif pool.data.get("allocationState") != "steady":
                self.start_allocation(pool)  # a resize cut off by the shutdown: finish it
        jobs: list[Job] = []
        for _key, body in self.store.load("job"):
            job = Job(body["data"], body["seq"])
            jobs.append(job)
            self.seq = max(self.seq, job.seq)
        for job in sorted(jobs, key=lambda j: j.seq):
            self.jobs[job.id] = job
            self.jobs_by_pool.setdefault(job.pool_id, set()).add(job)
        tasks: list[Task] = []
        for key, body in self.store.load("task"):
            job_opt = self.jobs.get(key.split("/", 1)[0])
            if job_opt is None:
                continue
            task = Task(job_opt, body["data"], body["seq"])
            task.blocked = body.get("blocked", False)
            tasks.append(task)
        tasks.sort(key=lambda t: t.seq)
        for task in tasks:
            job = task.job
            if task.state in ("running", "preparing"):
                info = task.data.setdefault("executionInfo", {})
                info["requeueCount"] = info.get("requeueCount", 0) + 1
                info["lastRequeueTime"] = iso()
                task.data.pop("nodeInfo", None)
                task.data.pop("_subtasks", None)
                _set_state(task.data, "active")
                _touch(task.data)
                self._mark_task(task)
            job.tasks[task.id] = task
            task.pos = len(job.order)
            job.order.append(task)
            job.task_serial = max(job.task_serial, task.seq)
            self._count(job, task, task.state, +1)
        for job in self.jobs.values():
            for entry in job.order:
                if entry is not None and entry.state == "active":
                    self._register_dependencies(entry)
        for job in self.jobs.values():
            self._arm_job_deadline(job)
            if job.state == "deleting":
                self._spawn(self._finish_job_delete(job))
            elif job.state == "terminating":
                self._complete_job(
                    job, job.data.get("executionInfo", {}).get("terminateReason", "UserTerminate")
                )

    # ------------------------------------------------------------------ persistence
    def _mark_pool(self, pool: Pool) -> None:
        self.store.mark("pool", pool.id, pool.snapshot)

    def _mark_node(self, node: Node) -> None:
        self.store.mark("node", f"{node.pool.id}/{node.id}", node.snapshot)

    def _mark_job(self, job: Job) -> None:
        self.store.mark("job", job.id, job.snapshot)

    def _mark_task(self, task: Task) -> None:
        self.store.mark("task", f"{task.job.id}/{task.id}", task.snapshot)

    # ------------------------------------------------------------------ lookups
    def pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise BatchError("PoolNotFound")
        return pool

    def node(self, pool_id: str, node_id: str) -> Node:
        node = self.pool(pool_id).nodes.get(node_id)
        if node is None:
            raise BatchError("NodeNotFound")
        return node

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise BatchError("JobNotFound")
        return job

    def task(self, job_id: str, task_id: str) -> Task:
        task = self.job(job_id).tasks.get(task_id)
        if task is None:
            raise BatchError("TaskNotFound")
        return task

    # ------------------------------------------------------------------ pools
    def create_pool(self, body: dict[str, Any]) -> Pool:
        pool_id = _require_id(body, "id")
        if pool_id in self.pools:
            if self.pools[pool_id].data.get("state") == "deleting":
                raise BatchError("PoolBeingDeleted")
            raise BatchError("PoolExists")
        if not body.get("vmSize"):
            raise missing("vmSize")
        vmc = body.get("virtualMachineConfiguration")
        if not vmc:
            raise missing("virtualMachineConfiguration")
        agent = vmc.get("nodeAgentSKUId")
        if not agent:
            raise missing("virtualMachineConfiguration.nodeAgentSKUId")
        known = {a.lower() for a in node_agents()}
        if agent.lower() not in known and not agent.lower().startswith("batch.node."):
            raise invalid("nodeAgentSKUId", f"{agent!r} is not a supported node agent SKU")
        for key in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise invalid(key, "must be a non-negative integer")
            if body.get("enableAutoScale"):
                raise invalid(key, "cannot be set when enableAutoScale is true")
        if body.get("enableAutoScale"):
            check_formula(body.get("autoScaleFormula"))
            check_interval(body.get("autoScaleEvaluationInterval"))
        slots = body.get("taskSlotsPerNode", 1)
        if not isinstance(slots, int) or slots < 1 or slots > 256:
            raise invalid("taskSlotsPerNode", "must be an integer from 1 to 256")
        data = dict(body)
        data["vmSize"] = str(body["vmSize"]).lower()
        data.setdefault("taskSlotsPerNode", 1)
        data.setdefault("taskSchedulingPolicy", {"nodeFillType": "spread"})
        data.setdefault("enableInterNodeCommunication", False)
        data.setdefault("resizeTimeout", "PT15M")
        data.setdefault("enableAutoScale", False)
        data["url"] = f"{self.base_url}/pools/{pool_id}"
        data["creationTime"] = iso()
        data["state"] = "active"
        data["stateTransitionTime"] = data["creationTime"]
        data["allocationState"] = "steady"
        data["allocationStateTransitionTime"] = data["creationTime"]
        data["currentDedicatedNodes"] = 0
        data["currentLowPriorityNodes"] = 0
        _touch(data)
        pool = Pool(data, self._next_seq())
        self.pools[pool_id] = pool
        if data.get("enableAutoScale"):
            data.setdefault("autoScaleEvaluationInterval", "PT15M")
            data["targetDedicatedNodes"] = 0
            data["targetLowPriorityNodes"] = 0
            self.scaler.run(pool)
            self.scaler.arm(pool)
        else:
            data.setdefault("targetDedicatedNodes", 0)
            data.setdefault("targetLowPriorityNodes", 0)
        self._mark_pool(pool)
        self.start_allocation(pool)
        return pool

    def _active_pool(self, pool_id: str) -> Pool:
        pool = self.pool(pool_id)
        if pool.data["state"] == "deleting":
            raise BatchError("PoolBeingDeleted")
        return pool

    def delete_pool(self, pool_id: str) -> None:
        pool = self._active_pool(pool_id)
        _set_state(pool.data, "deleting", previous=False)
        pool.data["allocationState"] = "resizing"
        _touch(pool.data)
        self._mark_pool(pool)
        self.scaler.forget(pool.id)
        for node in list(pool.nodes.values()):
            self._evict_tasks(node, "requeue")
            self._reset_node(node)
            _set_state(node.data, "leavingpool", previous=False)
        self._spawn(self._finish_pool_delete(pool))

    async def _finish_pool_delete(self, pool: Pool) -> None:
        await asyncio.sleep(self.delay(DELETE_DELAY))
        for node in list(pool.nodes.values()):
            self.store.forget("node", f"{pool.id}/{node.id}")
            await asyncio.to_thread(shutil.rmtree, node.root, True)
        pool.nodes.clear()
        if self.pools.get(pool.id) is pool:
            del self.pools[pool.id]
            self.store.forget("pool", pool.id)

    def update_pool(self, pool_id: str, body: dict[str, Any], replace: bool) -> None:
        pool = self._active_pool(pool_id)
        if replace:
            for key in ("startTask", "applicationPackageReferences", "metadata"):
                if key in body and body[key] is not None:
                    pool.data[key] = body[key]
                else:
                    pool.data.pop(key, None)
            if "metadata" not in pool.data:
                pool.data["metadata"] = []
        else:
            for key, value in body.items():
                if value is not None:
                    pool.data[key] = value
        _touch(pool.data)
        self._mark_pool(pool)
        self.kick()

    def resize_pool(self, pool_id: str, body: dict[str, Any]) -> None:
        pool = self._active_pool(pool_id)
        if pool.data.get("enableAutoScale"):
            raise BatchError(
                "AutoScaleEnabled", "Cannot resize a pool that has autoscale enabled.", 409
            )
        if pool.data["allocationState"] != "steady":
            raise BatchError("PoolResizing")
        for key in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if key in body and body[key] is not None:
                value = body[key]
                if not isinstance(value, int) or value < 0:
                    raise invalid(key, "must be a non-negative integer")
                pool.data[key] = value
        if body.get("resizeTimeout"):
            pool.data["resizeTimeout"] = body["resizeTimeout"]
        self.start_allocation(pool, str(body.get("nodeDeallocationOption") or "requeue").lower())

    def stop_resize(self, pool_id: str) -> None:
        pool = self._active_pool(pool_id)
        if pool.data["allocationState"] == "resizing":
            pool.data["allocationState"] = "stopping"
            pool.data["allocationStateTransitionTime"] = iso()
        _touch(pool.data)
        self._mark_pool(pool)

    def start_allocation(self, pool: Pool, dealloc: str = "requeue") -> None:
        pool.data["allocationState"] = "resizing"
        pool.data["allocationStateTransitionTime"] = iso()
        _touch(pool.data)
        self._mark_pool(pool)
        if not pool.allocating:
            pool.allocating = True
            self._spawn(self._allocate(pool, dealloc))

    async def _allocate(self, pool: Pool, dealloc: str) -> None:
        try:
            await asyncio.sleep(self.delay(BOOT_DELAY))
            if pool.data["state"] != "active":
                return
            if pool.data["allocationState"] != "stopping":
                for dedicated, key in (
                    (True, "targetDedicatedNodes"),
                    (False, "targetLowPriorityNodes"),
                ):
                    target = int(pool.data.get(key) or 0)
                    current = [
                        n
                        for n in pool.nodes.values()
                        if n.data["isDedicated"] == dedicated and n.state != "leavingpool"
                    ]
                    for _ in range(target - len(current)):
                        self._add_node(pool, dedicated)
                    if len(current) > target:
                        # Idle nodes go first, then the ones with the least work.
                        victims = sorted(current, key=lambda n: (len(n.running), n.state != "idle"))
                        for node in victims[: len(current) - target]:
                            self._remove_node(node, dealloc)
            pool.data["allocationState"] = "steady"
            pool.data["allocationStateTransitionTime"] = iso()
            self._refresh_pool_counts(pool)
        finally:
            pool.allocating = False

    def _refresh_pool_counts(self, pool: Pool) -> None:
        present = [n for n in pool.nodes.values() if n.state != "leavingpool"]
        pool.data["currentDedicatedNodes"] = sum(1 for n in present if n.data["isDedicated"])
        pool.data["currentLowPriorityNodes"] = sum(1 for n in present if not n.data["isDedicated"])
        _touch(pool.data)
        self._mark_pool(pool)

    def _node_root(self, pool_id: str, node_id: str) -> Path:
        return self.settings.nodes_dir / pool_id / node_id

    def _add_node(self, pool: Pool, dedicated: bool) -> Node:
        pool.node_serial += 1
        digest = hashlib.sha256(f"{pool.id}/{pool.node_serial}/{pool.seq}".encode()).hexdigest()
        node_id = f"tvmps_{digest}_{'d' if dedicated else 'p'}"
        stamp = iso()
        data: dict[str, Any] = {
            "id": node_id,
            "url": f"{self.base_url}/pools/{pool.id}/nodes/{node_id}",
            "state": "creating",
            "schedulingState": "enabled",
            "stateTransitionTime": stamp,
            "allocationTime": stamp,
            "ipAddress": "127.0.0.1",
            "affinityId": f"TVM:{node_id}",
            "vmSize": pool.data["vmSize"],
            "totalTasksRun": 0,
            "runningTasksCount": 0,
            "runningTaskSlotsCount": 0,
            "totalTasksSucceeded": 0,
            "isDedicated": dedicated,
            "endpointConfiguration": {
                "inboundEndpoints": [
                    {
                        "name": "SSHRule.0",
                        "protocol": "tcp",
                        "publicIPAddress": "127.0.0.1",
                        "publicFQDN": "localhost",
                        "frontendPort": self.settings.remote_login_port,
                        "backendPort": 22,
                    }
                ]
            },
            "nodeAgentInfo": {"version": "1.11.0-emulator", "lastUpdateTime": stamp},
            "virtualMachineInfo": {
                "imageReference": (pool.data.get("virtualMachineConfiguration") or {}).get(
                    "imageReference", {}
                )
            },
        }
        node = Node(pool, data, self._node_root(pool.id, node_id))
        if not dedicated and self.rng.random() < self.settings.preempt_rate:
            node.preempt_armed = True
        pool.nodes[node_id] = node
        self._mark_node(node)
        self._spawn(self._boot(node, node.generation))
        return node

    def _remove_node(self, node: Node, dealloc: str) -> None:
        self._evict_tasks(node, dealloc)
        self._reset_node(node)
        _set_state(node.data, "leavingpool", previous=False)
        self._mark_node(node)
        self._spawn(self._drop_node(node, dealloc.lower() == "retaineddata"))

    async def _drop_node(self, node: Node, retain: bool = False) -> None:
        await asyncio.sleep(self.delay(DELETE_DELAY))
        while node.running:  # taskcompletion/retaineddata: let running tasks end
            await asyncio.sleep(0.05)
        if retain:
            await self._await_retention(node)
        pool = node.pool
        if pool.nodes.get(node.id) is node:
            del pool.nodes[node.id]
            self.store.forget("node", f"{pool.id}/{node.id}")
            self._refresh_pool_counts(pool)
            await asyncio.to_thread(shutil.rmtree, node.root, True)

    async def _await_retention(self, node: Node) -> None:
        """retaineddata: the node stays until the data of every task that ran on it is no
        longer retained: `constraints.retentionTime` (default 7 days, scaled by
        `--time-scale`) after the task ended, or the task (or its job) is deleted."""
        ran = [
            (job, task)
            for job in self.jobs_by_pool.get(node.pool.id, ())
            for task in job.tasks.values()
            if (task.data.get("nodeInfo") or {}).get("nodeId") == node.id
        ]
        while node.pool.nodes.get(node.id) is node:
            wait = 0.0
            for job, task in ran:
                if job.tasks.get(task.id) is not task or self.jobs.get(job.id) is not job:
                    continue
                end = (task.data.get("executionInfo") or {}).get("endTime")
                keep = seconds((task.data.get("constraints") or {}).get("retentionTime"))
                if not end or keep is None:
                    continue
                left = (parse_iso(end) - now()).total_seconds() + self.delay(keep)
                wait = max(wait, left)
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, 1.0))

    def remove_nodes(self, pool_id: str, body: dict[str, Any]) -> None:
        pool = self._active_pool(pool_id)
        node_ids = body.get("nodeList") or []
        if not node_ids:
            raise missing("nodeList")
        if len(node_ids) > 100:
            raise invalid("nodeList", "at most 100 nodes per request")
        nodes = []
        for node_id in node_ids:
            node = pool.nodes.get(node_id)
            if node is None:
                raise BatchError("NodeNotFound", values={"NodeId": node_id})
            nodes.append(node)
        dealloc = str(body.get("nodeDeallocationOption") or "requeue").lower()
        for node in nodes:
            key = "targetDedicatedNodes" if node.data["isDedicated"] else "targetLowPriorityNodes"
            pool.data[key] = max(0, int(pool.data.get(key) or 0) - 1)
            self._remove_node(node, dealloc)
        pool.data["allocationState"] = "resizing"
        pool.data["allocationStateTransitionTime"] = iso()
        _touch(pool.data)
        self._mark_pool(pool)
        self._spawn(self._settle(pool))

    async def _settle(self, pool: Pool) -> None:
        await asyncio.sleep(self.delay(DELETE_DELAY) * 1.5)
        if pool.data["state"] == "active" and not pool.allocating:
            pool.data["allocationState"] = "steady"
            pool.data["allocationStateTransitionTime"] = iso()
            self._refresh_pool_counts(pool)

    # ------------------------------------------------------------------ autoscale
    def evaluate_autoscale(self, pool_id: str, formula: str) -> dict[str, Any]:
        pool = self._active_pool(pool_id)
        if not pool.data.get("enableAutoScale"):
            raise BatchError("AutoScaleNotEnabled")
        check_formula(formula)
        result: dict[str, Any] = self.scaler.evaluate(pool, formula).to_dict()
        return result

    def enable_autoscale(self, pool_id: str, body: dict[str, Any]) -> None:
        pool = self._active_pool(pool_id)
        formula = check_formula(body.get("autoScaleFormula") or pool.data.get("autoScaleFormula"))
        interval = check_interval(
            body.get("autoScaleEvaluationInterval") or pool.data.get("autoScaleEvaluationInterval")
        )
        pool.data.update(
            enableAutoScale=True, autoScaleFormula=formula, autoScaleEvaluationInterval=interval
        )
        self.scaler.run(pool)
        self.scaler.arm(pool)

    def disable_autoscale(self, pool_id: str) -> None:
        pool = self._active_pool(pool_id)
        pool.data["enableAutoScale"] = False
        for key in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun"):
            pool.data.pop(key, None)
        timer = self.scaler.timers.pop(pool.id, None)
        if timer:
            timer.cancel()
        self.pool_changed(pool)

    def pool_changed(self, pool: Pool) -> None:
        _touch(pool.data)
        self._mark_pool(pool)

    # ------------------------------------------------------------------ nodes
    def _node_env(self, node: Node) -> dict[str, str]:
        """The node-wide AZ_BATCH_* environment (a fresh copy; built once per node)."""
        cached = self._env_cache.get(id(node))
        if cached is not None and cached[0] is node:
            return dict(cached[1])
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        root = node.root
        env.update(
            {
                "AZ_BATCH_ACCOUNT_NAME": self.settings.account,
                "AZ_BATCH_ACCOUNT_URL": self.base_url,
                "AZ_BATCH_POOL_ID": node.pool.id,
                "AZ_BATCH_NODE_ID": node.id,
                "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.data["isDedicated"] else "false",
                "AZ_BATCH_NODE_ROOT_DIR": str(root),
                "AZ_BATCH_NODE_SHARED_DIR": str(root / "shared"),
                "AZ_BATCH_NODE_STARTUP_DIR": str(root / "startup"),
                "AZ_BATCH_NODE_MOUNTS_DIR": str(root / "fsmounts"),
                "AZ_BATCH_CERTIFICATES_DIR": str(root / "certs"),
            }
        )
        self._env_cache[id(node)] = (node, env)
        return dict(env)

    def _reset_node(self, node: Node) -> None:
        """The node's current life ends (reboot, removal, preemption): stop its start task."""
        node.generation += 1
        if node.start_task_run is not None:
            node.start_task_run.kill("reset")
            node.start_task_run = None

    def _set_node_state(self, node: Node, state: str) -> None:
        if node.state != state:
            node.data["state"] = state
            node.data["stateTransitionTime"] = iso()
            self._mark_node(node)

    async def _boot(self, node: Node, generation: int) -> None:
        """Create the node's directories and run its start task, as a booting VM would."""
        self._set_node_state(node, "starting")
        await asyncio.sleep(self.delay(BOOT_DELAY))
        if node.generation != generation:
            return
        await asyncio.to_thread(_node_dirs, node.root, node.pool.data.get("mountConfiguration"))
        node.data["lastBootTime"] = iso()
        start_task = node.pool.data.get("startTask")
        if not start_task or not start_task.get("commandLine"):
            node.data.pop("startTaskInfo", None)
            self._set_node_state(node, "idle")
            self.kick()
            return
        # The start task is running from the moment the node shows it (a node that does not
        # wait for it is idle at once, with startTaskInfo.state "running").
        info: dict[str, Any] = {"state": "running", "startTime": iso(), "retryCount": 0}
        node.data["startTaskInfo"] = info
        self._mark_node(node)
        wait = start_task.get("waitForSuccess", True)
        if wait:
            self._set_node_state(node, "waitingforstarttask")
        else:
            self._set_node_state(node, "idle")
            self.kick()
        ok = await self._run_start_task(node, generation, start_task, info)
        if node.generation != generation:
            return
        if wait:
            self._set_node_state(node, "idle" if ok else "starttaskfailed")
            self.kick()

    async def _run_start_task(
        self, node: Node, generation: int, spec: dict[str, Any], info: dict[str, Any]
    ) -> bool:
        startup = node.root / "startup"
        wd = startup / "wd"
        await asyncio.to_thread(wd.mkdir, parents=True, exist_ok=True)
        env = self._node_env(node)
        env["AZ_BATCH_TASK_DIR"] = str(startup)
        env["AZ_BATCH_TASK_WORKING_DIR"] = str(wd)
        env.update(_env_pairs(spec.get("environmentSettings")))
        max_retries = int(spec.get("maxTaskRetryCount") or 0)
        while True:
            failure: tuple[str, str, str] | None = None
            code: int | None = None
            if spec.get("resourceFiles"):
                try:
                    await asyncio.to_thread(files.download, spec["resourceFiles"], wd)
                except files.TransferError as exc:
                    failure = ("usererror", exc.code, exc.message)
            if failure is None:
                try:
                    running = await self._launch(
                        spec["commandLine"],
                        wd,
                        env,
                        startup / "stdout.txt",
                        startup / "stderr.txt",
                        None,
                    )
                    node.start_task_run = running
                    code = await running.done
                    if self._closing:
                        return False
                except process.LaunchError as exc:
                    failure = ("usererror", exc.code, exc.message)
            if node.generation != generation:
                return False
            if failure is None and code == 0:
                info.update(state="completed", endTime=iso(), exitCode=0, result="success")
                info.pop("failureInfo", None)
                self._mark_node(node)
                return True
            if failure is None and (max_retries == -1 or info["retryCount"] < max_retries):
                info["retryCount"] += 1
                info["lastRetryTime"] = iso()
                continue
            info.update(state="completed", endTime=iso(), result="failure")
            if code is not None:
                info["exitCode"] = code
            category, fcode, message = failure or (
                "usererror",
                "FailureExitCode",
                "The task exited with an exit code representing a failure",
            )
            info["failureInfo"] = {"category": category, "code": fcode, "message": message}
            self._mark_node(node)
            return False

    def reboot_node(self, pool_id: str, node_id: str, option: str) -> None:
        node = self.node(pool_id, node_id)
        if node.state in ("leavingpool", "rebooting", "creating", "starting"):
            raise BatchError("NodeStateConflict")
        self._evict_tasks(node, option or "requeue")
        self._reset_node(node)
        self._set_node_state(node, "rebooting")
        self._spawn(self._boot(node, node.generation))

    def deallocate_node(self, pool_id: str, node_id: str, option: str) -> None:
        """The VM is stopped: running tasks are requeued (or ended), the node waits for start."""
        node = self.node(pool_id, node_id)
        if node.state in ("leavingpool", "deallocated", "deallocating"):
            raise BatchError("NodeStateConflict")
        self._evict_tasks(node, option or "requeue")
        self._reset_node(node)
        self._set_node_state(node, "deallocated")

    def start_node(self, pool_id: str, node_id: str) -> None:
        node = self.node(pool_id, node_id)
        if node.state != "deallocated":
            raise BatchError("NodeStateConflict")
        self._spawn(self._boot(node, node.generation))

    def set_scheduling(
        self, pool_id: str, node_id: str, enabled: bool, option: str = "requeue"
    ) -> None:
        node = self.node(pool_id, node_id)
        node.data["schedulingState"] = "enabled" if enabled else "disabled"
        if not enabled and option in ("requeue", "terminate"):
            self._evict_tasks(node, option)
        self._mark_node(node)
        self.kick()

    def _evict_tasks(self, node: Node, option: str) -> None:
        """Take running tasks off a node: requeue them (Batch's default) or end them;
        taskcompletion and retaineddata let them run to the end."""
        option = option.lower()
        for task in list(node.running.values()):
            if option in ("taskcompletion", "retaineddata"):
                continue
            if option == "terminate":
                self._end_task(task, "TaskEnded", "Task Was Ended by User Request")
            else:
                self._requeue(task)

    def _preempt_if(self, node: Node, generation: int) -> None:
        if node.generation == generation:
            self.preempt(node)

    def preempt(self, node: Node) -> None:
        """A low-priority node is taken away: its running tasks go back to the queue."""
        if node.state not in ("running", "idle"):
            return
        self._evict_tasks(node, "requeue")
        self._reset_node(node)
        self._set_node_state(node, "preempted")
        self._spawn(self._recover(node, node.generation))

    async def _recover(self, node: Node, generation: int) -> None:
        await asyncio.sleep(self.delay(PREEMPT_DELAY))
        if node.generation == generation and node.pool.nodes.get(node.id) is node:
            await self._boot(node, generation)

    def add_user(self, pool_id: str, node_id: str, body: dict[str, Any]) -> None:
        node = self.node(pool_id, node_id)
        name = body.get("name")
        if not name:
            raise missing("name")
        if name in node.users:
            raise BatchError("NodeUserExists")
        node.users[name] = {k: v for k, v in body.items() if k != "password"}
        node.users[name]["hasPassword"] = bool(body.get("password"))
        self._mark_node(node)

    def replace_user(self, pool_id: str, node_id: str, name: str, body: dict[str, Any]) -> None:
        node = self.node(pool_id, node_id)
        if name not in node.users:
            raise BatchError("NodeUserNotFound")
        user = node.users[name]
        for key in ("expiryTime", "sshPublicKey"):
            if body.get(key) is not None:
                user[key] = body[key]
            elif key == "sshPublicKey":
                user.pop(key, None)
        user["hasPassword"] = bool(body.get("password")) or user.get("hasPassword", False)
        self._mark_node(node)

    def delete_user(self, pool_id: str, node_id: str, name: str) -> None:
        node = self.node(pool_id, node_id)
        if node.users.pop(name, None) is None:
            raise BatchError("NodeUserNotFound")
        self._mark_node(node)

    def node_view(self, node: Node) -> dict[str, Any]:
        data = dict(node.data)
        data["runningTasksCount"] = len(node.running)
        data["runningTaskSlotsCount"] = node.used_slots
        if node.running:
            data["recentTasks"] = [self._task_info(t) for t in list(node.running.values())[:10]]
        if node.pool.data.get("startTask"):
            data["startTask"] = node.pool.data["startTask"]
        data["endpointConfiguration"] = {
            "inboundEndpoints": [
                {
                    "name": "SSHRule.0",
                    "protocol": "tcp",
                    "publicIPAddress": "127.0.0.1",
                    "publicFQDN": "localhost",
                    "frontendPort": self.settings.remote_login_port,
                    "backendPort": 22,
                }
            ]
        }
        return data

    def _task_info(self, task: Task) -> dict[str, Any]:
        return {
            "taskUrl": task.data["url"],
            "jobId": task.job.id,
            "taskId": task.id,
            "taskState": task.state,
            "executionInfo": task.data.get("executionInfo"),
        }

    def node_counts(self) -> list[dict[str, Any]]:
        out = []
        for pool in self.pools.values():
            entry: dict[str, Any] = {"poolId": pool.id}
            for dedicated, key in ((True, "dedicated"), (False, "lowPriority")):
                counts = {name: 0 for name in NODE_STATES}
                for node in pool.nodes.values():
                    if node.data["isDedicated"] != dedicated:
                        continue
                    state = {s.lower(): s for s in NODE_STATES}.get(node.state, "unknown")
                    counts[state] += 1
                counts["total"] = sum(counts.values())
                entry[key] = counts
            out.append(entry)
        return out

    # ------------------------------------------------------------------ jobs
    def create_job(self, body: dict[str, Any]) -> Job:
        job_id = _require_id(body, "id")
        if job_id in self.jobs:
            if self.jobs[job_id].state == "deleting":
                raise BatchError("JobBeingDeleted")
            raise BatchError("JobExists")
        pool_info = body.get("poolInfo") or {}
        if not pool_info.get("poolId"):
            if pool_info.get("autoPoolSpecification"):
                raise BatchError(
                    "OperationNotSupported", "Auto pools are not supported by the emulator."
                )
            raise missing("poolInfo.poolId")
        data = dict(body)
        stamp = iso()
        data.setdefault("usesTaskDependencies", False)
        data.setdefault("priority", 0)
        data.setdefault("maxParallelTasks", -1)
        data.setdefault("allowTaskPreemption", False)
        data.setdefault("onAllTasksComplete", "noaction")
        data.setdefault("onTaskFailure", "noaction")
        constraints = dict(data.get("constraints") or {})
        constraints.setdefault("maxWallClockTime", INFINITE)
        constraints.setdefault("maxTaskRetryCount", 0)
        data["constraints"] = constraints
        data["onAllTasksComplete"] = str(data["onAllTasksComplete"]).lower()
        data["onTaskFailure"] = str(data["onTaskFailure"]).lower()
        data.update(
            url=f"{self.base_url}/jobs/{job_id}",
            creationTime=stamp,
            state="active",
            stateTransitionTime=stamp,
            executionInfo={"startTime": stamp, "poolId": pool_info["poolId"]},
        )
        _touch(data)
        job = Job(data, self._next_seq())
        self.jobs[job_id] = job
        self.jobs_by_pool.setdefault(job.pool_id, set()).add(job)
        self._mark_job(job)
        self._arm_job_deadline(job)
        return job

    def _arm_job_deadline(self, job: Job) -> None:
        """Job constraints.maxWallClockTime: the job is terminated when it runs out."""
        if job.deadline is not None:
            job.deadline.cancel()
            job.deadline = None
        try:
            limit = seconds(str((job.data.get("constraints") or {}).get("maxWallClockTime") or ""))
        except ValueError:
            return
        if limit is None:
            return
        started = parse_iso(str(job.data.get("creationTime")))
        remaining = limit - (now() - started).total_seconds()

        def expire() -> None:
            if self.jobs.get(job.id) is job and job.state in ("active", "disabled", "disabling"):
                self._complete_job(job, "MaxWallClockTimeExpiry")

        job.deadline = asyncio.get_running_loop().call_later(max(0.0, remaining), expire)

    def _mutable_job(self, job_id: str) -> Job:
        job = self.job(job_id)
        if job.state == "deleting":
            raise BatchError("JobBeingDeleted")
        if job.state in ("completed", "terminating"):
            raise BatchError("JobCompleted")
        return job

    def update_job(self, job_id: str, body: dict[str, Any], replace: bool) -> None:
        job = self._mutable_job(job_id)
        old_pool = job.pool_id
        if replace:
            for key in (
                "priority",
                "allowTaskPreemption",
                "maxParallelTasks",
                "constraints",
                "poolInfo",
                "onAllTasksComplete",
                "metadata",
            ):
                if key in body and body[key] is not None:
                    job.data[key] = body[key]
            if "metadata" not in body:
                job.data["metadata"] = []
        else:
            for key, value in body.items():
                if value is not None:
                    job.data[key] = value
        for key in ("onAllTasksComplete", "onTaskFailure"):
            job.data[key] = str(job.data.get(key, "noaction")).lower()
        constraints = job.data.setdefault("constraints", {})
        constraints.setdefault("maxWallClockTime", INFINITE)
        constraints.setdefault("maxTaskRetryCount", 0)
        self._arm_job_deadline(job)
        if job.pool_id != old_pool:
            self.jobs_by_pool.get(old_pool, set()).discard(job)
            self.jobs_by_pool.setdefault(job.pool_id, set()).add(job)
            job.data.setdefault("executionInfo", {})["poolId"] = job.pool_id
        _touch(job.data)
        self._mark_job(job)
        self._check_all_complete(job)
        self.kick()

    def disable_job(self, job_id: str, option: str) -> None:
        job = self._mutable_job(job_id)
        if job.state not in ("active", "disabling", "disabled"):
            raise BatchError("JobNotActive")
        option = (option or "requeue").lower()
        _set_state(job.data, "disabling")
        for task in [t for t in job.order if t is not None and t.state == "running"]:
            if option == "requeue":
                self._requeue(task)
            elif option == "terminate":
                self._end_task(task, "TaskEnded", "Task Was Ended by User Request")
        _set_state(job.data, "disabled")
        _touch(job.data)
        self._mark_job(job)

    def enable_job(self, job_id: str) -> None:
        job = self._mutable_job(job_id)
        if job.state not in ("disabled", "disabling", "active"):
            raise BatchError("JobNotActive")
        _set_state(job.data, "active")
        _touch(job.data)
        self._mark_job(job)
        self.kick()

    def terminate_job(self, job_id: str, reason: str | None) -> None:
        job = self.job(job_id)
        if job.state == "deleting":
            raise BatchError("JobBeingDeleted")
        if job.state == "completed":
            raise BatchError("JobCompleted")
        self._complete_job(job, reason or "UserTerminate")

    def _complete_job(self, job: Job, reason: str) -> None:
        _set_state(job.data, "terminating")
        for task in [t for t in job.order if t is not None and t.state == "running"]:
            self._end_task(task, "TaskEnded", "Task Was Ended by User Request")
        _set_state(job.data, "completed")
        info = job.data.setdefault("executionInfo", {})
        info["endTime"] = iso()
        info["terminateReason"] = reason
        _touch(job.data)
        self._mark_job(job)

    def delete_job(self, job_id: str) -> None:
        job = self.job(job_id)
        if job.state == "deleting":
            return
        _set_state(job.data, "deleting")
        _touch(job.data)
        for task in list(job.tasks.values()):
            if task.state == "running":
                task.token += 1
                if task.running:
                    task.running.kill("delete")
                self._release(task)
        self._mark_job(job)
        self._spawn(self._finish_job_delete(job))

    async def _finish_job_delete(self, job: Job) -> None:
        await asyncio.sleep(self.delay(DELETE_DELAY))
        if self.jobs.get(job.id) is not job:
            return
        del self.jobs[job.id]
        self.jobs_by_pool.get(job.pool_id, set()).discard(job)
        self.store.forget("job", job.id)
        for task in job.tasks.values():
            self.store.forget("task", f"{job.id}/{task.id}")
        dirs = [
            n.root / "workitems" / job.id for p in self.pools.values() for n in p.nodes.values()
        ]
        for d in dirs:
            await asyncio.to_thread(shutil.rmtree, d, True)

    def job_view(self, job: Job) -> dict[str, Any]:
        return job.data

    # ------------------------------------------------------------------ tasks
    def _check_new_task(self, job: Job, body: dict[str, Any]) -> str:
        task_id = _require_id(body, "id")
        if not body.get("commandLine"):
            raise missing("commandLine")
        if task_id in job.tasks:
            raise BatchError("TaskExists")
        if body.get("dependsOn") and not job.data.get("usesTaskDependencies"):
            raise BatchError("TaskDependenciesNotSpecifiedOnJob")
        slots = body.get("requiredSlots", 1)
        if not isinstance(slots, int) or slots < 1:
            raise invalid("requiredSlots", "must be a positive integer")
        pool = self.pools.get(job.pool_id)
        if pool is not None and slots > pool.slots_per_node:
            raise invalid("requiredSlots", "exceeds the pool's taskSlotsPerNode")
        _check_resource_files(body.get("resourceFiles"), "resourceFiles")
        multi = body.get("multiInstanceSettings")
        if multi is not None:
            instances = multi.get("numberOfInstances", 1)
            if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
                raise invalid(
                    "multiInstanceSettings.numberOfInstances", "must be a positive integer"
                )
            if not multi.get("coordinationCommandLine"):
                raise missing("multiInstanceSettings.coordinationCommandLine")
            _check_resource_files(
                multi.get("commonResourceFiles"), "multiInstanceSettings.commonResourceFiles"
            )
        for out in body.get("outputFiles") or []:
            if not out.get("filePattern"):
                raise missing("outputFiles.filePattern")
            if not ((out.get("destination") or {}).get("container") or {}).get("containerUrl"):
                raise missing("outputFiles.destination.container.containerUrl")
        constraints = body.get("constraints") or {}
        if constraints.get("maxWallClockTime"):
            try:
                seconds(constraints["maxWallClockTime"])
            except ValueError:
                raise invalid("constraints.maxWallClockTime", "not an ISO 8601 duration") from None
        return task_id

    def add_task(self, job_id: str, body: dict[str, Any]) -> Task:
        job = self._mutable_job(job_id)
        self._check_new_task(job, body)
        return self._insert_task(job, body, iso())

    def add_tasks(self, job_id: str, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        job = self._mutable_job(job_id)
        results = []
        stamp = iso()  # one request, one creation time (strftime twice per task: ~10% of an add)
        for body in values:
            try:
                self._check_new_task(job, body)
                task = self._insert_task(job, body, stamp)
                results.append(
                    {
                        "status": "success",
                        "taskId": task.id,
                        "eTag": task.data["eTag"],
                        "lastModified": task.data["lastModified"],
                        "location": task.data["url"],
                    }
                )
            except BatchError as exc:
                results.append(
                    {
                        "status": "clienterror",
                        "taskId": str(body.get("id", "")),
                        "error": {
                            "code": exc.code,
                            "message": {"lang": "en-US", "value": exc.message},
                            **(
                                {"values": [{"key": k, "value": v} for k, v in exc.values.items()]}
                                if exc.values
                                else {}
                            ),
                        },
                    }
                )
        return results

    def _insert_task(self, job: Job, body: dict[str, Any], stamp: str) -> Task:
        data = dict(body)
        job_constraints = job.data.get("constraints") or {}
        constraints = dict(data.get("constraints") or {})
        constraints.setdefault(
            "maxWallClockTime", job_constraints.get("maxWallClockTime", INFINITE)
        )
        constraints.setdefault("retentionTime", "P7D")
        constraints.setdefault("maxTaskRetryCount", job_constraints.get("maxTaskRetryCount", 0))
        data["constraints"] = constraints
        data.setdefault("requiredSlots", 1)
        data.update(
            url=f"{self.base_url}/jobs/{job.id}/tasks/{data['id']}",
            creationTime=stamp,
            state="active",
            stateTransitionTime=stamp,
            executionInfo={"retryCount": 0, "requeueCount": 0},
        )
        _touch(data, stamp)
        job.task_serial += 1
        task = Task(job, data, job.task_serial)
        job.tasks[task.id] = task
        task.pos = len(job.order)
        job.order.append(task)
        self._count(job, task, "active", +1)
        self._mark_task(task)
        self._register_dependencies(task)
        # A later task may be the parent a waiting range dependant is counting on.
        return task

    def _register_dependencies(self, task: Task) -> None:
        job = task.job
        deps = task.data.get("dependsOn")
        if not deps:
            task.pending = 0
            if not task.blocked:
                self._enqueue(task)
            return
        parents: set[str] = set(deps.get("taskIds") or [])
        for rng in deps.get("taskIdRanges") or []:
            parents.update(str(i) for i in range(int(rng["start"]), int(rng["end"]) + 1))
        parents.discard(task.id)
        task.pending = 0
        for parent_id in parents:
            parent = job.tasks.get(parent_id)
            if parent is not None and parent.state == "completed":
                if self._satisfies(parent):
                    continue
                task.blocked = True
                continue
            task.pending += 1
            job.waiters.setdefault(parent_id, []).append(task)
        if task.pending == 0 and not task.blocked:
            self._enqueue(task)

    def _satisfies(self, parent: Task) -> bool:
        info = parent.data.get("executionInfo") or {}
        action = parent.data.get("_dependencyAction")
        if action:
            return bool(action == "satisfy")
        return bool(info.get("result") == "success")

    def _enqueue(self, task: Task, front: bool = False) -> None:
        if task.queued:
            return
        task.queued = True
        if front:
            task.job.ready.appendleft(task)
        else:
            task.job.ready.append(task)
        self.kick()

    def _count(self, job: Job, task: Task, state: str, delta: int) -> None:
        bucket = "active" if state in ("active", "preparing") else state
        if bucket not in job.counts:
            return
        job.counts[bucket] += delta
        job.slot_counts[bucket] += delta * task.slots
        if bucket == "completed":
            result = (task.data.get("executionInfo") or {}).get("result")
            sub = "succeeded" if result == "success" else "failed"
            job.counts[sub] += delta
            job.slot_counts[sub] += delta * task.slots

    def _transition(self, task: Task, state: str) -> None:
        self._count(task.job, task, task.state, -1)
        _set_state(task.data, state)
        self._count(task.job, task, state, +1)
        _touch(task.data)
        self._mark_task(task)

    def task_counts(self, job_id: str) -> dict[str, Any]:
        job = self.job(job_id)
        return {"taskCounts": dict(job.counts), "taskSlotCounts": dict(job.slot_counts)}

    def update_task(self, job_id: str, task_id: str, body: dict[str, Any]) -> None:
        task = self.task(job_id, task_id)
        if task.state == "completed":
            raise BatchError("TaskCompleted")
        constraints = body.get("constraints")
        if constraints:
            task.data.setdefault("constraints", {}).update(
                {k: v for k, v in constraints.items() if v is not None}
            )
        _touch(task.data)
        self._mark_task(task)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        task = self.task(job_id, task_id)
        if task.state == "completed":
            return
        if task.state == "running":
            self._end_task(task, "TaskEnded", "Task Was Ended by User Request")
        else:
            task.queued = False
            info = task.data.setdefault("executionInfo", {})
            info.update(
                result="failure",
                endTime=iso(),
                failureInfo={
                    "category": "usererror",
                    "code": "TaskEnded",
                    "message": "Task Was Ended by User Request",
                },
            )
            self._transition(task, "completed")
            self._after_completion(task, satisfied=False, job_action="none")

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        task = self.task(job_id, task_id)
        info = task.data.get("executionInfo") or {}
        if task.state != "completed" or info.get("result") != "failure":
            raise BatchError(
                "TaskNotCompleted" if task.state != "completed" else "TaskCompleted",
                "Only a task that completed with a failure can be reactivated.",
                409,
            )
        if task.job.state in ("completed", "deleting", "terminating"):
            raise BatchError("JobCompleted")
        self._count(task.job, task, "completed", -1)
        task.data["executionInfo"] = {"retryCount": 0, "requeueCount": info.get("requeueCount", 0)}
        task.data.pop("_dependencyAction", None)
        _set_state(task.data, "active")
        self._count(task.job, task, "active", +1)
        _touch(task.data)
        self._mark_task(task)
        self._register_dependencies(task)

    def delete_task(self, job_id: str, task_id: str) -> None:
        task = self.task(job_id, task_id)
        job = task.job
        if task.state == "running":
            task.token += 1
            if task.running:
                task.running.kill("delete")
            self._release(task)
        task.queued = False
        self._count(job, task, task.state, -1)
        del job.tasks[task_id]
        job.order[task.pos] = None
        self.store.forget("task", f"{job.id}/{task.id}")
        self._check_all_complete(job)

    def task_view(self, task: Task) -> dict[str, Any]:
        if "_dependencyAction" in task.data or "_subtasks" in task.data:
            return {k: v for k, v in task.data.items() if not k.startswith("_")}
        return task.data

    def task_dir(self, task: Task) -> Path | None:
        info = task.data.get("nodeInfo")
        if not info:
            return None
        pool = self.pools.get(info.get("poolId", ""))
        node = pool.nodes.get(info.get("nodeId", "")) if pool else None
        root = (
            node.root if node else self._node_root(info.get("poolId", ""), info.get("nodeId", ""))
        )
        return root / "workitems" / task.job.id / "job-1" / task.id

    # ------------------------------------------------------------------ scheduling
    def kick(self) -> None:
        if not self._kicked and not self._closing:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._schedule)

    def _schedule(self) -> None:
        self._kicked = False
        for pool in self.pools.values():
            if pool.data.get("state") != "active":
                continue
            jobs = [
                j for j in self.jobs_by_pool.get(pool.id, ()) if j.state == "active" and j.ready
            ]
            if not jobs:
                continue
            nodes = [n for n in pool.nodes.values() if n.schedulable and n.free_slots > 0]
            if not nodes:
                continue
            jobs.sort(key=lambda j: (-j.priority, j.seq))
            for job in jobs:
                while job.ready and nodes:
                    if 0 <= job.max_parallel <= job.running:
                        break
                    task = job.ready[0]
                    if (
                        not task.queued
                        or task.state != "active"
                        or job.tasks.get(task.id) is not task
                    ):
                        job.ready.popleft()
                        task.queued = False if task.state != "active" else task.queued
                        continue
                    multi = task.data.get("multiInstanceSettings")
                    peers: list[Node] = []
                    if multi and not pool.data.get("enableInterNodeCommunication"):
                        # Batch never schedules a multi-instance task on such a pool.
                        job.ready.popleft()
                        task.queued = False
                        continue
                    if multi:
                        chosen = self._pick_empty_nodes(
                            nodes, int(multi.get("numberOfInstances") or 1)
                        )
                        if chosen is None:
                            break
                        node, peers = chosen[0], chosen[1:]
                    else:
                        picked = self._pick_node(nodes, task.slots, pool.fill)
                        if picked is None:
                            break
                        node = picked
                    job.ready.popleft()
                    task.queued = False
                    self._start_task(task, node, peers)
                    for used in (node, *peers):
                        if used.free_slots <= 0:
                            nodes.remove(used)
                if not nodes:
                    break

    @staticmethod
    def _pick_node(nodes: list[Node], slots: int, fill: str) -> Node | None:
        fits = [n for n in nodes if n.free_slots >= slots]
        if not fits:
            return None
        if fill == "pack":
            return min(fits, key=lambda n: n.free_slots)
        return max(fits, key=lambda n: n.free_slots)

    @staticmethod
    def _pick_empty_nodes(nodes: list[Node], count: int) -> list[Node] | None:
        """A multi-instance task takes `count` whole nodes (no other task beside an instance)."""
        empty = [n for n in nodes if n.used_slots == 0]
        return empty[:count] if len(empty) >= count else None

    @staticmethod
    def _held_slots(task: Task, node: Node) -> int:
        """Slots a task holds on a node: every slot for a multi-instance task's instance."""
        return node.pool.slots_per_node if task.data.get("multiInstanceSettings") else task.slots

    def _start_task(self, task: Task, node: Node, peers: list[Node] | None = None) -> None:
        job = task.job
        task.node = node
        task.peers = list(peers or [])
        for used in (node, *task.peers):
            used.running[(job.id, task.id)] = task
            used.used_slots += self._held_slots(task, used)
            if used.state == "idle":
                self._set_node_state(used, "running")
        job.running += 1
        info = task.data.setdefault("executionInfo", {})
        info["startTime"] = iso()
        for key in ("endTime", "exitCode", "failureInfo", "result"):
            info.pop(key, None)
        task_dir = _shared_dir(task, node)
        task.data["nodeInfo"] = _node_info(node, f"workitems/{job.id}/job-1/{task.id}")
        self._transition(task, "running")
        if task.data.get("containerSettings"):
            # No container engine here: the command runs on the host; the requested image is
            # recorded on the node (container-images.txt) and in containerInfo.
            image = str(task.data["containerSettings"].get("imageName", ""))
            task.data["executionInfo"]["containerInfo"] = {
                "containerId": f"{job.id}_{task.id}",
                "state": "running",
            }
            self._spawn(asyncio.to_thread(_record_image, node.root, job.id, task.id, image))
        token = task.token
        self._spawn(self._guard(task, token, self._run_task(task, node, token, task_dir)))
        if node.preempt_armed:
            node.preempt_armed = False
            asyncio.get_running_loop().call_later(
                self.delay(PREEMPT_DELAY), self._preempt_if, node, node.generation
            )

    async def _guard(self, task: Task, token: int, coro: Any) -> None:
        """A run that fails inside the emulator ends as a servererror, never stuck running."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._closing:
                return  # the shutdown interrupted it: requeued on restart
            log.exception("task %s/%s failed inside the emulator", task.job.id, task.id)
            if task.token == token and task.state == "running":
                self._finish_task(task, None, ("servererror", "EmulatorError", str(exc)), "run")

    async def _launch(
        self,
        command_line: str,
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        timeout: float | None,
        prepare: Callable[[], None] | None = None,
        keep_group: bool = False,
    ) -> process.Running:
        """Spawn on a worker thread, then watch the exit from the loop."""
        loop = asyncio.get_running_loop()
        pid = await loop.run_in_executor(
            self.spawner, self._spawn_tracked, command_line, cwd, env, stdout, stderr, prepare
        )
        running = process.watch(pid, timeout, keep_group)
        self.procs.add(running)
        running.done.add_done_callback(lambda _f: self._forget_process(running))
        return running

    def _spawn_tracked(
        self,
        command_line: str,
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        prepare: Callable[[], None] | None,
    ) -> int:
        """process.spawn on a worker thread, remembering the pid until it is reaped."""
        pid = process.spawn(command_line, cwd, env, stdout, stderr, prepare)
        with self._pid_lock:
            self._live_pids.add(pid)
            closing = self._closing
        if closing:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return pid

    def _forget_process(self, running: process.Running) -> None:
        self.procs.discard(running)
        with self._pid_lock:
            self._live_pids.discard(running.pid)

    def _task_env(
        self, task: Task, node: Node, task_dir: Path, instance: int = 0
    ) -> dict[str, str]:
        """The environment of a task's command (or of instance `instance` of a multi-instance
        task: 0 is the primary)."""
        env = self._node_env(node)
        env.update(
            {
                "AZ_BATCH_JOB_ID": task.job.id,
                "AZ_BATCH_TASK_ID": task.id,
                "AZ_BATCH_TASK_DIR": str(task_dir),
                "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
                "AZ_BATCH_TASK_USER": "_azbatch",
                "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": "1000000000",
            }
        )
        if task.data.get("multiInstanceSettings") and task.node is not None:
            env.update(_multi_instance_env([task.node, *task.peers], instance, task, node))
        env.update(_env_pairs(task.job.data.get("commonEnvironmentSettings")))
        env.update(_env_pairs(task.data.get("environmentSettings")))
        return env

    async def _run_task(self, task: Task, node: Node, token: int, task_dir: Path) -> None:
        wd = task_dir / "wd"
        dirs_made = False
        env = self._task_env(task, node, task_dir)
        failure: tuple[str, str, str] | None = None
        stage = "run"
        code: int | None = None
        timed_out = False
        limit = seconds(str((task.data.get("constraints") or {}).get("maxWallClockTime") or ""))
        if task.data.get("multiInstanceSettings"):
            dirs_made = True
            code, failure = await self._coordinate(task, token, limit)
            if task.token != token:
                return
            if code == 0:
                code = None  # the primary's command decides the exit code
        if code is None and failure is None and task.data.get("resourceFiles"):
            dirs_made = True
            try:
                await asyncio.to_thread(_download, task_dir, wd, task.data["resourceFiles"])
            except files.TransferError as exc:
                failure, stage = ("usererror", exc.code, exc.message), "preprocessing"
            except Exception as exc:
                failure, stage = (
                    ("usererror", "ResourceFileDownloadFailed", str(exc)),
                    "preprocessing",
                )
            if task.token != token:
                return
        if failure is None and code is None:
            try:
                running = await self._launch(
                    task.data["commandLine"],
                    wd,
                    env,
                    task_dir / "stdout.txt",
                    task_dir / "stderr.txt",
                    limit,
                    None if dirs_made else partial(process.make_dirs, task_dir, wd),
                )
            except process.LaunchError as exc:
                if task.token != token:
                    return
                failure = ("usererror", exc.code, exc.message)
            else:
                if task.token != token:
                    running.kill("abandoned")
                    return
                task.running = running
                code = await running.done
                task.running = None
                if task.token != token or self._closing:
                    return  # shutting down: the task stays running and is requeued on restart
                timed_out = running.killed_by == "timeout"
                if timed_out:
                    failure = (
                        "usererror",
                        "MaxWallClockTimeExpiry",
                        "The task exceeded its maximum wall clock time and was terminated",
                    )
        succeeded = failure is None and code == 0
        if task.data.get("outputFiles"):
            uploaded, errors = await asyncio.to_thread(
                files.upload, task.data["outputFiles"], wd, succeeded
            )
            await asyncio.to_thread(_write_lines, task_dir / "fileuploadout.txt", uploaded)
            await asyncio.to_thread(_write_lines, task_dir / "fileuploaderr.txt", errors)
            if task.token != token:
                return
            if errors and failure is None:
                failure, stage = ("usererror", "FileUploadFailed", errors[0]), "fileupload"
        self._finish_task(task, code, failure, stage)

    async def _coordinate(
        self, task: Task, token: int, limit: float | None
    ) -> tuple[int | None, tuple[str, str, str] | None]:
        """Batch's order for a multi-instance task: every instance (the primary, 0, and the
        subtasks 1..N-1) downloads the common resource files and runs the coordination command;
        the primary's command runs only once all of them exited 0. The first failure ends the
        other instances and is the task's outcome."""
        assert task.node is not None
        nodes = [task.node, *task.peers]
        stamp = iso()
        task.data["_subtasks"] = [
            {
                "id": i,
                "nodeInfo": _node_info(n, f"workitems/{task.job.id}/job-1/{task.id}/{i}"),
                "startTime": stamp,
                "state": "running",
                "stateTransitionTime": stamp,
            }
            for i, n in enumerate(nodes)
            if i > 0
        ]
        self._mark_task(task)
        failures: list[tuple[int | None, tuple[str, str, str] | None]] = []
        await asyncio.gather(
            *(self._coordinate_one(task, token, i, n, limit, failures) for i, n in enumerate(nodes))
        )
        return failures[0] if failures else (0, None)

    async def _coordinate_one(
        self,
        task: Task,
        token: int,
        index: int,
        node: Node,
        limit: float | None,
        failures: list[tuple[int | None, tuple[str, str, str] | None]],
    ) -> None:
        multi = task.data["multiInstanceSettings"]
        shared = _shared_dir(task, node)
        task_dir = shared if index == 0 else shared / str(index)
        # A subtask's only command is the coordination command: its stdout.txt. The primary's
        # stdout.txt belongs to its own command line.
        prefix = "coordination-" if index == 0 else ""
        code: int | None = None
        failure: tuple[str, str, str] | None = None
        try:
            await asyncio.to_thread(
                _prepare_instance, shared, task_dir / "wd", multi.get("commonResourceFiles") or []
            )
        except files.TransferError as exc:
            failure = ("usererror", exc.code, exc.message)
        except Exception as exc:
            failure = ("usererror", "ResourceFileDownloadFailed", str(exc))
        if failure is None and task.token == token:
            try:
                running = await self._launch(
                    str(multi["coordinationCommandLine"]),
                    task_dir / "wd",
                    self._task_env(task, node, task_dir, index),
                    task_dir / f"{prefix}stdout.txt",
                    task_dir / f"{prefix}stderr.txt",
                    limit,
                    keep_group=True,
                )
            except process.LaunchError as exc:
                failure = ("usererror", exc.code, exc.message)
            else:
                if task.token != token:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(running.pid, signal.SIGKILL)
                    return
                task.groups.append(running.pid)
                self._groups.add(running.pid)
                code = await running.done
                if not _group_alive(running.pid) and running.pid in task.groups:
                    # Nothing left in the background: forget the group id before the kernel
                    # can hand the number to another task's new session.
                    task.groups.remove(running.pid)
                    self._groups.discard(running.pid)
                if running.killed_by == "timeout":
                    failure = (
                        "usererror",
                        "MaxWallClockTimeExpiry",
                        "The task exceeded its maximum wall clock time and was terminated",
                    )
        if task.token != token:
            return
        ok = failure is None and code == 0
        if index > 0:
            sub = task.data["_subtasks"][index - 1]
            sub["endTime"] = iso()
            if code is not None:
                sub["exitCode"] = code
            sub["result"] = "success" if ok else "failure"
            if not ok:
                category, fcode, message = failure or (
                    "usererror",
                    "FailureExitCode",
                    "The task exited with an exit code representing a failure",
                )
                sub["failureInfo"] = {"category": category, "code": fcode, "message": message}
            _set_state(sub, "completed")
            self._mark_task(task)
        if not ok:
            failures.append((code, failure))
            for pgid in task.groups:  # the task has failed: end the other instances
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)

    def subtasks(self, job_id: str, task_id: str) -> list[dict[str, Any]]:
        """SubtaskInformation of the current (or last) run, one per non-primary instance."""
        return [dict(sub) for sub in self.task(job_id, task_id).data.get("_subtasks") or []]

    def _release(self, task: Task) -> None:
        node = task.node
        peers = task.peers
        task.node = None
        task.running = None
        task.peers = []
        self._end_instances(task)
        if node is None:
            return
        if node.running.pop((task.job.id, task.id), None) is not None:
            node.used_slots -= self._held_slots(task, node)
            task.job.running -= 1
        for peer in peers:
            if peer.running.pop((task.job.id, task.id), None) is not None:
                peer.used_slots -= self._held_slots(task, peer)
        for used in (node, *peers):
            if not used.running and used.state == "running":
                self._set_node_state(used, "idle")
        self.kick()

    def _end_instances(self, task: Task) -> None:
        """The primary is done (or the run abandoned): end what the coordination commands left
        running on every instance, and close subtasks still running."""
        for pgid in task.groups:
            self._groups.discard(pgid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        task.groups.clear()
        for sub in task.data.get("_subtasks") or []:
            if sub.get("state") != "completed":
                sub["endTime"] = iso()
                sub["result"] = "failure"
                sub["failureInfo"] = {
                    "category": "usererror",
                    "code": "TaskEnded",
                    "message": "The primary task ended before this subtask's coordination command",
                }
                _set_state(sub, "completed")

    def _requeue(self, task: Task) -> None:
        """Batch's answer to a lost node: the task goes back to active, requeueCount+1."""
        task.token += 1
        if task.running:
            task.running.kill("requeue")
        self._release(task)
        info = task.data.setdefault("executionInfo", {})
        info["requeueCount"] = info.get("requeueCount", 0) + 1
        info["lastRequeueTime"] = iso()
        task.data.pop("nodeInfo", None)
        task.data.pop("_subtasks", None)
        self._transition(task, "active")
        self._enqueue(task, front=True)

    def _end_task(self, task: Task, code: str, message: str) -> None:
        task.token += 1
        if task.running:
            task.running.kill("terminate")
        self._release(task)
        info = task.data.setdefault("executionInfo", {})
        info.update(
            endTime=iso(),
            result="failure",
            exitCode=137,
            failureInfo={"category": "usererror", "code": code, "message": message},
        )
        self._transition(task, "completed")
        self._after_completion(task, satisfied=False, job_action="none")

    def _finish_task(
        self, task: Task, code: int | None, failure: tuple[str, str, str] | None, stage: str
    ) -> None:
        node = task.node
        self._release(task)
        job = task.job
        info = task.data.setdefault("executionInfo", {})
        info["endTime"] = iso()
        if code is not None:
            info["exitCode"] = code
        if "containerInfo" in info:
            info["containerInfo"]["state"] = "exited"
        if node is not None:
            node.data["totalTasksRun"] = node.data.get("totalTasksRun", 0) + 1
            if failure is None and code == 0:
                node.data["totalTasksSucceeded"] = node.data.get("totalTasksSucceeded", 0) + 1
            self._mark_node(node)
        retries = int((task.data.get("constraints") or {}).get("maxTaskRetryCount") or 0)
        if (
            failure is None
            and code not in (0, None)
            and (retries == -1 or info.get("retryCount", 0) < retries)
        ):
            info["retryCount"] = info.get("retryCount", 0) + 1
            info["lastRetryTime"] = iso()
            self._transition(task, "active")
            if job.state == "active" or job.state in ("disabled", "disabling"):
                self._enqueue(task)
            return
        if failure is None and code == 0:
            info["result"] = "success"
            info.pop("failureInfo", None)
        else:
            info["result"] = "failure"
            category, fcode, message = failure or (
                "usererror",
                "FailureExitCode",
                "The task exited with an exit code representing a failure",
            )
            info["failureInfo"] = {"category": category, "code": fcode, "message": message}
        options = self._exit_options(task, code, stage)
        default_dep = "satisfy" if info["result"] == "success" else "block"
        dependency = str(options.get("dependencyAction") or default_dep).lower()
        task.data["_dependencyAction"] = dependency
        default_job = "none" if info["result"] == "success" else "terminate"
        job_action = str(options.get("jobAction") or default_job).lower()
        if job.data.get("onTaskFailure") != "performexitoptionsjobaction":
            job_action = "none"
        self._transition(task, "completed")
        self._after_completion(task, satisfied=dependency == "satisfy", job_action=job_action)

    @staticmethod
    def _exit_options(task: Task, code: int | None, stage: str) -> dict[str, Any]:
        cond = task.data.get("exitConditions") or {}
        if stage == "preprocessing":
            return dict(cond.get("preProcessingError") or cond.get("default") or {})
        if stage == "fileupload":
            return dict(cond.get("fileUploadError") or cond.get("default") or {})
        if code is not None:
            for mapping in cond.get("exitCodes") or []:
                if mapping.get("code") == code:
                    return dict(mapping.get("exitOptions") or {})
            for mapping in cond.get("exitCodeRanges") or []:
                if int(mapping.get("start", 0)) <= code <= int(mapping.get("end", -1)):
                    return dict(mapping.get("exitOptions") or {})
        return dict(cond.get("default") or {})

    def _after_completion(self, task: Task, satisfied: bool, job_action: str) -> None:
        job = task.job
        for waiter in job.waiters.pop(task.id, []):
            if waiter.state != "active" or job.tasks.get(waiter.id) is not waiter:
                continue
            if satisfied:
                waiter.pending -= 1
                if waiter.pending <= 0 and not waiter.blocked:
                    self._enqueue(waiter)
            else:
                waiter.blocked = True
                self._mark_task(waiter)
        if job_action == "terminate" and job.state in ("active", "disabled"):
            self._complete_job(job, "TaskFailed")
        elif job_action == "disable" and job.state == "active":
            self.disable_job(job.id, "requeue")
        self._check_all_complete(job)

    def _check_all_complete(self, job: Job) -> None:
        if (
            job.data.get("onAllTasksComplete") == "terminatejob"
            and job.state == "active"
            and job.tasks
            and job.counts["completed"] == len(job.tasks)
        ):
            self._complete_job(job, "AllTasksComplete")


def _check_resource_files(resource_files: list[dict[str, Any]] | None, key: str) -> None:
    for rf in resource_files or []:
        sources = [
            k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if rf.get(k)
        ]
        if len(sources) != 1:
            raise invalid(
                key, "exactly one of httpUrl, storageContainerUrl, autoStorageContainerName"
            )
        if rf.get("blobPrefix") and "httpUrl" in sources:
            raise invalid(f"{key}.blobPrefix", "only with a container source")
        if rf.get("httpUrl") and not rf.get("filePath"):
            raise missing(f"{key}.filePath")


def _download(task_dir: Path, wd: Path, resource_files: list[dict[str, Any]]) -> None:
    process.make_dirs(task_dir, wd)
    files.download(resource_files, wd)


def _shared_dir(task: Task, node: Node) -> Path:
    """A task's root directory on a node: the primary's task dir, AZ_BATCH_TASK_SHARED_DIR."""
    return node.root / "workitems" / task.job.id / "job-1" / task.id


def _node_info(node: Node, root: str) -> dict[str, Any]:
    return {
        "affinityId": node.data["affinityId"],
        "nodeUrl": node.data["url"],
        "poolId": node.pool.id,
        "nodeId": node.id,
        "taskRootDirectory": root,
        "taskRootDirectoryUrl": f"{node.data['url']}/files/{root}",
    }


def _multi_instance_env(nodes: list[Node], instance: int, task: Task, node: Node) -> dict[str, str]:
    """Batch's multi-instance variables. `nodes` holds the primary's node first; every
    emulated node has the address 127.0.0.1, so the host list repeats it once per instance."""
    hosts = [str(n.data.get("ipAddress") or "127.0.0.1") for n in nodes]
    return {
        "AZ_BATCH_NODE_LIST": ";".join(hosts),
        "AZ_BATCH_HOST_LIST": ",".join(hosts),
        "AZ_BATCH_MASTER_NODE": f"{hosts[0]}:6000",
        "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if instance == 0 else "false",
        "AZ_BATCH_TASK_SHARED_DIR": str(_shared_dir(task, node)),
    }


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare_instance(shared: Path, wd: Path, common: list[dict[str, Any]]) -> None:
    """An instance's directories; common resource files go to the shared (task root) dir."""
    wd.mkdir(parents=True, exist_ok=True)
    if common:
        files.download(common, shared)


def _node_dirs(root: Path, mounts: list[dict[str, Any]] | None) -> None:
    """Batch's node layout; each mount's relativeMountPath appears (empty) under fsmounts/."""
    for sub in ("startup/wd", "shared", "fsmounts", "workitems", "certs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for mount in mounts or []:
        for config in mount.values():
            rel = (
                str((config or {}).get("relativeMountPath") or "")
                if isinstance(config, dict)
                else ""
            )
            if rel and ".." not in Path(rel).parts and not Path(rel).is_absolute():
                (root / "fsmounts" / rel).mkdir(parents=True, exist_ok=True)


def _record_image(root: Path, job_id: str, task_id: str, image: str) -> None:
    with open(root / "container-images.txt", "a") as handle:
        handle.write(f"{iso()} {job_id}/{task_id} {image}\n")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _env_pairs(settings: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(s["name"]): str(s.get("value") or "") for s in settings or [] if s.get("name")}


def _require_id(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not value:
        raise missing(key)
    text = str(value)
    if _ASCII_ID.fullmatch(text):  # the common case, without a per-character loop
        return text
    if len(text) > 64 or not all(c.isalnum() or c in "-_" for c in text):
        raise invalid(key, "up to 64 letters, digits, hyphens and underscores")
    return text


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
