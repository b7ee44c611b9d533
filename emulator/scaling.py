"""Autoscale for the emulator's pools, on top of the formula language in `emulator.autoscale`.

Every pool gets a metric history sampled every 30 s (times `--time-scale`) from the live
counters; pools with autoscale on are evaluated at their interval (also scaled) and on
enable, and the result's targets start a resize, as Batch does.

Formulas see *simulated* time: samples are stamped, and `time()` answers, on a clock that
runs `1 / time_scale` times faster than the wall clock from the emulator's start, so a
`TimeInterval_Minute * 5` window holds ten samples however much time is accelerated. The
REST `autoScaleRun.timestamp` stays wall-clock time, like every other timestamp the
emulator serves.

A shrink (formula, resize or remove nodes) honours `nodeDeallocationOption` for the
running tasks of the nodes it removes (`Service._evict_tasks` / `_drop_node`): `requeue`
(the default) kills them and puts them back in the queue (`requeueCount` + 1);
`terminate` ends them as failed (`TaskEnded`), never to run again; `taskcompletion` lets
them finish while the node shows `leavingpool` and takes no new task; `retaineddata` does
the same, then keeps the node until the `constraints.retentionTime` of every task that ran
on it has passed since that task ended (Batch's default is 7 days; scaled by
`--time-scale`) or the task or its job is deleted.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from emulator.autoscale import (
    SAMPLE_PERIOD,
    FormulaSyntaxError,
    SampleHistory,
    evaluate_formula,
    parse_formula,
)
from emulator.errors import BatchError, invalid, missing
from emulator.util import now, seconds

if TYPE_CHECKING:
    from emulator.model import Pool
    from emulator.service import Service

HISTORY_SPAN = timedelta(hours=2)
MIN_INTERVAL, MAX_INTERVAL = 300.0, 168 * 3600.0


def check_formula(formula: str | None) -> str:
    """400 with the formula language's own error code when the formula cannot be parsed."""
    if not formula:
        raise missing("autoScaleFormula")
    try:
        parse_formula(formula)
    except FormulaSyntaxError as exc:
        raise BatchError(exc.code, str(exc), status=400, values={"Message": exc.message}) from None
    return formula


def check_interval(interval: str | None) -> str:
    text = interval or "PT15M"
    try:
        secs = seconds(text)
    except ValueError:
        raise invalid("autoScaleEvaluationInterval", "not an ISO 8601 duration") from None
    if secs is None or not MIN_INTERVAL <= secs <= MAX_INTERVAL:
        raise invalid("autoScaleEvaluationInterval", "must be between 5 minutes and 168 hours")
    return text


class AutoScaler:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.histories: dict[str, SampleHistory] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self._finished: dict[str, tuple[int, int]] = {}
        self._sampler: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._epoch = (now(), time.monotonic())

    def clock(self) -> datetime:
        """Simulated time: the wall clock at start, then `1 / time_scale` times faster."""
        start, mono = self._epoch
        scale = max(self.service.settings.time_scale, 1e-6)
        return start + timedelta(seconds=(time.monotonic() - mono) / scale)

    # -------------------------------------------------------------- sampling
    def start(self) -> None:
        for pool in self.service.pools.values():
            self.sample(pool)
            if pool.data.get("enableAutoScale"):
                self.arm(pool)
        self._schedule_sampling()

    def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def _schedule_sampling(self) -> None:
        """Ticks on a fixed grid (no drift): a window of N simulated minutes then holds
        2N samples, which `GetSample(..., pct)` and `GetSamplePercent` count on."""
        loop = asyncio.get_running_loop()
        period = max(SAMPLE_PERIOD.total_seconds() * self.service.settings.time_scale, 0.01)
        self._next_tick = max((self._next_tick or loop.time()) + period, loop.time())
        self._sampler = loop.call_at(self._next_tick, self._tick)

    def _tick(self) -> None:
        stamp = self.clock()
        for pool in list(self.service.pools.values()):
            self.sample(pool, stamp)
        self._schedule_sampling()

    def sample(self, pool: Pool, stamp: datetime | None = None) -> None:
        """One 30-second sample of every metric a formula can read, from O(1) counters.

        No VM is measured: `$CPUPercent` is the share of task slots in use on usable nodes,
        the byte/operation metrics are 0 and `$WallClockSeconds` is 30 s per node."""
        active = running = succeeded = failed = 0
        for job in self.service.jobs_by_pool.get(pool.id, ()):
            active += job.counts["active"]
            running += job.counts["running"]
            succeeded += job.counts["succeeded"]
            failed += job.counts["failed"]
        last_ok, last_failed = self._finished.get(pool.id, (succeeded, failed))
        self._finished[pool.id] = (succeeded, failed)
        nodes = list(pool.nodes.values())
        usable = sum(1 for n in nodes if n.state in ("idle", "running"))
        slots = max(1, usable * pool.slots_per_node)
        used = sum(n.used_slots for n in nodes)
        stamp = stamp or self.clock()
        history = self.histories.setdefault(pool.id, SampleHistory())
        values = {
            "ActiveTasks": active,
            "RunningTasks": running,
            "PendingTasks": active + running,
            "SucceededTasks": max(0, succeeded - last_ok),
            "FailedTasks": max(0, failed - last_failed),
            "CPUPercent": 100.0 * used / slots if usable else 0.0,
            "SampleNodeCount": len(nodes),
            "UsableNodeCount": usable,
            "PreemptedNodeCount": sum(1 for n in nodes if n.state == "preempted"),
            "WallClockSeconds": 30.0 * len(nodes),
            "MemoryBytes": 0.0,
            "DiskBytes": 0.0,
            "DiskReadBytes": 0.0,
            "DiskWriteBytes": 0.0,
            "DiskReadOps": 0.0,
            "DiskWriteOps": 0.0,
            "NetworkInBytes": 0.0,
            "NetworkOutBytes": 0.0,
            "CurrentDedicatedNodes": pool.data.get("currentDedicatedNodes", 0),
            "CurrentLowPriorityNodes": pool.data.get("currentLowPriorityNodes", 0),
            "TaskSlotsPerNode": pool.slots_per_node,
        }
        for metric, value in values.items():
            history.add(metric, stamp, float(value))
        history.trim(stamp - HISTORY_SPAN)

    def forget(self, pool_id: str) -> None:
        self.histories.pop(pool_id, None)
        self._finished.pop(pool_id, None)
        timer = self.timers.pop(pool_id, None)
        if timer:
            timer.cancel()

    # -------------------------------------------------------------- evaluation
    def evaluate(self, pool: Pool, formula: str) -> Any:
        history = self.histories.get(pool.id)
        if history is None:
            self.sample(pool)
            history = self.histories[pool.id]
        result = evaluate_formula(
            formula,
            history,
            self.clock(),
            target_dedicated=pool.data.get("targetDedicatedNodes") or 0,
            target_low_priority=pool.data.get("targetLowPriorityNodes") or 0,
            seed=self.service.settings.seed,
        )
        result.timestamp = now()
        return result

    def run(self, pool: Pool) -> None:
        """Evaluate the pool's formula now and apply the targets (Batch's periodic run)."""
        result = self.evaluate(pool, str(pool.data.get("autoScaleFormula", "")))
        pool.data["autoScaleRun"] = result.to_dict()
        if result.error is None:
            pool.data["targetDedicatedNodes"] = result.target_dedicated
            pool.data["targetLowPriorityNodes"] = result.target_low_priority
            # Compare with the nodes present, not the old targets: a resize that ran while
            # the targets moved may have left the pool short of (or over) them.
            present = [n for n in pool.nodes.values() if n.state != "leavingpool"]
            dedicated = sum(1 for n in present if n.data["isDedicated"])
            if (dedicated, len(present) - dedicated) != (
                result.target_dedicated,
                result.target_low_priority,
            ):
                self.service.start_allocation(pool, result.node_deallocation_option)
        self.service.pool_changed(pool)

    def arm(self, pool: Pool) -> None:
        old = self.timers.pop(pool.id, None)
        if old:
            old.cancel()
        interval = seconds(str(pool.data.get("autoScaleEvaluationInterval") or "PT15M")) or 900.0

        def fire() -> None:
            if self.service.pools.get(pool.id) is pool and pool.data.get("enableAutoScale"):
                self.run(pool)  # over the 30 s samples, as Batch does: no extra one
                self.arm(pool)

        delay = interval * self.service.settings.time_scale
        self.timers[pool.id] = asyncio.get_running_loop().call_later(delay, fire)
