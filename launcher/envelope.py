"""Reading a shipped function's result envelope on the client, and the file layout it uses.

Every function task writes one result file in its working directory, uploaded by an
OutputFile with `taskcompletion`: `result.pkl` (Python, written by `run_python.py`) or
`result.json` (R and Julia, written by `run.R`/`run.jl`). `task_outcomes` turns that file
(or its absence, plus what Batch says about the task) into one `Outcome` per call; an
`Outcome` holds the value or the exception the future must raise, never a silent None.

JSON envelope (R and Julia; keys are the `KEY_*` constants)::

    {"status": "ok", "value": ..., "runner": "run.R", "language": "r", "version": "4.2.2",
     "host": "...", "started": "2026-...Z", "finished": "...", "elapsed_seconds": 0.01}
    {"status": "error", "type": "simpleError", "message": "...", "traceback": "...", ...}
    {"status": "chunk", "outcomes": [{"status": "ok", "value": ...},
                                     {"status": "error", "type": ..., ...}], ...}

A top-level "error" applies to every call (the file or function could not be loaded).
The Python envelope is described in `launcher/runners/run_python.py`.
"""

from __future__ import annotations

import json
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from launcher.remote_errors import (
    NodePreempted,
    PayloadLoadError,
    PythonVersionMismatch,
    RemoteError,
    RemoteTraceback,
    ResultMissing,
    ResultUnreadable,
    TaskCrashed,
    TaskFailed,
    TaskTimedOut,
)
from launcher.runners import run_python as rp

# Files in the task working directory (and names of the uploaded blobs' last component).
RESULT_PICKLE = "result.pkl"
RESULT_JSON = "result.json"
ARGS_PICKLE = "args.pkl"
ARGS_JSON = "args.json"
FUNCTION_PREFIX = "function-"  # + content hash + ".pkl": one blob per distinct function

# JSON envelope keys (shared by run.R and run.jl; tests check both runners use them).
KEY_STATUS = "status"
KEY_VALUE = "value"
KEY_TYPE = "type"
KEY_MESSAGE = "message"
KEY_TRACEBACK = "traceback"
KEY_OUTCOMES = "outcomes"
KEY_RUNNER = "runner"
KEY_LANGUAGE = "language"
KEY_VERSION = "version"
KEY_HOST = "host"
KEY_STARTED = "started"
KEY_FINISHED = "finished"
KEY_ELAPSED = "elapsed_seconds"
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_CHUNK = "chunk"
JSON_METADATA_KEYS = (KEY_RUNNER, KEY_LANGUAGE, KEY_VERSION, KEY_HOST, KEY_STARTED, KEY_FINISHED)
JSON_ERROR_KEYS = (KEY_TYPE, KEY_MESSAGE, KEY_TRACEBACK)

STDERR_TAIL_LINES = 30


def result_file(language: str) -> str:
    """`result.pkl` for Python, `result.json` for R and Julia."""
    return RESULT_PICKLE if language == "python" else RESULT_JSON


def args_file(language: str) -> str:
    return ARGS_PICKLE if language == "python" else ARGS_JSON


def function_file(digest: str) -> str:
    """Content-addressed file name of a pickled function (`pickling.content_hash`)."""
    return f"{FUNCTION_PREFIX}{digest}.pkl"


@dataclass(frozen=True)
class Outcome:
    """One call's result: `ok` with `value`, or `error` (the exception the future raises)."""

    ok: bool
    value: Any = None
    error: BaseException | None = None
    duration: float | None = None

    def result(self) -> Any:
        if self.ok:
            return self.value
        assert self.error is not None
        raise self.error


def tail(text: str | bytes, lines: int = STDERR_TAIL_LINES) -> str:
    """The last `lines` lines of a log, for exception messages."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _failure(kind: type[TaskFailed], reason: str, log_location: str | None) -> Outcome:
    return Outcome(False, error=kind(reason, log_location=log_location))


def _stopped_reason(kind: type[TaskFailed]) -> str:
    if kind is TaskTimedOut:
        return "the task exceeded its wall-clock limit and was stopped before this call finished"
    if kind is NodePreempted:
        return "the node was preempted before this call finished"
    return "the runner was stopped by a signal (task terminated) before this call finished"


def _python_error(
    item: tuple[Any, ...], log_location: str | None, stopped: type[TaskFailed]
) -> BaseException:
    """The exception a failed Python call re-raises: its own type when it unpickles."""
    _, exc_bytes, tb_text, type_name, message = item
    if type_name == rp.TERMINATED:
        return stopped(_stopped_reason(stopped), log_location=log_location)
    problem = ""
    if exc_bytes is not None:
        try:
            exc = cloudpickle.loads(exc_bytes)
        except Exception as err:
            problem = f" [the exception could not be recreated here: {type(err).__name__}: {err}]"
        else:
            # SystemExit/KeyboardInterrupt raised from future.result() would stop the client.
            if isinstance(exc, Exception):
                exc.__cause__ = RemoteTraceback(tb_text, log_location)
                where = f"; logs: {log_location}" if log_location else ""
                exc.add_note(f"(raised in a batchlaunch task{where})")
                return exc
    return RemoteError(type_name, message + problem, tb_text, log_location, "python")


def _setup_error(
    item: tuple[Any, ...], log_location: str | None, stopped: type[TaskFailed]
) -> BaseException:
    """What every call of a task raises when nothing could run: never the rebuilt load
    exception (a bare AttributeError would lose the runner's hint), always the message."""
    _, _, tb_text, type_name, message = item
    if type_name == rp.VERSION_MISMATCH:
        return PythonVersionMismatch(message, log_location=log_location)
    if type_name == rp.TERMINATED:
        return stopped(_stopped_reason(stopped), log_location=log_location)
    return PayloadLoadError(type_name, message, tb_text, log_location, "python")


def _python_outcome(
    item: tuple[Any, ...],
    duration: float | None,
    log_location: str | None,
    stopped: type[TaskFailed],
) -> Outcome:
    if item[0] == "ok":
        try:
            value = cloudpickle.loads(item[1])
        except Exception as err:
            return Outcome(
                False,
                error=ResultUnreadable(
                    type(err).__name__,
                    f"the function returned, but its value could not be unpickled here: {err} "
                    "(is the package that defines it installed on the client?)",
                    "",
                    log_location,
                    "python",
                ),
                duration=duration,
            )
        return Outcome(True, value, duration=duration)
    return Outcome(False, error=_python_error(item, log_location, stopped), duration=duration)


def read_python_results(
    path: str | Path,
    *,
    expected: int | None = None,
    log_location: str | None = None,
    stopped: type[TaskFailed] = TaskCrashed,
) -> list[Outcome]:
    """One Outcome per call from `result.pkl`. `expected` (the number of calls sent) fills
    in calls a setup error prevented or a short envelope lacks; `stopped` is the exception
    for calls cut off by a signal (TaskTimedOut when Batch says the time limit hit)."""
    header, body = rp.unpack(Path(path).read_bytes())
    if header.get("kind") != "result":
        raise ValueError(f"{path}: not a batchlaunch result (kind {header.get('kind')!r})")
    envelope = pickle.loads(body)
    setup = envelope["setup_error"]
    count = expected if expected is not None else max(1, len(envelope["outcomes"]))
    if setup is not None:
        return [
            Outcome(False, error=_setup_error(setup, log_location, stopped)) for _ in range(count)
        ]
    durations = envelope.get("durations", [])
    outcomes = [
        _python_outcome(item, durations[i] if i < len(durations) else None, log_location, stopped)
        for i, item in enumerate(envelope["outcomes"][:count])
    ]
    missing = count - len(outcomes)
    outcomes += [
        _failure(
            ResultMissing,
            f"the result file holds {len(envelope['outcomes'])} outcomes "
            f"but {count} calls were sent",
            log_location,
        )
        for _ in range(missing)
    ]
    return outcomes


def read_python_result(path: str | Path, *, log_location: str | None = None) -> Outcome:
    """The Outcome of a single-call task."""
    return read_python_results(path, expected=1, log_location=log_location)[0]


def _json_outcome(item: Any, doc: dict[str, Any], log_location: str | None) -> Outcome:
    language = str(doc.get(KEY_LANGUAGE, "?"))
    if not isinstance(item, dict) or item.get(KEY_STATUS) not in (STATUS_OK, STATUS_ERROR):
        return Outcome(
            False,
            error=RemoteError(
                "BadEnvelope",
                f"unrecognised outcome in result.json: {str(item)[:200]}",
                "",
                log_location,
                language,
            ),
        )
    if item[KEY_STATUS] == STATUS_OK:
        return Outcome(True, item.get(KEY_VALUE), duration=item.get(KEY_ELAPSED))
    return Outcome(
        False,
        error=RemoteError(
            str(item.get(KEY_TYPE, "error")),
            str(item.get(KEY_MESSAGE, "")),
            str(item.get(KEY_TRACEBACK) or ""),
            log_location,
            language,
        ),
        duration=item.get(KEY_ELAPSED),
    )


def read_json_results(
    path: str | Path, *, expected: int | None = None, log_location: str | None = None
) -> list[Outcome]:
    """One Outcome per call from `result.json` (R or Julia); errors become RemoteError with
    the R/Julia traceback and the log location in the message."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or KEY_STATUS not in doc:
        raise ValueError(f"{path}: not a batchlaunch result envelope")
    if doc[KEY_STATUS] == STATUS_CHUNK:
        items = list(doc.get(KEY_OUTCOMES) or [])
    else:
        items = [doc] * (expected or 1) if doc[KEY_STATUS] == STATUS_ERROR else [doc]
    count = expected if expected is not None else len(items)
    outcomes = [_json_outcome(item, doc, log_location) for item in items[:count]]
    outcomes += [
        _failure(
            ResultMissing,
            f"result.json holds {len(items)} outcomes but {count} calls were sent",
            log_location,
        )
        for _ in range(count - len(outcomes))
    ]
    return outcomes


def read_json_result(path: str | Path, *, log_location: str | None = None) -> Outcome:
    """The Outcome of a single-call R or Julia task."""
    return read_json_results(path, expected=1, log_location=log_location)[0]


def _exit_reason(exit_code: int) -> str:
    signum = -exit_code if exit_code < 0 else exit_code - 128 if exit_code > 128 else 0
    try:
        name = signal.Signals(signum).name if signum else ""
    except ValueError:
        name = ""
    text = "the task exited without writing a result"
    if name == "SIGKILL":
        return text + " (killed by SIGKILL: out of memory?)"
    return text + (f" (killed by {name})" if name else "")


def task_outcomes(
    language: str,
    result_path: str | Path | None,
    *,
    expected: int,
    exit_code: int | None,
    stderr_tail: str = "",
    timed_out: bool = False,
    preempted: bool = False,
    log_location: str | None = None,
) -> list[Outcome]:
    """What every call of a finished task resolves to: the envelope when it arrived
    (whatever the exit code), else a specific TaskFailed. Feed it Batch's facts:
    `exit_code` from executionInfo, `timed_out` when failureInfo says the wall-clock limit
    hit, `preempted` when the node was preempted, the downloaded result file (None or a
    missing path when it never arrived) and the tail of stderr.txt."""
    stopped: type[TaskFailed] = (
        NodePreempted if preempted else TaskTimedOut if timed_out else TaskCrashed
    )
    unreadable = ""
    if result_path is not None and Path(result_path).is_file():
        try:
            if language == "python":
                return read_python_results(
                    result_path, expected=expected, log_location=log_location, stopped=stopped
                )
            return read_json_results(result_path, expected=expected, log_location=log_location)
        except (OSError, ValueError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as err:
            unreadable = f" (a result file arrived but is unreadable: {type(err).__name__}: {err})"
    error: Callable[[], TaskFailed]
    if preempted:

        def error() -> TaskFailed:
            return NodePreempted(
                "the node was preempted while the task ran" + unreadable,
                log_location=log_location,
                stderr_tail=stderr_tail,
            )
    elif timed_out:

        def error() -> TaskFailed:
            return TaskTimedOut(
                "the task exceeded its wall-clock limit and was killed" + unreadable,
                log_location=log_location,
                exit_code=exit_code,
                stderr_tail=stderr_tail,
            )
    elif exit_code is None or exit_code == 0:

        def error() -> TaskFailed:
            return ResultMissing(
                f"the task finished but {result_file(language)} never arrived (output upload "
                "failed? see fileuploaderr.txt)" + unreadable,
                log_location=log_location,
                exit_code=exit_code,
                stderr_tail=stderr_tail,
            )
    else:
        code = exit_code

        def error() -> TaskFailed:
            return TaskCrashed(
                _exit_reason(code) + unreadable,
                log_location=log_location,
                exit_code=code,
                stderr_tail=stderr_tail,
            )

    return [Outcome(False, error=error()) for _ in range(expected)]
