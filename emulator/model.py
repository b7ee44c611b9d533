"""In-memory objects of the service: pools, nodes, jobs, tasks.

Each object keeps its REST representation in `data` (what GET returns, field names as in
the Batch JSON) plus the bookkeeping the scheduler needs: free slots, ready queues,
dependency waiters and per-state counters, so that no event needs a scan over all tasks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.process import Running

TASK_BUCKETS = ("active", "running", "completed", "succeeded", "failed")


class Pool:
    def __init__(self, data: dict[str, Any], seq: int) -> None:
        self.data = data
        self.seq = seq
        self.nodes: dict[str, Node] = {}
        self.node_serial = 0
        self.allocating = False

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def slots_per_node(self) -> int:
        return int(self.data.get("taskSlotsPerNode") or 1)

    @property
    def fill(self) -> str:
        return str(
            (self.data.get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread")
        ).lower()

    def snapshot(self) -> dict[str, Any]:
        return {"data": self.data, "seq": self.seq, "node_serial": self.node_serial}


class Node:
    def __init__(self, pool: Pool, data: dict[str, Any], root: Path) -> None:
        self.pool = pool
        self.data = data
        self.root = root
        self.running: dict[tuple[str, str], Task] = {}
        self.used_slots = 0
        self.users: dict[str, dict[str, Any]] = {}
        self.generation = 0  # bumped on reboot/removal so stale boot coroutines stop
        self.preempt_armed = False
        self.start_task_run: Running | None = None

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def free_slots(self) -> int:
        return self.pool.slots_per_node - self.used_slots

    @property
    def schedulable(self) -> bool:
        return (
            self.state in ("idle", "running")
            and self.data.get("schedulingState", "enabled") == "enabled"
        )

    def snapshot(self) -> dict[str, Any]:
        return {"data": self.data, "users": self.users}


class Job:
    def __init__(self, data: dict[str, Any], seq: int) -> None:
        self.data = data
        self.seq = seq
        self.tasks: dict[str, Task] = {}
        self.order: list[Task | None] = []  # insertion order, for paging (None = deleted)
        self.ready: deque[Task] = deque()
        self.waiters: dict[str, list[Task]] = {}
        self.counts = dict.fromkeys(TASK_BUCKETS, 0)
        self.slot_counts = dict.fromkeys(TASK_BUCKETS, 0)
        self.running = 0
        self.task_serial = 0
        self.deadline: asyncio.TimerHandle | None = None  # constraints.maxWallClockTime

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def pool_id(self) -> str:
        return str((self.data.get("poolInfo") or {}).get("poolId", ""))

    @property
    def priority(self) -> int:
        return int(self.data.get("priority") or 0)

    @property
    def max_parallel(self) -> int:
        value = self.data.get("maxParallelTasks")
        return -1 if value is None else int(value)

    def snapshot(self) -> dict[str, Any]:
        return {"data": self.data, "seq": self.seq}


class Task:
    __slots__ = (
        "blocked",
        "data",
        "groups",
        "job",
        "node",
        "peers",
        "pending",
        "pos",
        "queued",
        "running",
        "seq",
        "slots",
        "token",
    )

    def __init__(self, job: Job, data: dict[str, Any], seq: int) -> None:
        self.job = job
        self.data = data
        self.seq = seq
        self.slots = int(data.get("requiredSlots") or 1)
        self.pending = 0  # parents not yet satisfied
        self.blocked = False  # a parent finished in a way that blocks this task
        self.queued = False
        self.node: Node | None = None
        self.running: Running | None = None
        self.peers: list[Node] = []  # multi-instance: the subtasks' nodes, in subtask order
        self.groups: list[int] = []  # multi-instance: coordination process groups to end
        self.token = 0  # bumped whenever a run is abandoned (requeue, terminate, delete)
        self.pos = 0  # index in job.order

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    def snapshot(self) -> dict[str, Any]:
        return {"data": self.data, "seq": self.seq, "blocked": self.blocked}
