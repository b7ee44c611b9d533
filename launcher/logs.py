"""Task and start-task logs through the Batch file API: print once, or follow.

Following is ranged reads: the file's size from its properties (HEAD), then only the new
bytes (``ocp-range: bytes=OFFSET-END``), until the task has completed. The task's state is
read *before* each read, so the read after the one that saw "completed" gets everything
the task wrote: every byte arrives once and in order.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from launcher.errors import UserError

Write = Callable[[bytes], object]

# A 404 answer to HEAD (a task file not written yet) has no body, and the SDK logs a
# warning with a traceback for the error body it could not parse: noise for a user.
logging.getLogger("azure.batch._utils.model_base").setLevel(logging.ERROR)

#: The line the bootstrap script prints when a start-task step fails (startup_templates/base.sh.j2).
FAILED_STEP = re.compile(r"^batchlaunch: step '(?P<step>.*)' failed \((?P<what>.*)\)\s*$")
START_TASK_FILES = {"stdout": "startup/stdout.txt", "stderr": "startup/stderr.txt"}


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "").lower()


def _not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError)


class TaskFile:
    """One task file (``stdout.txt``) as the Batch file API serves it."""

    def __init__(self, batch: Any, job_id: str, task_id: str, name: str) -> None:
        self.batch, self.job_id, self.task_id, self.name = batch, job_id, task_id, name

    def size(self) -> int | None:
        """Its length now, or None while the task has not created it."""
        try:
            props = self.batch.get_task_file_properties(self.job_id, self.task_id, self.name)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        return int(props.content_length)

    def read(self, start: int = 0, end: int | None = None) -> Iterable[bytes]:
        """Bytes start..end (inclusive), or the whole file."""
        ranged = {"ocp_range": f"bytes={start}-{end}"} if end is not None else {}
        return self.batch.download_task_file(self.job_id, self.task_id, self.name, **ranged)

    def state(self) -> str:
        task = self.batch.get_task(self.job_id, self.task_id, select=["id", "state"])
        return _enum(task.state)

    def outcome(self) -> str | None:
        """Why a completed task failed (``failed (exit code 4)``), or None if it succeeded."""
        task = self.batch.get_task(self.job_id, self.task_id)
        info = getattr(task, "execution_info", None)
        code = getattr(info, "exit_code", None)
        failure = getattr(info, "failure_info", None)
        if _enum(getattr(info, "result", None)) != "failure" and code in (None, 0):
            return None
        parts = [f"exit code {code}"] if code is not None else []
        if failure is not None and failure.code != "FailureExitCode":  # that one says no more
            parts.append(f"{failure.code}: {failure.message}".strip(": "))
        return f"failed ({'; '.join(parts) or 'no exit code'})"


#: Asked while a task is still active (waiting for a node): a reason it never will get
#: one (every node of the pool failed its start task), or None.
Stuck = Callable[[], str | None]
#: How often `follow_task_file` asks `Stuck` (it lists the pool's nodes).
STUCK_CHECK_SECONDS = 5.0


def _task_errors(job_id: str, task_id: str, fn: Callable[[], int]) -> int:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    try:
        return fn()
    except ResourceNotFoundError as exc:
        code = getattr(getattr(exc, "error", None), "code", None) or "not found"
        raise UserError(
            f"logs: task {task_id} of run {job_id}: {code} (see `batchlaunch status {job_id}`)"
        ) from None
    except HttpResponseError as exc:
        raise UserError(f"logs: task {task_id} of run {job_id}: {exc.reason or exc}") from None


def print_task_file(
    batch: Any,
    job_id: str,
    task_id: str,
    name: str,
    write: Write,
    *,
    fallback: Callable[[], bytes | None] | None = None,
    stuck: Stuck | None = None,
) -> int:
    """Write the whole file once; the number of bytes.

    A completed task whose node no longer has the file (the pool shrank, the node was
    reimaged) is read through `fallback` (the copy uploaded to storage), if given. An
    active task that `stuck` says will never run is a `UserError` with its reason."""
    file = TaskFile(batch, job_id, task_id, name)

    def once() -> int:
        if file.size() is None:
            state = file.state()
            saved = fallback() if fallback is not None and state == "completed" else None
            if saved is not None:
                write(saved)
                return len(saved)
            if state == "completed":
                raise UserError(
                    f"logs: task {task_id} completed but its node no longer has {name}, "
                    "and no copy was uploaded to storage"
                )
            reason = stuck() if stuck is not None and state == "active" else None
            if reason:
                raise UserError(f"logs: task {task_id} has no {name} and is {state}: {reason}")
            raise UserError(
                f"logs: task {task_id} has no {name} yet (task is {state}); wait with --follow"
            )
        total = 0
        for chunk in file.read():
            write(chunk)
            total += len(chunk)
        return total

    return _task_errors(job_id, task_id, once)


def follow_task_file(
    batch: Any,
    job_id: str,
    task_id: str,
    name: str,
    write: Write,
    *,
    poll: float = 0.5,
    notice: Write | None = None,
    stuck: Stuck | None = None,
) -> int:
    """Write the file's bytes as they arrive, until the task completes; the byte count.

    A file that shrinks means the task was retried: `notice` is told and the new try's
    output follows from its start. While the task is active, `stuck` is asked every
    `STUCK_CHECK_SECONDS`; a reason is a `UserError` (rather than waiting forever)."""
    file = TaskFile(batch, job_id, task_id, name)

    def loop() -> int:
        offset = total = 0
        next_check = time.monotonic()
        while True:
            state = file.state()
            done = state == "completed"
            if state == "active" and stuck is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + STUCK_CHECK_SECONDS
                reason = stuck()
                if reason:
                    raise UserError(f"logs: task {task_id} is {state}: {reason}")
            size = file.size()
            if size is not None and size < offset:
                if notice is not None:
                    notice(f"[{name} started again: the task was retried]\n".encode())
                offset = 0
            if size is not None and size > offset:
                for chunk in file.read(offset, size - 1):
                    write(chunk)
                    offset += len(chunk)
                    total += len(chunk)
            if done:  # it had completed before `size` was read: nothing more will come
                return total
            time.sleep(poll)

    return _task_errors(job_id, task_id, loop)


# ---------------------------------------------------------------------------- start task
def start_task_failure(node: Any) -> str:
    """One line from an SDK node's startTaskInfo: exit code and failureInfo, if it failed."""
    info = getattr(node, "start_task_info", None)
    if info is None:
        return ""
    failure = getattr(info, "failure_info", None)
    parts = []
    if getattr(info, "exit_code", None) not in (None, 0):
        parts.append(f"exit code {info.exit_code}")
    if failure is not None:
        parts.append(f"{failure.code}: {failure.message}".strip(": "))
    return "; ".join(parts)


@dataclass(frozen=True)
class StartTaskLogs:
    """A node's start-task output and, when it failed, why."""

    node_id: str
    state: str
    files: dict[str, bytes]  # "stdout" / "stderr" -> content (absent when not on the node)
    failure: str  # startTaskInfo: exit code and failureInfo, "" when it did not fail
    failed_steps: list[tuple[str, str]]  # (step, what) from the bootstrap's failure lines


def start_task_logs(
    batch: Any, pool_id: str, node_id: str, which: Iterable[str] = ("stdout", "stderr")
) -> StartTaskLogs:
    """Read ``startup/stdout.txt`` / ``stderr.txt`` of a node and its startTaskInfo."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    try:
        node = batch.get_node(pool_id, node_id)
    except ResourceNotFoundError:
        raise UserError(
            f"logs --start-task: node {node_id} not found in pool {pool_id} "
            "(list nodes with `batchlaunch pool show PARAMS`)"
        ) from None
    except HttpResponseError as exc:
        raise UserError(f"logs --start-task: node {node_id}: {exc.reason or exc}") from None
    files: dict[str, bytes] = {}
    for kind in which:
        try:
            files[kind] = b"".join(
                batch.download_node_file(pool_id, node_id, START_TASK_FILES[kind])
            )
        except ResourceNotFoundError:
            continue
    info = getattr(node, "start_task_info", None)
    failed = _enum(getattr(info, "result", None)) == "failure" or _enum(node.state) == (
        "starttaskfailed"
    )
    steps = []
    for data in files.values():
        for line in data.decode("utf-8", errors="replace").splitlines():
            m = FAILED_STEP.match(line)
            if m and (m.group("step"), m.group("what")) not in steps:  # stdout may echo it
                steps.append((m.group("step"), m.group("what")))
    return StartTaskLogs(
        node_id=node_id,
        state=_enum(node.state),
        files=files,
        failure=(start_task_failure(node) or "start task failed") if failed else "",
        failed_steps=steps,
    )
