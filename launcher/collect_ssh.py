"""`collect --via ssh`: a run's outputs straight from the nodes' task directories over SFTP.

For outputs too large or too many for a blob round trip. Each task's node and directory
come from the task's ``nodeInfo``; one node user per node (`NodeAccess`), each node's files
over parallel SFTP channels, nodes in parallel. The same files as ``--via blob``, at the same
paths: each task's declared outputs (the run parameter file's ``outputs`` patterns, matched
as Batch OutputFiles match them) at ``OUT/RUN_ID/TASK_ID/<path in the working dir>``, and
stdout.txt/stderr.txt in ``OUT/RUN_ID/TASK_ID/logs/``. Undeclared files (inputs, scratch)
stay on the node. A file already there with the same size is not downloaded again.
"""

from __future__ import annotations

import contextlib
import re
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from launcher.errors import UserError

if TYPE_CHECKING:
    import paramiko

    from launcher.runs import RunRecord
    from launcher.ssh import Connection

#: Where Batch keeps task directories on Linux nodes (``AZ_BATCH_NODE_ROOT_DIR``); a node
#: whose SFTP does not have it (the emulator's, rooted at the node) is read relative to it.
LINUX_NODE_ROOT = "/mnt/batch/tasks"
LOGS_DIR = "logs"
LOG_FILES = ("stdout.txt", "stderr.txt")
_TOP = PurePosixPath()


@dataclass
class CollectResult:
    """Downloaded file and byte counts, and files skipped because they were already there."""

    files: int = 0
    bytes: int = 0
    skipped: int = 0
    #: tasks whose outputs are not on any node: not run yet, or their node or dir is gone
    missing: list[str] = field(default_factory=list)


def _segment(part: str) -> str:
    """One path segment of a file pattern as a regex: ``*``/``?``/``[...]`` never match
    ``/``, and a wildcard does not match a leading dot (as glob, which Batch's agent and the
    emulator use)."""
    out = "" if part.startswith(".") else r"(?!\.)"
    i = 0
    while i < len(part):
        c = part[i]
        i += 1
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = i + 1 if i < len(part) and part[i] in "!^" else i
            j = part.find("]", j + 1 if j < len(part) and part[j] == "]" else j)
            if j < 0:
                out += re.escape(c)
                continue
            body = part[i:j].replace("\\", "\\\\")
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out += f"(?!/)[{body}]"
            i = j + 1
        else:
            out += re.escape(c)
    return out


def output_matcher(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for a task's output patterns, matched against file paths relative to the
    working dir: ``*`` within a segment, ``**`` any number of directories, ``?``, ``[abc]``.
    None when there are no patterns (then only the logs are fetched)."""
    alternatives = []
    for pattern in patterns:
        parts = [p for p in pattern.replace("\\", "/").split("/") if p not in ("", ".")]
        regex = ""
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if part == "**":
                regex += r"(?:(?!\.)[^/]+/)*" + (r"(?!\.)[^/]+" if last else "")
            else:
                regex += _segment(part) + ("" if last else "/")
        if regex:
            alternatives.append(f"(?:{regex})")
    if not alternatives:
        return None
    return re.compile("(?:" + "|".join(alternatives) + r")\Z")


@dataclass(frozen=True)
class _TaskDir:
    task_id: str
    pool_id: str
    node_id: str
    root: str  # taskRootDirectory, relative to the node root
    outputs: re.Pattern[str] | None  # the declared output patterns; None: logs only


def _tasks(
    batch: Any, job_id: str, outputs: Mapping[str, Sequence[str]]
) -> tuple[list[_TaskDir], list[str]]:
    """Tasks that ran somewhere (with where), and those that did not."""
    from azure.core.exceptions import ResourceNotFoundError

    placed, missing = [], []
    try:
        tasks = list(batch.list_tasks(job_id, select=["id", "nodeInfo"]))
    except ResourceNotFoundError:
        raise UserError(f"collect: job {job_id} not found (was the run's job deleted?)") from None
    for task in tasks:
        info = task.node_info
        if info is None or not info.node_id or not info.task_root_directory:
            missing.append(str(task.id))
            continue
        placed.append(
            _TaskDir(
                str(task.id),
                str(info.pool_id),
                str(info.node_id),
                str(info.task_root_directory).replace("\\", "/").strip("/"),
                output_matcher(outputs.get(str(task.id), ())),
            )
        )
    return placed, sorted(missing)


def declared_outputs(record: RunRecord) -> dict[str, list[str]]:
    """Each task's ``outputs`` patterns from the run's parameter file."""
    return {t.id: list(t.outputs) for t in record.load_params().task_instances()}


def _node_ids(batch: Any, pool_id: str) -> set[str] | None:
    """The pool's node ids; None when the pool is gone."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return {str(n.id) for n in batch.list_nodes(pool_id, select=["id"])}
    except ResourceNotFoundError:
        return None


def _walk(
    sftp: paramiko.SFTPClient, root: PurePosixPath, rel: PurePosixPath = _TOP
) -> Iterator[tuple[PurePosixPath, int]]:
    """(relative path, size) of the regular files under root; directory symlinks not
    followed, names that could leave the download directory refused."""
    from launcher.ssh.connection import safe_remote_name

    for attr in sorted(sftp.listdir_attr(str(root / rel)), key=lambda a: a.filename):
        child = rel / safe_remote_name(attr.filename, root / rel)
        mode = attr.st_mode or 0
        if stat.S_ISLNK(mode):
            try:
                target = sftp.stat(str(root / child))
            except OSError:
                continue
            if stat.S_ISREG(target.st_mode or 0):
                yield child, int(target.st_size or 0)
        elif stat.S_ISDIR(mode):
            yield from _walk(sftp, root, child)
        elif stat.S_ISREG(mode):
            yield child, int(attr.st_size or 0)


def _task_root(sftp: paramiko.SFTPClient, relative: str) -> PurePosixPath:
    """The task dir as this node's SFTP names it: under the Linux node root, else relative
    to where SFTP starts."""
    for candidate in (f"{LINUX_NODE_ROOT}/{relative}", relative):
        try:
            if stat.S_ISDIR(sftp.stat(candidate).st_mode or 0):
                return PurePosixPath(candidate)
        except OSError:
            continue
    raise FileNotFoundError(relative)


def _plan(
    conn: Connection, tasks: list[_TaskDir], target: Path
) -> tuple[list[tuple[str, Path, int]], int, list[str]]:
    """(remote, local, size) to fetch from one node, how many are already here, and tasks
    whose directory is gone from the node."""
    todo: list[tuple[str, Path, int]] = []
    skipped = 0
    gone = []
    sftp = conn.sftp
    for task in tasks:
        try:
            root = _task_root(sftp, task.root)
        except FileNotFoundError:
            gone.append(task.task_id)
            continue
        files: list[tuple[PurePosixPath, Path, int]] = []
        for name in LOG_FILES:
            try:
                size = int(sftp.stat(str(root / name)).st_size or 0)
            except OSError:
                continue
            files.append((PurePosixPath(name), Path(LOGS_DIR, name), size))
        listed: list[tuple[PurePosixPath, int]] = []
        if task.outputs is not None:
            with contextlib.suppress(FileNotFoundError):  # no wd: only logs
                listed = list(_walk(sftp, root / "wd"))
        for rel, size in listed:
            if task.outputs is not None and task.outputs.match(str(rel)):
                files.append((PurePosixPath("wd") / rel, Path(*rel.parts), size))
        for remote_rel, local_rel, size in files:
            local = target / task.task_id / local_rel
            if local.is_file() and local.stat().st_size == size:
                skipped += 1
            else:
                todo.append((str(root / remote_rel), local, size))
    return todo, skipped, gone


def collect_via_ssh(
    record: RunRecord,
    out_dir: Path,
    *,
    max_workers: int = 8,
    progress: bool = True,
    outputs: Mapping[str, Sequence[str]] | None = None,
) -> CollectResult:
    """Download every task's declared outputs and logs of `record`'s run into
    ``out_dir/RUN_ID/``. `outputs` (task id -> patterns) defaults to the run's parameter
    file. A `UserError` when the nodes the tasks ran on are all gone (the pool was deleted
    or shrank): their task directories went with them, the blob copies did not."""
    from launcher.ssh import NodeAccess

    batch = record.client().batch
    if outputs is None:
        outputs = declared_outputs(record)
    placed, missing = _tasks(batch, record.job_id, outputs)
    result = CollectResult(missing=missing)
    target = Path(out_dir) / record.run_id
    by_node: dict[tuple[str, str], list[_TaskDir]] = {}
    for task in placed:
        by_node.setdefault((task.pool_id, task.node_id), []).append(task)
    pools = sorted({pool for pool, _ in by_node})
    reached = 0
    for pool_id in pools:
        alive = _node_ids(batch, pool_id)
        if alive is None:
            raise UserError(
                f"collect --via ssh: pool {pool_id} is gone, and with its nodes the task "
                f"directories of run {record.run_id}; use `batchlaunch collect "
                f"{record.run_id} --via blob` (the copies uploaded when the tasks ended)"
            )
        nodes = []
        for where, tasks in sorted(by_node.items()):
            if where[0] != pool_id:
                continue
            if where[1] in alive:
                nodes.append(where[1])
            else:  # the node left the pool (autoscale, deletion): its outputs went with it
                result.missing.extend(t.task_id for t in tasks)
        if not nodes:
            continue
        reached += len(nodes)
        with NodeAccess(batch, pool_id, nodes, max_workers=max_workers) as access:

            def plan(node: str, pool_id: str = pool_id) -> tuple[list[Any], int, list[str]]:
                return _plan(access.connections[node], by_node[(pool_id, node)], target)

            with ThreadPoolExecutor(max(1, min(max_workers, len(nodes)))) as workers:
                plans = dict(zip(nodes, workers.map(plan, nodes), strict=True))
            for _, skipped, gone in plans.values():
                result.skipped += skipped
                result.missing.extend(gone)
            _download(access.connections, plans, result, max_workers, progress)
        for warning in access.cleanup_errors:  # the users expire anyway
            sys.stderr.write(f"warning: {warning}\n")
    if placed and not reached:
        raise UserError(
            f"collect --via ssh: every node run {record.run_id}'s tasks ran on has left pool "
            f"{', '.join(pools)}, and with them the task directories; use `batchlaunch "
            f"collect {record.run_id} --via blob` (the copies uploaded when the tasks ended)"
        )
    result.missing.sort()
    return result


def _download(
    conns: dict[str, Connection],
    plans: dict[str, tuple[list[tuple[str, Path, int]], int, list[str]]],
    result: CollectResult,
    max_workers: int,
    progress: bool,
) -> None:
    """All nodes at once, each over up to `max_workers` SFTP channels, one progress bar."""
    import threading

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    total = sum(size for todo, _, _ in plans.values() for _, _, size in todo)
    lock = threading.Lock()
    bar = Progress(
        TextColumn("collect over ssh"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("files", total=total)

        def on_file(remote: str, local: Path) -> None:
            size = local.stat().st_size
            with lock:
                result.files += 1
                result.bytes += size
            bar.advance(task, size)

        def node(node_id: str) -> None:
            todo = plans[node_id][0]
            if todo:
                pairs = [(remote, local) for remote, local, _ in todo]
                conns[node_id].get_many(pairs, max_workers=max_workers, on_file=on_file)

        with ThreadPoolExecutor(max(1, min(max_workers, len(plans)))) as pool:
            list(pool.map(node, plans))
