"""`BatchExecutor`: a `concurrent.futures.Executor` whose calls run as Azure Batch tasks.

One executor is one Batch job on the parameter file's pool. What travels (see
docs/functions.md):

- the node-side runner (`launcher/runners/`), uploaded once, content-addressed;
- a Python function pickled once per `submit`/`map` and uploaded once per distinct payload
  (content-addressed: a 20 MB closure mapped over 2,000 items is uploaded once), or an R/Julia
  source file (`r("model.R", "f")`, `julia("model.jl", "f")`), content-addressed too;
- each task's arguments as a small blob of its own (`map(chunksize=N)`: N calls per blob).

Calls made in quick succession are submitted together from a background thread through
`Client.add_tasks` (chunked task-collection requests), not one request per call. One monitor
thread polls the job's task counts (one request whatever the number of tasks) and, when
completions happen, lists just the completed tasks it still waits for (`$filter` on state
and id buckets, `$select` of id/executionInfo/nodeInfo), downloads their result envelopes
(uploaded by OutputFiles with `taskcompletion`) and resolves the futures with
`envelope.task_outcomes`: a value, the remote exception, or a specific `TaskFailed`
(crash, time limit, preemption, missing result), never a silent None.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import ThreadPoolExecutor as _Threads
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from launcher import envelope, runners
from launcher.client import Client, TaskSpec
from launcher.errors import UserError
from launcher.pickling import (
    ARGS_LIMIT,
    FUNCTION_LIMIT,
    chunks,
    content_hash,
    dumps_args,
    dumps_chunk,
    dumps_function,
    dumps_json_args,
    dumps_json_chunk,
)
from launcher.remote_errors import TaskFailed
from launcher.storage import LocalStore, Store, check_blob_name, content_address

log = logging.getLogger("batchlaunch.executor")

#: Blob folder (in the store's container) for a job's arguments, results and log copies.
RUN_PREFIX = "functions"
#: Task ids are `t` + 7 digits; a bucket is the 100 ids sharing all but the last 2 digits,
#: so "completed tasks still awaited" is a `startswith` filter over a few buckets.
_ID_DIGITS = 7
_BUCKET_DIGITS = 2
_BUCKETS_PER_QUERY = 10
#: Calls submitted within this window go to Batch in one `add_tasks`.
SUBMIT_WINDOW = 0.05
#: Poll the task counts this often (seconds): 0.25 on the emulator, 5 on Azure.
EMULATOR_POLL = 0.25
AZURE_POLL = 5.0
#: Look for completions even when the counts did not move (counts may lag on Azure).
FULL_CHECK_EVERY = 20
#: Consecutive monitor failures before the outstanding futures fail instead of hanging.
MONITOR_FAILURES = 10
#: Without progress for this many polls, check that the pool has a usable node.
HEALTH_CHECK_EVERY = 8
_BROKEN_NODE_STATES = {"starttaskfailed", "unusable"}
_SAS_EXPIRY = timedelta(days=7)
_FUNCTION_NAME = {
    "r": re.compile(r"[A-Za-z.][A-Za-z0-9._]*"),
    "julia": re.compile(r"[A-Za-z_][A-Za-z0-9_!]*"),
}


# --------------------------------------------------------------------------------------
# R and Julia functions


@dataclass(frozen=True)
class ForeignFunction:
    """A function defined in an R or Julia source file: what `r()`/`julia()` return.

    Arguments and results travel as JSON (numbers, strings, bools, None, lists, dicts with
    string keys); keyword arguments become named (R) or keyword (Julia) arguments.
    """

    language: str
    source: Path
    name: str

    def __post_init__(self) -> None:
        pattern = _FUNCTION_NAME.get(self.language)
        if pattern is None:
            raise ValueError(f"unknown function language {self.language!r}: r or julia")
        if not pattern.fullmatch(self.name):
            raise UserError(
                f"{self.source}: {self.name!r} is not a valid {self.language} function name; "
                "pass the name of a function defined in the file"
            )
        if not self.source.is_file():
            raise UserError(f"{self.source}: {self.language} source file not found; check the path")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self!r} runs on the pool only: pass it to BatchExecutor.submit or .map")

    def __repr__(self) -> str:
        return f"{self.language}({str(self.source)!r}, {self.name!r})"


def julia(source: str | Path, function: str) -> ForeignFunction:
    """`julia("model.jl", "simulate")`: run `simulate` from model.jl with the pool's Julia."""
    return ForeignFunction("julia", Path(source).resolve(), function)


def r(source: str | Path, function: str) -> ForeignFunction:
    """`r("model.R", "simulate")`: run `simulate` from model.R with the pool's Rscript."""
    return ForeignFunction("r", Path(source).resolve(), function)


# --------------------------------------------------------------------------------------
# Futures and task records


class PoolUnusable(TaskFailed):
    """Every node of the pool failed its start task (or is unusable): nothing can run.
    The message holds the start task's failure and the tail of its stderr."""


class BatchFuture(Future[Any]):
    """A `concurrent.futures.Future` for one call, with where it runs and logs.

    `cancel()` works until the result is in: when every call of the task is cancelled, the
    Batch task is terminated (Batch cannot tell cheaply whether it has started).
    """

    def __init__(self, task_id: str, job_id: str, log_location: str, index: int = 0) -> None:
        super().__init__()
        self.task_id = task_id
        self.job_id = job_id
        self.log_location = log_location
        self.index = index  # position of this call in its task (map chunks)
        self._executor: BatchExecutor | None = None

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            # Notify `wait`/`as_completed` now: they count a cancelled future as done only
            # once it is notified, which an executor does when it would have run it.
            with contextlib.suppress(RuntimeError):
                self.set_running_or_notify_cancel()
            if self._executor is not None:
                self._executor._on_cancel(self)
        return cancelled

    def __repr__(self) -> str:
        return f"<BatchFuture {self.job_id}/{self.task_id}[{self.index}] {self._state.lower()}>"


@dataclass(eq=False)
class _Task:
    """One Batch task: its futures (one per call), language and what to upload."""

    task_id: str
    language: str
    futures: list[BatchFuture]
    args_payload: bytes
    resource_files: list[dict[str, str]]
    command: str
    timeout_minutes: float | None
    max_retries: int | None
    submitted: bool = False
    terminate_requested: bool = False


@dataclass
class Stats:
    """What the executor sent: bytes and blobs uploaded by the client, tasks, requests."""

    bytes_uploaded: int = 0
    blobs_uploaded: int = 0
    function_bytes: int = 0
    args_bytes: int = 0
    tasks: int = 0
    add_tasks_calls: int = 0
    count_polls: int = 0
    list_queries: int = 0
    results_downloaded: int = 0


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings: wall-clock limit (the task is killed -> `TaskTimedOut`) and retries
    of a task whose process crashed (non-zero exit without a result)."""

    timeout_minutes: float | None = None
    max_retries: int | None = None

    def merged(self, **changes: Any) -> TaskOptions:
        values: dict[str, Any] = {
            "timeout_minutes": self.timeout_minutes,
            "max_retries": self.max_retries,
        }
        for key, value in changes.items():
            if key not in values:
                raise TypeError(f"unknown task option {key!r}: use timeout_minutes, max_retries")
            values[key] = value
        if values["timeout_minutes"] is not None and values["timeout_minutes"] <= 0:
            raise ValueError("timeout_minutes must be > 0")
        return TaskOptions(**values)


# --------------------------------------------------------------------------------------
# The executor


class BatchExecutor(Executor):
    """Run Python, R and Julia functions as Batch tasks on the parameter file's pool.

    ``BatchExecutor("params.toml")``: the first `submit` creates the pool if needed
    (idempotent, with the runtime's start task) and a job ``fx-<run id>``; calls then queue
    until nodes are ready. ``keep_pool``: None (default) deletes the pool at shutdown only if
    this executor created it; True keeps it; False deletes it. ``task_timeout_minutes`` and
    ``max_task_retries`` apply to every task (per call: ``ex.options(timeout_minutes=...)``).
    ``client`` replaces the `Client` built from ``params`` (tests, custom connections).
    """

    def __init__(
        self,
        params: str | Path | Any | None = None,
        *,
        pool: str | None = None,
        job_id: str | None = None,
        poll_interval: float | None = None,
        keep_pool: bool | None = None,
        task_timeout_minutes: float | None = None,
        max_task_retries: int | None = None,
        function_limit: int = FUNCTION_LIMIT,
        args_limit: int = ARGS_LIMIT,
        by_reference: Sequence[str] = (),
        client: Client | None = None,
        workers: int = 8,
    ) -> None:
        if client is None:
            if params is None:
                raise TypeError("BatchExecutor needs a parameter file (or client=)")
            client = Client(params)
        self.client = client
        self.params = client.params
        self.pool_id = pool or getattr(getattr(self.params, "pool", None), "id", None)
        if not self.pool_id:
            raise UserError("[pool] id: missing; set [pool] id in the parameter file or pool=")
        self.run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        self.job_id = job_id or f"fx-{self.run_id}"
        self._poll_interval = poll_interval
        self.keep_pool = keep_pool
        self.defaults = TaskOptions().merged(
            timeout_minutes=task_timeout_minutes, max_retries=max_task_retries
        )
        self.function_limit = function_limit
        self.args_limit = args_limit
        self.by_reference = tuple(by_reference)
        self.stats = Stats()

        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._started = False
        self._shutdown = False
        self._closed = False
        self._pool_created = False
        self._counter = itertools.count(1)
        self._queue: deque[_Task] = deque()  # built, not yet sent to Batch
        self._outstanding: dict[str, _Task] = {}  # sent, not yet resolved
        self._buckets: dict[str, set[str]] = {}
        self._uploaded: set[str] = set()  # content-addressed blobs known to exist
        self._runner_files: dict[str, list[dict[str, str]]] = {}
        self._source_files: dict[tuple[str, int, int], dict[str, str]] = {}
        self._threads = _Threads(max_workers=max(1, workers), thread_name_prefix="batchlaunch-io")
        self._submitter: threading.Thread | None = None
        self._monitor: threading.Thread | None = None
        self._stop = threading.Event()

    # Setup ----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.client.store

    @property
    def poll_interval(self) -> float:
        if self._poll_interval is not None:
            return self._poll_interval
        return EMULATOR_POLL if self.client.conn.emulator else AZURE_POLL

    def _start(self) -> None:
        """Pool (idempotent), job and threads: once, on the first submit."""
        with self._lock:
            if self._started:
                return
            info = self.client.create_pool(self.pool_id)
            self._pool_created = bool(info.created)
            self.client.create_job(
                self.job_id,
                self.pool_id,
                uses_deps=False,
                save_logs_to_blob=False,
                mark_complete_after_tasks_run=False,
                verify_pool=False,
            )
            self._save_record()
            self._submitter = threading.Thread(
                target=self._submit_loop, name=f"batchlaunch-submit-{self.job_id}", daemon=True
            )
            self._monitor = threading.Thread(
                target=self._monitor_loop, name=f"batchlaunch-monitor-{self.job_id}", daemon=True
            )
            self._submitter.start()
            self._monitor.start()
            self._started = True

    def _check_language(self, language: str) -> None:
        runtime = getattr(getattr(self.params, "runtime", None), "language", None)
        if runtime in ("python", "r", "julia") and runtime != language:
            raise UserError(
                f"[runtime] language: the pool's runtime is {runtime!r} but this function needs "
                f"{language!r}; use a parameter file with [runtime] language = {language!r} "
                "(one runtime per pool)"
            )

    def _put_cas(self, data: bytes, name: str) -> tuple[str, bool]:
        """Upload once per content (one HEAD the first time, nothing after); count bytes.
        Returns the blob name and whether this call uploaded it."""
        blob = content_address(data, name)
        with self._lock:
            if blob in self._uploaded:
                return blob, False
        uploaded = False
        if not self.store.exists(blob):
            self.store.upload_bytes(data, blob)
            uploaded = True
        with self._lock:
            self._uploaded.add(blob)
            if uploaded:
                self.stats.bytes_uploaded += len(data)
                self.stats.blobs_uploaded += 1
        return blob, uploaded

    def _resource(self, blob: str, file_path: str, mode: str | None = None) -> dict[str, str]:
        entry = {"httpUrl": self.store.read_url(blob, _SAS_EXPIRY), "filePath": file_path}
        if mode:
            entry["fileMode"] = mode
        return entry

    def _runner(self, language: str) -> list[dict[str, str]]:
        """The runner's resource files: the runner, and for Python the client's cloudpickle
        (`runners.cloudpickle_zip`, beside the runner), so nodes need none of their own."""
        with self._lock:
            if language not in self._runner_files:
                name = runners.runner_file(language)
                blob, _ = self._put_cas(runners.runner_bytes(language), name)
                files = [self._resource(blob, name)]
                if language == "python":
                    zipped, _ = self._put_cas(runners.cloudpickle_zip(), runners.CLOUDPICKLE_ZIP)
                    files.append(self._resource(zipped, runners.CLOUDPICKLE_ZIP))
                self._runner_files[language] = files
            return self._runner_files[language]

    def _source(self, fn: ForeignFunction) -> dict[str, str]:
        stat = fn.source.stat()
        key = (str(fn.source), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key not in self._source_files:
                blob, _ = self._put_cas(fn.source.read_bytes(), fn.source.name)
                self._source_files[key] = self._resource(blob, fn.source.name)
            return self._source_files[key]

    def _encode(self, fn: Callable[..., Any] | ForeignFunction) -> tuple[str, bytes | None]:
        """(language, pickled function or None for R/Julia): everything that can refuse the
        call (wrong runtime, payload too large) happens here, before anything is sent."""
        if isinstance(fn, ForeignFunction):
            self._check_language(fn.language)
            return fn.language, None
        if not callable(fn):
            raise TypeError(f"expected a callable or r()/julia(), got {type(fn).__name__}")
        self._check_language("python")
        return "python", dumps_function(
            fn, limit=self.function_limit, by_reference=self.by_reference
        )

    def _prepare(
        self, fn: Callable[..., Any] | ForeignFunction, payload: bytes | None
    ) -> tuple[list[dict[str, str]], str]:
        """(resource files shared by the tasks, command line): uploads what is not there."""
        if isinstance(fn, ForeignFunction):
            files = [*self._runner(fn.language), self._source(fn)]
            command = runners.command_line(
                fn.language,
                source_file=fn.source.name,
                function_name=fn.name,
                args_file=envelope.ARGS_JSON,
                out_file=envelope.RESULT_JSON,
            )
            return files, command
        assert payload is not None
        name = envelope.function_file(content_hash(payload))
        blob, uploaded = self._put_cas(payload, name)
        if uploaded:
            with self._lock:
                self.stats.function_bytes += len(payload)
        files = [*self._runner("python"), self._resource(blob, name)]
        command = runners.command_line(
            "python",
            function_file=name,
            args_file=envelope.ARGS_PICKLE,
            out_file=envelope.RESULT_PICKLE,
        )
        return files, command

    def _args(self, language: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> bytes:
        if language == "python":
            if len(calls) == 1:
                return dumps_args(*calls[0], limit=self.args_limit, by_reference=self.by_reference)
            return dumps_chunk(calls, limit=self.args_limit, by_reference=self.by_reference)
        if len(calls) == 1:
            return dumps_json_args(*calls[0], limit=self.args_limit)
        return dumps_json_chunk(calls, limit=self.args_limit)

    def log_location(self, task_id: str) -> str:
        """Where a task's stdout.txt/stderr.txt are: the copies uploaded to storage when the
        task ended (they outlive the pool, which shutdown may delete), and the
        `batchlaunch logs` command that reads them (it has a run record when the executor
        was made from a parameter file)."""
        if isinstance(self.store, LocalStore):
            where = str(self.store.container_dir / self._prefix(task_id))
        else:
            where = f"container {self.store.container}, blobs {self._prefix(task_id)}"
        command = (
            f"`batchlaunch logs {self.job_id} {task_id}` (--stderr), or "
            if getattr(self.params, "path", None) is not None
            else ""
        )
        return f"job {self.job_id} task {task_id}: {command}stdout.txt/stderr.txt in {where}/"

    def _save_record(self) -> None:
        """A run record, so `batchlaunch logs JOB TASK` finds the job and its uploaded logs
        (``functions/JOB/TASK/std*.txt``) after the pool is gone. Needs the parameter file's
        path: a record points at a file, not at parameters built in code."""
        from launcher.runs import RunRecord

        path = getattr(self.params, "path", None)
        if path is None:
            return
        try:
            RunRecord(
                run_id=self.job_id,
                job_id=self.job_id,
                pool_id=str(self.pool_id),
                params_path=str(Path(path).resolve()),
                out_dir="",
                storage_prefix=run_prefix(self.job_id),
                pool_created_by_run=self._pool_created,
                extra={"kind": "executor"},
            ).save()
        except (OSError, UserError) as exc:  # logs still reachable in storage, as the note says
            log.warning("saving the run record of %s failed: %s", self.job_id, exc)

    def _prefix(self, task_id: str) -> str:
        return f"{RUN_PREFIX}/{self.job_id}/{task_id}"

    # Submitting -----------------------------------------------------------------------

    def _new_task(
        self,
        language: str,
        files: list[dict[str, str]],
        command: str,
        n_calls: int,
        payload: bytes,
        options: TaskOptions,
    ) -> _Task:
        task_id = f"t{next(self._counter):0{_ID_DIGITS}d}"
        where = self.log_location(task_id)
        futures = [BatchFuture(task_id, self.job_id, where, i) for i in range(n_calls)]
        for fut in futures:
            fut._executor = self
        return _Task(
            task_id=task_id,
            language=language,
            futures=futures,
            args_payload=payload,
            resource_files=list(files),
            command=command,
            timeout_minutes=options.timeout_minutes,
            max_retries=options.max_retries,
        )

    def _enqueue(self, tasks: list[_Task]) -> None:
        with self._wake:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.extend(tasks)
            self._wake.notify_all()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> BatchFuture:
        """Run ``fn(*args, **kwargs)`` as one Batch task; returns its `BatchFuture`."""
        return self._submit(fn, args, kwargs, self.defaults)

    def _submit(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> BatchFuture:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        language, fn_payload = self._encode(fn)
        payload = self._args(language, [(tuple(args), dict(kwargs))])
        self._start()
        files, command = self._prepare(fn, fn_payload)
        task = self._new_task(language, files, command, 1, payload, options)
        self._enqueue([task])
        return task.futures[0]

    def map(
        self,
        fn: Any,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like `Executor.map`: results in order, the first error raised at its position.
        ``chunksize`` calls run in one task (one args blob, one result envelope)."""
        return self._map(fn, iterables, timeout, chunksize, self.defaults)

    def _map(
        self,
        fn: Any,
        iterables: Sequence[Iterable[Any]],
        timeout: float | None,
        chunksize: int,
        options: TaskOptions,
    ) -> Iterator[Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        end = None if timeout is None else time.monotonic() + timeout
        items = list(zip(*iterables, strict=False))
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        futures: list[BatchFuture] = []
        if items:
            language, fn_payload = self._encode(fn)  # pickled once for the whole map
            spans = chunks(len(items), chunksize)
            payloads = [self._args(language, [(tuple(items[i]), {}) for i in s]) for s in spans]
            self._start()
            files, command = self._prepare(fn, fn_payload)  # uploaded once
            tasks = [
                self._new_task(language, files, command, len(span), payload, options)
                for span, payload in zip(spans, payloads, strict=True)
            ]
            self._enqueue(tasks)
            futures = [f for t in tasks for f in t.futures]
        return _results(futures, end)

    def options(self, **changes: Any) -> _Configured:
        """A view of this executor whose submit/map use other task options
        (``timeout_minutes``, ``max_retries``): ``ex.options(timeout_minutes=5).submit(f)``."""
        return _Configured(self, self.defaults.merged(**changes))

    def _submit_loop(self) -> None:
        """Collect what was queued within `SUBMIT_WINDOW` and send it in one add_tasks."""
        while True:
            with self._wake:
                while not self._queue and not self._stop.is_set():
                    self._wake.wait()
                if not self._queue and self._stop.is_set():
                    return
            time.sleep(SUBMIT_WINDOW)
            with self._wake:
                batch = list(self._queue)
                self._queue.clear()
            try:
                self._send(batch)
            except BaseException as exc:  # the futures must learn about it, not hang
                log.exception("submitting %d task(s) failed", len(batch))
                for task in batch:
                    self._fail(task, exc)
            finally:
                with self._wake:
                    self._wake.notify_all()

    def _send(self, batch: list[_Task]) -> None:
        live = [t for t in batch if not all(f.done() for f in t.futures)]
        for task in batch:
            if all(f.done() for f in task.futures):
                self._finish_futures(task, None)
        if not live:
            return

        def upload(task: _Task) -> TaskSpec:
            blob = f"{self._prefix(task.task_id)}/{envelope.args_file(task.language)}"
            self.store.upload_bytes(task.args_payload, check_blob_name(blob))
            with self._lock:
                self.stats.bytes_uploaded += len(task.args_payload)
                self.stats.args_bytes += len(task.args_payload)
                self.stats.blobs_uploaded += 1
            files = [*task.resource_files, self._resource(blob, envelope.args_file(task.language))]
            result = envelope.result_file(task.language)
            outputs = [
                self.client.output_file(
                    result, f"{self._prefix(task.task_id)}/{result}", expiry=_SAS_EXPIRY
                ),
                self.client.output_file(
                    "../std*.txt", self._prefix(task.task_id), expiry=_SAS_EXPIRY
                ),
            ]
            task.args_payload = b""  # uploaded: free the memory
            return TaskSpec(
                command=task.command,
                task_id=task.task_id,
                timeout_minutes=task.timeout_minutes,
                max_retries=task.max_retries,
                resource_files=files,
                output_files=outputs,
                shell=True,
            )

        specs = list(self._threads.map(upload, live))
        with self._lock:
            for task in live:
                self._outstanding[task.task_id] = task
                self._buckets.setdefault(_bucket(task.task_id), set()).add(task.task_id)
        try:
            self.client.add_tasks(self.job_id, specs)  # in submission order
        except BaseException:
            with self._lock:
                for task in live:
                    self._forget(task.task_id)
            raise
        with self._lock:
            self.stats.tasks += len(live)
            self.stats.add_tasks_calls += 1
            cancelled = []
            for task in live:
                task.submitted = True
                if all(f.cancelled() for f in task.futures) and not task.terminate_requested:
                    task.terminate_requested = True  # cancelled while the request was in flight
                    cancelled.append(task)
            self._wake.notify_all()
        for task in cancelled:
            self._threads.submit(self._terminate, task.task_id)

    # Monitoring -----------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        last_completed = -1
        polls = 0
        failures = 0
        idle_polls = 0
        while not self._stop.is_set():
            with self._wake:
                while not self._outstanding and not self._stop.is_set():
                    self._wake.wait(1.0)
                if self._stop.is_set():
                    return
            try:
                counts = self.client.task_counts(self.job_id)
                self.stats.count_polls += 1
                polls += 1
                if counts.completed != last_completed or polls % FULL_CHECK_EVERY == 0:
                    self._collect()
                    idle_polls = 0 if counts.completed != last_completed else idle_polls
                    last_completed = counts.completed
                idle_polls = 0 if counts.running else idle_polls + 1
                if idle_polls and idle_polls % HEALTH_CHECK_EVERY == 0:
                    self._check_pool()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("monitoring job %s failed (%s): %s", self.job_id, failures, exc)
                if failures >= MONITOR_FAILURES:
                    with self._lock:
                        tasks = list(self._outstanding.values())
                    for task in tasks:
                        self._fail(task, exc)
                    failures = 0
            self._stop.wait(self.poll_interval * (1 + min(failures, 5)))

    def _check_pool(self) -> None:
        """Fail the waiting futures when no node of the pool can ever run them (every node
        failed its start task), instead of letting them wait forever."""
        nodes = list(
            self.client.batch.list_nodes(self.pool_id, select=["id", "state", "startTaskInfo"])
        )
        states = {str(getattr(n.state, "value", n.state)).lower() for n in nodes}
        if not nodes or not states <= _BROKEN_NODE_STATES:
            return
        node = nodes[0]
        failure = getattr(getattr(node, "start_task_info", None), "failure_info", None)
        detail = f"{getattr(failure, 'code', '')}: {getattr(failure, 'message', '')}".strip(": ")
        stderr = ""
        with contextlib.suppress(Exception):
            data = self.client.batch.download_node_file(
                self.pool_id, str(node.id), "startup/stderr.txt"
            )
            stderr = envelope.tail(b"".join(data), 10)
        error = PoolUnusable(
            f"no node of pool {self.pool_id!r} can run tasks: all {len(nodes)} node(s) are "
            f"{'/'.join(sorted(states))} ({detail or 'start task failed'}); fix the "
            "[runtime] section (see the start task's stderr below), then delete and recreate "
            "the pool (`batchlaunch pool delete PARAMS`)",
            log_location=f"pool {self.pool_id} node {node.id}: startup/stderr.txt",
            stderr_tail=stderr,
        )
        with self._lock:
            tasks = list(self._outstanding.values())
        for task in tasks:
            self._fail(task, error)
        with self._lock:
            queued = list(self._queue)
        for task in queued:
            for fut in task.futures:
                if _claim(fut):
                    fut.set_exception(error)

    def _collect(self) -> None:
        """List the completed tasks among those still awaited and resolve their futures."""
        with self._lock:
            buckets = sorted(b for b, ids in self._buckets.items() if ids)
        found: list[Any] = []
        for start in range(0, len(buckets), _BUCKETS_PER_QUERY):
            group = buckets[start : start + _BUCKETS_PER_QUERY]
            ids = " or ".join(f"startswith(id, '{b}')" for b in group)
            query = f"state eq 'completed' and ({ids})"
            self.stats.list_queries += 1
            found.extend(
                self.client.batch.list_tasks(
                    self.job_id, filter=query, select=["id", "executionInfo", "nodeInfo"]
                )
            )
        todo = []
        with self._lock:
            for item in found:
                task = self._outstanding.get(str(item.id))
                if task is not None:  # completed, so submitted (even if add_tasks is returning)
                    todo.append((task, item))
        if todo:
            for _ in self._threads.map(lambda pair: self._resolve(*pair), todo):
                pass

    def _resolve(self, task: _Task, item: Any) -> None:
        """Turn one completed Batch task into its futures' values or exceptions."""
        try:
            outcomes = self._outcomes(task, item)
        except Exception as exc:  # never leave the futures waiting
            log.exception("reading the result of %s failed", task.task_id)
            self._fail(task, exc)
            return
        self._finish_futures(task, outcomes)

    def _outcomes(self, task: _Task, item: Any) -> list[envelope.Outcome]:
        info = getattr(item, "execution_info", None)
        exit_code = getattr(info, "exit_code", None)
        failure = getattr(info, "failure_info", None)
        code = str(getattr(failure, "code", "") or "")
        requeues = int(getattr(info, "requeue_count", 0) or 0)
        timed_out = code == "MaxWallClockTimeExpiry"
        preempted = "preempt" in code.lower() or (exit_code is None and requeues > 0)
        where = task.futures[0].log_location if task.futures else None
        node = getattr(getattr(item, "node_info", None), "node_id", None)
        if node:
            where = f"{where} (node {node})"
        result_name = envelope.result_file(task.language)
        with tempfile.TemporaryDirectory(prefix="batchlaunch-result-") as tmp:
            path: Path | None = Path(tmp) / result_name
            try:
                self.store.download(
                    f"{self._prefix(task.task_id)}/{result_name}", Path(tmp) / result_name
                )
                self.stats.results_downloaded += 1
            except Exception:
                path = None
            stderr = ""
            if path is None or exit_code not in (0, None):
                stderr = self._stderr(task.task_id)
            return envelope.task_outcomes(
                task.language,
                path,
                expected=len(task.futures),
                exit_code=exit_code,
                stderr_tail=stderr,
                timed_out=timed_out,
                preempted=preempted,
                log_location=where,
            )

    def _stderr(self, task_id: str) -> str:
        """Tail of stderr.txt: through the Batch file API, else the copy in storage."""
        with contextlib.suppress(Exception):
            data = b"".join(
                self.client.batch.download_task_file(self.job_id, task_id, "stderr.txt")
            )
            return envelope.tail(data)
        with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(Exception):
            copy = self.store.download(f"{self._prefix(task_id)}/stderr.txt", Path(tmp) / "e")
            return envelope.tail(copy.read_bytes())
        return ""

    def _finish_futures(self, task: _Task, outcomes: list[envelope.Outcome] | None) -> None:
        for index, fut in enumerate(task.futures):
            if not _claim(fut):
                continue
            if outcomes is None:  # cannot happen for a live future; keep it explicit
                fut.set_exception(
                    TaskFailed("the task was dropped before it ran", log_location=fut.log_location)
                )
            elif outcomes[index].ok:
                fut.set_result(outcomes[index].value)
            else:
                fut.set_exception(outcomes[index].error)
        with self._wake:
            self._forget(task.task_id)
            self._wake.notify_all()

    def _fail(self, task: _Task, exc: BaseException) -> None:
        for fut in task.futures:
            if _claim(fut):
                fut.set_exception(exc)
        with self._wake:
            self._forget(task.task_id)
            self._wake.notify_all()

    def _forget(self, task_id: str) -> None:
        self._outstanding.pop(task_id, None)
        bucket = self._buckets.get(_bucket(task_id))
        if bucket is not None:
            bucket.discard(task_id)
            if not bucket:
                self._buckets.pop(_bucket(task_id), None)

    # Cancelling -----------------------------------------------------------------------

    def _on_cancel(self, fut: BatchFuture) -> None:
        """A future was cancelled: terminate its task once all of the task's calls are."""
        with self._lock:
            task = self._outstanding.get(fut.task_id)
            # Not yet sent: `_send` drops it, or terminates it once the add returned.
            if task is None or not task.submitted or task.terminate_requested:
                return
            if not all(f.cancelled() for f in task.futures):
                return
            task.terminate_requested = True
        if not self._closed:
            with contextlib.suppress(RuntimeError):  # the executor closed meanwhile
                self._threads.submit(self._terminate, task.task_id)

    def _terminate(self, task_id: str) -> None:
        try:
            self.client.terminate_task(self.job_id, task_id)
        except Exception as exc:
            log.warning("terminating %s/%s failed: %s", self.job_id, task_id, exc)
        with self._wake:
            self._forget(task_id)
            self._wake.notify_all()

    def _cancel_queued(self) -> None:
        """shutdown(cancel_futures=True): cancel what Batch has not started, terminate it."""
        with self._wake:
            queued = list(self._queue)
        for task in queued:
            for fut in task.futures:
                fut.cancel()
        with self._wake:
            while self._queue:  # the submitter drains the queue (dropping cancelled tasks)
                self._wake.wait(0.1)
        with self._lock:
            if not self._outstanding:
                return
        active = [
            str(t.id)
            for t in self.client.batch.list_tasks(
                self.job_id, filter="state eq 'active'", select=["id"]
            )
        ]
        with self._lock:
            tasks = [self._outstanding[i] for i in active if i in self._outstanding]
        for task in tasks:
            for fut in task.futures:
                fut.cancel()  # terminates the task through _on_cancel

    # Shutdown -------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; ``cancel_futures`` cancels and terminates the tasks that have
        not started; ``wait`` until every future is resolved, then end the job and (per
        ``keep_pool``) delete the pool."""
        with self._wake:
            already = self._shutdown
            self._shutdown = True
            self._wake.notify_all()
        if not self._started:
            self._threads.shutdown(wait=False)
            return
        if cancel_futures and not already:
            self._cancel_queued()
        if not wait:
            threading.Thread(target=self._drain_and_close, daemon=True).start()
            return
        self._drain_and_close()

    def _drain_and_close(self) -> None:
        with self._wake:
            while self._queue or self._outstanding:
                self._wake.wait(0.5)
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in (self._submitter, self._monitor):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        self._threads.shutdown(wait=True)
        self._close_job()

    def _close_job(self) -> None:
        try:
            self.client.terminate_job(self.job_id, "ExecutorShutdown")
        except Exception as exc:  # shutdown goes on; the job ends with the pool or by hand
            log.warning("terminating job %s failed: %s", self.job_id, exc)
        delete = (not self.keep_pool) if self.keep_pool is not None else self._pool_created
        if delete:
            self.client.delete_pool(self.pool_id)

    def __enter__(self) -> BatchExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


class _Configured:
    """`BatchExecutor.options(...)`: the same executor with other per-task options."""

    def __init__(self, executor: BatchExecutor, options: TaskOptions) -> None:
        self._executor = executor
        self._options = options

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> BatchFuture:
        return self._executor._submit(fn, args, kwargs, self._options)

    def map(
        self, fn: Any, *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[Any]:
        return self._executor._map(fn, iterables, timeout, chunksize, self._options)


def _claim(fut: Future[Any]) -> bool:
    """Take a pending future for resolving; False if it was cancelled or already resolved."""
    try:
        return fut.set_running_or_notify_cancel()
    except RuntimeError:  # resolved already (e.g. failed by the pool check)
        return False


def _bucket(task_id: str) -> str:
    return task_id[:-_BUCKET_DIGITS]


def _results(futures: list[BatchFuture], end: float | None) -> Iterator[Any]:
    """Yield results in order; on an error or an abandoned iterator, cancel the rest (as
    the standard library's Executor.map does)."""
    pending = list(reversed(futures))
    try:
        while pending:
            fut = pending.pop()
            if end is None:
                yield fut.result()
            else:
                yield fut.result(end - time.monotonic())
    finally:
        for fut in pending:
            fut.cancel()


def run_prefix(job_id: str) -> str:
    """The blob folder holding a job's arguments, results and log copies."""
    return f"{RUN_PREFIX}/{job_id}"


__all__ = [
    "BatchExecutor",
    "BatchFuture",
    "ForeignFunction",
    "PoolUnusable",
    "Stats",
    "TaskOptions",
    "julia",
    "r",
    "run_prefix",
]
