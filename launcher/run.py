"""Parameter-file runs: pool, inputs, job, tasks, progress, outputs, summary.

One run is one Batch job whose id is the run id. Everything a run does is idempotent, so
``batchlaunch run PARAMS --run-id ID`` after a crash (or a SIGKILL mid-submission) picks up
where the first attempt stopped: the pool and job are reused, tasks that exist are not
added again, and outputs already on disk are not downloaded again.

Storage layout of a run (in the parameter file's container)::

    cas/<sha256>/<name>                    resource files, uploaded once while unchanged
    runs/<RUN_ID>/<TASK_ID>/<output>       each task's outputs (OutputFiles)
    runs/<RUN_ID>/<TASK_ID>/logs/std*.txt  each task's stdout and stderr

which `collect` mirrors into ``OUT/<RUN_ID>/<TASK_ID>/``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import shlex
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import UserError
from launcher.runs import RunRecord, check_run_id, load_run, new_run_id, record_path

if TYPE_CHECKING:
    from launcher.client import Client, FailedTask, JobSummary, NodeFailure, TaskCounts, TaskSpec
    from launcher.params import Params, TaskInstance

#: Inputs must stay readable while tasks may still start: the job's limit plus this margin.
SAS_MARGIN = timedelta(hours=2)
#: Without a job time limit, SAS URLs last this long (never the 999 hours of older tools).
DEFAULT_SAS_LIFETIME = timedelta(days=2)
LOGS_DIR = "logs"


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}"


def task_prefix(run_id: str, task_id: str) -> str:
    return f"{run_prefix(run_id)}/{task_id}"


def sas_lifetime(params: Params) -> timedelta:
    """How long the run's SAS URLs stay valid: the job's wall-clock limit plus a margin."""
    minutes = params.job.max_wall_clock_minutes
    return timedelta(minutes=minutes) + SAS_MARGIN if minutes else DEFAULT_SAS_LIFETIME


def _has_wildcard(pattern: str) -> bool:
    return glob.has_magic(pattern)


def output_blob_path(prefix: str, pattern: str) -> str:
    """Where an output pattern's files go, so that they keep their working-dir layout.

    Batch uploads a literal pattern to the blob named by the path, and a wildcard pattern's
    files under the path by their names below the pattern's fixed directories. Adding those
    fixed directories back gives ``out/*.txt`` -> ``PREFIX/out/NAME.txt``, the same place
    ``out/NAME.txt`` would go.
    """
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if not _has_wildcard(pattern):
        return "/".join([prefix, *parts])
    fixed = []
    for part in parts[:-1]:
        if _has_wildcard(part):
            break
        fixed.append(part)
    return "/".join([prefix, *fixed])


@dataclass
class Submission:
    """What `submit_run` did: how many tasks it added and how many already existed."""

    record: RunRecord
    added: int
    existing: int
    pool_created: bool
    seconds: float
    #: A resumed run whose task definitions (or resource files) changed since it started:
    #: tasks already submitted keep their old definition.
    definitions_changed: bool = False
    retried: int = 0


@dataclass
class CollectResult:
    """What `collect_run` downloaded into ``out_dir/RUN_ID``."""

    directory: Path
    downloaded: int
    skipped: int
    bytes: int
    #: Blob names under the run's prefix (what the tasks uploaded).
    blobs: list[str] = field(default_factory=list)


def unmatched_outputs(
    run_id: str, tasks: Iterable[TaskInstance], blobs: Iterable[str], skip: set[str]
) -> dict[str, list[str]]:
    """Output patterns that uploaded nothing, with the tasks concerned (``skip``: tasks that
    failed or never ran, whose outputs are missing for a reason already reported).

    Batch says nothing when a pattern matches no file, so a typo in `outputs` or a script
    writing elsewhere would otherwise look like a success with missing results."""
    names = sorted(blobs)
    missing: dict[str, list[str]] = {}
    for task in tasks:
        if task.id in skip:
            continue
        prefix = task_prefix(run_id, task.id)
        for pattern in task.outputs:
            path = output_blob_path(prefix, pattern)
            if _has_wildcard(pattern):
                found = any(
                    n.startswith(path + "/") and not n.startswith(f"{prefix}/{LOGS_DIR}/")
                    for n in names
                )
            else:
                found = path in names
            if not found:
                missing.setdefault(pattern, []).append(task.id)
    return missing


@dataclass
class RunReport:
    """The end of a followed run: counts, failures and collected outputs."""

    record: RunRecord
    summary: JobSummary | None
    counts: TaskCounts
    failed: list[FailedTask] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    collected: CollectResult | None = None
    #: Nodes whose start task failed (all of them when `pool_unusable`).
    node_failures: list[NodeFailure] = field(default_factory=list)
    pool_unusable: bool = False
    #: Output patterns that matched no file, by pattern, with the (successful) tasks.
    missing_outputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.counts.failed == 0
            and not self.blocked
            and self.counts.done
            and not self.pool_unusable
        )


class TaskBuilder:
    """Turns expanded `TaskInstance`s into Client `TaskSpec`s, uploading inputs once.

    Resource files are content-addressed: the same local file used by 10,000 tasks is one
    HEAD request (plus one upload when it changed) and one SAS URL.
    """

    def __init__(self, client: Client, run_id: str, lifetime: timedelta) -> None:
        self.client = client
        self.run_id = run_id
        self.lifetime = lifetime
        self._resources: dict[str, dict[str, str]] = {}
        self._write_url: str | None = None
        self._read_url: str | None = None
        #: Each task's declared outputs by id (for `parent_outputs`).
        self.outputs_of: dict[str, list[str]] | None = None
        from launcher.client import TaskSpec

        self._task_spec = TaskSpec  # spec() runs once per task: no import statement there

    def resource(self, source: str) -> dict[str, str]:
        if source not in self._resources:
            if source.startswith(("http://", "https://")):
                name = source.rsplit("/", 1)[-1].split("?", 1)[0] or "download"
                self._resources[source] = {"httpUrl": source, "filePath": name}
            else:
                self._resources[source] = self.client.resource_file(
                    Path(source), expiry=self.lifetime
                )
        return self._resources[source]

    def output(self, pattern: str, blob_path: str) -> dict[str, Any]:
        if self._write_url is None:  # one SAS for the whole run, not one per task
            self._write_url = self.client.store.container_write_url(self.lifetime)
        return self.client.output_file(pattern, blob_path, container_url=self._write_url)

    def outputs_for(self, task: TaskInstance) -> list[dict[str, Any]]:
        prefix = task_prefix(self.run_id, task.id)
        files = [
            self.output(pattern, output_blob_path(prefix, pattern)) for pattern in task.outputs
        ]
        files.append(self.output("../std*.txt", f"{prefix}/{LOGS_DIR}"))
        return files

    def parent_inputs(self, task: TaskInstance) -> list[dict[str, str]]:
        """Resource files for the declared outputs of the task's parents.

        The blobs do not exist yet when the task is submitted; Batch fetches resource files
        when the task starts, which is after its parents completed. Each lands at
        ``DIR/PARENT/PATH``, PATH being where the parent wrote it. A literal output is one
        blob; a wildcard one is the parent's blobs under the pattern's fixed directories,
        which Batch writes under their full names (``DIR/runs/RUN_ID/PARENT/...``) and
        `parent_relocation` moves into place before the command runs.
        """
        if not task.parent_outputs or self.outputs_of is None:
            return []
        files = []
        for parent in task.depends_on:
            prefix = task_prefix(self.run_id, parent)
            for pattern in self.outputs_of.get(parent, []):
                blob = output_blob_path(prefix, pattern)
                if _has_wildcard(pattern):
                    files.append(
                        {
                            "storageContainerUrl": self._read_container_url(),
                            "blobPrefix": blob + "/",
                            "filePath": task.parent_outputs,
                        }
                    )
                    continue
                files.append(
                    {
                        "httpUrl": self.client.store.read_url(blob, self.lifetime),
                        "filePath": f"{task.parent_outputs}/{parent}/{blob[len(prefix) + 1 :]}",
                    }
                )
        return files

    def parent_relocation(self, task: TaskInstance) -> str:
        """Shell lines that move wildcard parent outputs from their full blob names to
        ``DIR/PARENT/...`` (empty when no parent output has a wildcard)."""
        if not task.parent_outputs or self.outputs_of is None:
            return ""
        if not any(
            _has_wildcard(p) for parent in task.depends_on for p in self.outputs_of.get(parent, [])
        ):
            return ""
        target = shlex.quote(task.parent_outputs)
        landed = shlex.quote(f"{task.parent_outputs}/{run_prefix(self.run_id)}")
        top = shlex.quote(f"{task.parent_outputs}/{run_prefix(self.run_id).split('/')[0]}")
        return f"if [ -d {landed} ]; then cp -a {landed}/. {target}/ && rm -rf {top}; fi\n"

    def _read_container_url(self) -> str:
        if self._read_url is None:
            self._read_url = self.client.store.container_read_url(self.lifetime)
        return self._read_url

    def spec(self, task: TaskInstance) -> TaskSpec:
        return self._task_spec(
            command=self.parent_relocation(task) + task.command,
            task_id=task.id,
            depends_on=tuple(task.depends_on),
            depends_on_range=task.depends_on_range,
            run_dependents_on_failure=task.run_dependents_on_failure,
            container_image=task.container_image,
            timeout_minutes=task.max_wall_clock_minutes,
            max_retries=task.max_task_retries,
            resource_files=[self.resource(f) for f in task.resource_files]
            + self.parent_inputs(task),
            output_files=self.outputs_for(task),
            environment=task.environment,
            nodes=task.nodes,
            coordination_command=task.coordination_command,
        )


def existing_task_ids(client: Client, job_id: str) -> set[str]:
    """Ids of the job's tasks (one paged list with ``$select=id``)."""
    return {str(t.id) for t in client.batch.list_tasks(job_id, select=["id"])}


def _prepare_record(
    params: Params, run_id: str | None, out_dir: Path | None
) -> tuple[RunRecord, bool]:
    """A new record, or the saved one when resuming ``run_id``; (record, resumed)."""
    if params.path is None:
        raise UserError("a run needs a parameter file on disk (params.path is not set)")
    if run_id is not None:
        check_run_id(run_id)
        if record_path(run_id).is_file():
            record = load_run(run_id)
            if Path(record.params_path) != params.path.resolve():
                raise UserError(
                    f"run {run_id!r} was started from {record.params_path}, not {params.path};"
                    " use the same parameter file or another --run-id"
                )
            if out_dir is not None:
                record.out_dir = str(out_dir.resolve())
            return record, True
    run_id = run_id or new_run_id(params.job.id)
    record = RunRecord(
        run_id=run_id,
        job_id=run_id,
        pool_id=params.pool.id,
        params_path=str(params.path.resolve()),
        out_dir=str((out_dir or Path("out")).resolve()),
        storage_prefix=run_prefix(run_id),
    )
    return record, False


def tasks_digest(tasks: Iterable[TaskInstance]) -> str:
    """A fingerprint of the task definitions, resource file contents included, so a resumed
    run can tell that the parameter file or a script changed since it started."""
    from operator import attrgetter

    from launcher.params import TaskInstance

    # Every field of every task in one encoder call (a field added to TaskInstance joins the
    # fingerprint by itself); dataclasses.asdict per task took 0.6 s for 10,000 tasks.
    fields = attrgetter(*(f.name for f in dataclasses.fields(TaskInstance)))
    tasks = list(tasks)
    encode = json.JSONEncoder(sort_keys=True, default=str).encode
    digest = hashlib.sha256(encode([fields(task) for task in tasks]).encode())
    seen: dict[str, str] = {}
    for task in tasks:
        for source in task.resource_files:
            if source not in seen:
                path = Path(source)
                seen[source] = (
                    hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else source
                )
            digest.update(seen[source].encode())
    return digest.hexdigest()


def _failed_and_dependants(client: Client, job_id: str, tasks: list[TaskInstance]) -> set[str]:
    """Failed tasks of the job plus every task that (transitively) depends on one of them
    and has not succeeded: what `--retry-failed` deletes and adds again."""
    outcome: dict[str, str] = {}
    for task in client.batch.list_tasks(job_id, select=["id", "state", "executionInfo"]):
        info = task.execution_info
        result = getattr(getattr(info, "result", None), "value", getattr(info, "result", None))
        outcome[str(task.id)] = str(result or "")
    redo = {task_id for task_id, result in outcome.items() if result == "failure"}
    changed = True
    while changed:
        changed = False
        for task in tasks:
            if task.id in redo or outcome.get(task.id) == "success":
                continue
            if any(dep in redo for dep in task.depends_on):
                redo.add(task.id)
                changed = True
    return redo


def submit_run(
    params: Params,
    *,
    run_id: str | None = None,
    out_dir: Path | None = None,
    client: Client | None = None,
    max_concurrency: int = 8,
    retry_failed: bool = False,
    say: Callable[[str], None] = lambda _msg: None,
) -> Submission:
    """Ensure the pool, create the job and add every task not yet there; return at once.

    ``retry_failed`` (a resumed run): delete the failed tasks, and those waiting on them,
    and add them again with the parameter file's current definitions.
    """
    from launcher.client import Client

    started = time.monotonic()
    client = client or Client(params)
    record, resumed = _prepare_record(params, run_id, out_dir)
    tasks = params.task_instances()
    if not tasks:
        raise UserError(
            "[[tasks]]: no tasks; add at least one [[tasks]] entry (functions are run from "
            "Python with launcher.BatchExecutor instead)"
        )
    record.task_count = len(tasks)
    digest = tasks_digest(tasks)
    previous_digest = record.extra.get("tasks_digest")
    record.extra["tasks_digest"] = digest
    record.save()  # before any remote work, so a killed run can be resumed by id

    say(f"pool {record.pool_id}: ensuring it exists")
    pool = client.create_pool()
    if pool.created:
        record.pool_created_by_run = True
        record.save()
    lifetime = sas_lifetime(params)
    # Terminate-on-complete is set only once every task is in (`seal_job`): set earlier, the
    # job could end while later chunks are still being added.
    client.create_job(
        record.job_id, record.pool_id, exist_ok=True, mark_complete_after_tasks_run=False
    )
    present = existing_task_ids(client, record.job_id) if resumed or not pool.created else set()
    retried: set[str] = set()
    if retry_failed and present:
        retried = _failed_and_dependants(client, record.job_id, tasks) & present
        if retried:
            say(f"job {record.job_id}: retrying {len(retried)} failed or blocked task(s)")
            with ThreadPoolExecutor(max_workers=max_concurrency) as pool_of_threads:
                list(
                    pool_of_threads.map(
                        lambda task_id: client.batch.delete_task(record.job_id, task_id),
                        sorted(retried),
                    )
                )
            present -= retried
            for task_id in retried:  # their old outputs, in storage and downloaded
                client.store.delete_prefix(task_prefix(record.run_id, task_id) + "/")
                shutil.rmtree(Path(record.out_dir) / record.run_id / task_id, ignore_errors=True)
    todo = [t for t in tasks if t.id not in present]
    say(f"job {record.job_id}: {len(todo)} task(s) to add, {len(tasks) - len(todo)} present")
    if todo:
        builder = TaskBuilder(client, record.run_id, lifetime)
        builder.outputs_of = {t.id: t.outputs for t in tasks}
        # A generator: each task is built while earlier chunks are in flight (the ids are
        # unique, the parameter file was validated).
        client.add_tasks(
            record.job_id, (builder.spec(t) for t in todo), max_concurrency=max_concurrency
        )
    if params.job.on_all_tasks_complete == "terminatejob":
        client.seal_job(record.job_id)
    return Submission(
        record=record,
        added=len(todo),
        existing=len(tasks) - len(todo),
        pool_created=pool.created,
        seconds=time.monotonic() - started,
        definitions_changed=bool(
            resumed
            and previous_digest
            and previous_digest != digest
            and len(todo) < len(tasks)
            and not retry_failed
        ),
        retried=len(retried),
    )


def collect_run(record: RunRecord, client: Client, out_dir: Path | None = None) -> CollectResult:
    """Mirror the run's outputs and logs into ``OUT/RUN_ID/``; existing files are skipped."""
    target = Path(out_dir or record.out_dir) / record.run_id
    prefix = record.storage_prefix + "/"
    blobs = client.store.list_blobs(prefix)
    fetched = client.store.download_prefix(prefix, target, skip_existing=True)
    size = sum(p.stat().st_size for p in fetched if p.is_file())
    return CollectResult(
        target, len(fetched), len(blobs) - len(fetched), size, [b.name for b in blobs]
    )


def follow_run(
    record: RunRecord,
    client: Client,
    *,
    progress: bool = True,
    timeout: float | None = None,
    collect: bool = True,
    tasks: list[TaskInstance] | None = None,
) -> RunReport:
    """Follow the job to the end (one task-counts request per poll), then collect."""
    summary = client.monitor_job(
        record.job_id,
        timeout,
        progress=progress,
        expected_tasks=record.task_count,
        pool_id=record.pool_id,
    )
    failed = (
        client.failed_tasks(record.job_id, logs_prefix=record.storage_prefix)
        if summary.counts.failed
        else []
    )
    collected = collect_run(record, client) if collect else None
    # A start task that failed on some nodes only is silent in Batch; say so.
    nodes = summary.node_failures or client.node_failures(record.pool_id)
    missing: dict[str, list[str]] = {}
    if collected is not None and tasks is not None and summary.counts.done:
        skip = {f.task_id for f in failed} | set(summary.blocked)
        missing = unmatched_outputs(record.run_id, tasks, collected.blobs, skip)
    return RunReport(
        record,
        summary,
        summary.counts,
        failed,
        summary.blocked,
        collected,
        nodes,
        pool_unusable=bool(summary.node_failures),
        missing_outputs=missing,
    )


def run_status(record: RunRecord, client: Client) -> RunReport:
    """Where a run stands now: counts (one request), failures with their stderr tails."""
    counts = client.task_counts(record.job_id)
    failed = (
        client.failed_tasks(record.job_id, logs_prefix=record.storage_prefix)
        if counts.failed
        else []
    )
    # Tasks waiting while nothing runs: say so when it is because no node can run them.
    nodes = client.unusable_pool(record.pool_id) if counts.active and not counts.running else []
    return RunReport(record, None, counts, failed, node_failures=nodes, pool_unusable=bool(nodes))


def teardown_pool(
    record: RunRecord, client: Client, delete: bool, say: Callable[[str], None]
) -> bool:
    """Delete the run's pool when ``delete`` (the CLI's default: when this command created
    it, so nobody pays for idle nodes, while a pool that existed before is kept)."""
    if not delete:
        return False
    say(f"pool {record.pool_id}: deleting (pass --keep-pool to keep it for the next run)")
    client.delete_pool(record.pool_id)
    return True


def node_failure_lines(failures: Iterable[NodeFailure]) -> list[str]:
    """Nodes whose start task failed, grouped by what failed: nodes, failing step, stderr."""
    groups: dict[tuple[str, str, str], list[NodeFailure]] = {}
    for node in failures:
        # The same failure on two nodes differs only where a node names itself (its id, in
        # hostnames or paths): grouped, it is printed once.
        same = node.stderr_tail.replace(node.node_id, "\0")
        groups.setdefault((node.failed_step, node.failure, same), []).append(node)
    lines = []
    for (step, failure, _same), nodes in groups.items():
        first = nodes[0]
        tail = first.stderr_tail
        code = "?" if first.exit_code is None else str(first.exit_code)
        names = ", ".join(n.node_id for n in nodes[:3]) + (" ..." if len(nodes) > 3 else "")
        lines.append(f"{len(nodes)} node(s) {first.state} (start task exit code {code}): {names}")
        if step or failure:
            lines.append(f"    {step or failure}")
        lines.extend(f"    | {line}" for line in tail.rstrip().splitlines() if line != step)
    return lines


def failed_lines(failed: Iterable[FailedTask]) -> list[str]:
    """One block per failed task: id, exit code, failure, the tail of its stderr."""
    lines = []
    for task in failed:
        code = "?" if task.exit_code is None else str(task.exit_code)
        head = f"task {task.task_id} failed (exit code {code})"
        if task.failure:
            head += f": {task.failure}"
        lines.append(head)
        for line in task.stderr_tail.rstrip().splitlines():
            lines.append(f"    {line}")
    return lines
