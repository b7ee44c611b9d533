#!/usr/bin/env python3
"""batchlaunch's node-side runner for Python functions (shipped to nodes as a resource file).

Self-contained on purpose: a node has the runtime's Python, never batchlaunch, so this file
imports only the standard library and cloudpickle. The cloudpickle it uses is the client's
own, shipped as ``cloudpickle.zip`` beside this file and put first on ``sys.path``
(zipimport): a node whose Python has another cloudpickle version, or none, still loads the
payloads with the version that wrote them. Without the zip it falls back to the node's
installed cloudpickle. The client imports the payload-format helpers below from here
(`launcher.pickling`, `launcher.envelope`) so the two sides cannot drift apart.

Usage (what a task runs, in its working directory)::

    python3 run_python.py --function FUNC.pkl --args ARGS.pkl --out result.pkl

Payload files (function and arguments) are one header line, then a cloudpickle body::

    BATCHLAUNCH-PAYLOAD/1 {"kind": "function", "python": "3.11.7", ...}\\n<pickle bytes>

The header is read first, before anything is unpickled, so a client/node Python minor
version mismatch gives a clear error envelope instead of an unpickling crash.

The result file is one header line (kind "result"), then a pickle (protocol 4) of a dict
holding only builtins: ``setup_error`` (None or an error tuple: the function or arguments
could not be loaded; it applies to every call), ``outcomes`` (one tuple per call, in
order), ``chunk``, ``terminated``, timings. An outcome is ``("ok", value_bytes)`` or
``("error", exc_bytes_or_None, traceback_text, type_name, message)``, where ``value_bytes``
and ``exc_bytes`` are separate cloudpickles: a value or exception the client cannot
unpickle spoils only its own outcome, never the envelope.

Exit codes (the launcher's policy):
    0                 the result file was written; read it (the calls may still have raised)
    128 + signal      stopped by SIGTERM/SIGINT (time limit, terminate); the result file
                      was written with the calls finished so far, the rest marked terminated
    2                 bad command line (argparse); no result file
    70                the runner itself failed to write the result file; see stderr
    anything else     the process died (os._exit, segfault, OOM kill): no result file
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

RUNNER_NAME = "run_python.py"
#: The client's own cloudpickle (a zip of the pure-Python package), shipped beside this file.
CLOUDPICKLE_ZIP = "cloudpickle.zip"


def bundled_cloudpickle() -> str | None:
    """Path of the cloudpickle zip shipped beside the runner, if there is one."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), CLOUDPICKLE_ZIP)
    return path if os.path.isfile(path) else None


if __name__ == "__main__":
    # On a node: the client's cloudpickle (zipimport) wins over whatever the node's Python
    # has installed (another version, or none), so payloads always unpickle with the
    # version that pickled them. The client imports this module and keeps its own.
    _ZIP = bundled_cloudpickle()
    if _ZIP is not None:
        sys.path.insert(0, _ZIP)

try:
    import cloudpickle
except ImportError:  # reported by main() as a clear error envelope, not a crash
    cloudpickle = None

MAGIC = b"BATCHLAUNCH-PAYLOAD/1 "
FORMAT_VERSION = 1
ENVELOPE_PROTOCOL = 4
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_RUNNER_FAILED = 70
# Type names the runner itself produces; the client maps them onto its own exception types.
VERSION_MISMATCH = "PythonVersionMismatch"
TERMINATED = "RunnerTerminated"
RESULT_NOT_PICKLABLE = "ResultNotPicklable"
MISSING_PACKAGE = "MissingPackage"
BAD_PAYLOAD = "BadPayload"

if TYPE_CHECKING:  # not evaluated at run time: the node's Python may be older than 3.9
    Outcome = tuple[Any, ...]


class PayloadFormatError(ValueError):
    """A payload file does not start with a batchlaunch header."""


class RunnerTerminated(BaseException):
    """Raised inside the user's function when the runner gets SIGTERM or SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def python_minor(version: str | None = None) -> str:
    """`3.11` for this interpreter (or for a `3.11.7` string): pickles are portable within it."""
    if version is None:
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    return ".".join(version.split(".")[:2])


def base_header(kind: str) -> dict[str, Any]:
    """The header every payload and result carries: what wrote it, with which versions."""
    return {
        "format": FORMAT_VERSION,
        "kind": kind,
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "cloudpickle": cloudpickle.__version__ if cloudpickle is not None else None,
    }


def pack(header: dict[str, Any], body: bytes) -> bytes:
    """Header line + body. Keys are sorted so equal headers give equal bytes."""
    line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + line + b"\n" + body


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a payload into its header (never unpickled) and its body."""
    if not data.startswith(MAGIC):
        raise PayloadFormatError("not a batchlaunch payload (missing header line)")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise PayloadFormatError("truncated batchlaunch payload header")
    header = json.loads(data[len(MAGIC) : end])
    if not isinstance(header, dict):
        raise PayloadFormatError("batchlaunch payload header is not a JSON object")
    return header, data[end + 1 :]


def write_atomic(path: str, data: bytes) -> None:
    """Write via a temp file in the same directory and os.replace: readers (and OutputFiles
    uploads) see the whole file or none of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remote_traceback(exc: BaseException, skip: int = 0) -> str:
    """Traceback text of `exc`, without the runner's own `skip` outermost frames."""
    tb: TracebackType | None = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def exception_bytes(exc: BaseException) -> bytes | None:
    """The pickled exception, or None when it does not survive a pickle round trip here
    (the client then gets type name, message and traceback as a RemoteError)."""
    try:
        data = cloudpickle.dumps(exc)
        cloudpickle.loads(data)
    except Exception:
        return None
    return data


def error_outcome(exc: BaseException, tb_text: str) -> Outcome:
    """("error", exc_bytes_or_None, traceback_text, type_name, message)."""
    exc_type = type(exc)
    name = exc_type.__qualname__
    if exc_type.__module__ not in ("builtins", "__main__"):
        name = f"{exc_type.__module__}.{name}"
    try:
        message = str(exc)
    except Exception as err:  # a broken __str__ must not lose the outcome
        message = f"<str() failed: {err!r}>"
    return ("error", exception_bytes(exc), tb_text, name, message)


def runner_error(type_name: str, message: str) -> Outcome:
    """An error produced by the runner itself (not raised by the user's code)."""
    return ("error", None, f"{type_name}: {message}\n", type_name, message)


def read_payload(path: str, kind: str) -> tuple[dict[str, Any], bytes]:
    with open(path, "rb") as f:
        header, body = unpack(f.read())
    if header.get("kind") not in ((kind,) if kind == "function" else ("call", "chunk")):
        raise PayloadFormatError(f"{path}: payload kind {header.get('kind')!r}, expected {kind}")
    return header, body


def check_version(header: dict[str, Any], path: str) -> Outcome | None:
    """An error outcome when the payload was pickled by another Python minor version."""
    client = str(header.get("python", "?"))
    if python_minor(client) == python_minor():
        return None
    node = base_header("result")["python"]
    return runner_error(
        VERSION_MISMATCH,
        f"{os.path.basename(path)} was pickled by Python {client} on the client but this "
        f"node runs Python {node} ({sys.executable}); pickled functions only load within "
        f"one minor version. Use Python {python_minor(client)} on the client, or set "
        f'[runtime] version = "{python_minor(node)}" in the parameter file.',
    )


def cloudpickle_origin() -> str:
    """`3.1.2 (shipped by the client)` or `2.1.0 (installed: /path)`, for error messages."""
    if cloudpickle is None:
        return "none"
    where = str(getattr(cloudpickle, "__file__", "?"))
    zipped = bundled_cloudpickle()
    if zipped is not None and where.startswith(zipped + os.sep):
        return f"{cloudpickle.__version__} (shipped by the client)"
    return f"{cloudpickle.__version__} (installed: {os.path.dirname(where)})"


def load_error(exc: BaseException, what: str, header: dict[str, Any]) -> Outcome:
    """An unpickling failure, with the version facts that usually explain it. The outcome
    carries no exception bytes: the client raises it as a load error with this message,
    never as a bare rebuilt AttributeError/ModuleNotFoundError that lost the hint."""
    _, _, tb_text, type_name, message = error_outcome(exc, remote_traceback(exc))
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    advice = (
        f"module {missing!r} is not importable on the node: install it there via "
        "[runtime] packages, or if it is your own code, do not pass it in by_reference"
        if missing
        else "a missing module must be installed on the node via [runtime] packages"
    )
    hint = (
        f" (while loading the {what}: pickled on the client with Python "
        f"{header.get('python')} and cloudpickle {header.get('cloudpickle')}; this node has "
        f"Python {base_header('result')['python']} ({sys.executable}) and cloudpickle "
        f"{cloudpickle_origin()}; {advice})"
    )
    return ("error", None, tb_text, type_name, message + hint)


def load(function_path: str, args_path: str) -> tuple[Callable[..., Any], list[Any], bool]:
    """Function, list of (args, kwargs), and whether it is a chunk; raises _Setup on failure."""
    try:
        fn_header, fn_body = read_payload(function_path, "function")
        args_header, args_body = read_payload(args_path, "args")
    except (OSError, ValueError) as exc:
        raise _Setup(runner_error(BAD_PAYLOAD, f"{type(exc).__name__}: {exc}")) from exc
    for header, path in ((fn_header, function_path), (args_header, args_path)):
        mismatch = check_version(header, path)
        if mismatch is not None:
            raise _Setup(mismatch)
    try:
        fn = cloudpickle.loads(fn_body)
    except RunnerTerminated:
        raise
    except BaseException as exc:
        raise _Setup(load_error(exc, "function", fn_header)) from exc
    try:
        calls = cloudpickle.loads(args_body)
    except RunnerTerminated:
        raise
    except BaseException as exc:
        raise _Setup(load_error(exc, "arguments", args_header)) from exc
    chunk = args_header["kind"] == "chunk"
    return fn, (list(calls) if chunk else [calls]), chunk


class _Setup(Exception):
    """Carries an error outcome that applies to every call (nothing could run)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome[4])
        self.outcome = outcome


def call_one(fn: Callable[..., Any], call: Any) -> Outcome:
    """Run one call; every BaseException becomes an error outcome (RunnerTerminated too,
    which the caller then uses to stop the chunk)."""
    args, kwargs = call
    try:
        _interruptible[0] = True
        try:
            value = fn(*args, **kwargs)
        finally:
            _interruptible[0] = False
    except RunnerTerminated as exc:
        return ("error", None, remote_traceback(exc, skip=1), TERMINATED, str(exc))
    except BaseException as exc:
        return error_outcome(exc, remote_traceback(exc, skip=1))
    try:
        return ("ok", cloudpickle.dumps(value))
    except Exception as exc:
        return runner_error(
            RESULT_NOT_PICKLABLE,
            f"the function returned a {type(value).__module__}.{type(value).__qualname__} "
            f"that cannot be pickled: {type(exc).__name__}: {exc}",
        )


def run(function_path: str, args_path: str) -> tuple[dict[str, Any], int | None]:
    """Build the result envelope; the second item is the terminating signal, if any."""
    envelope: dict[str, Any] = {
        "setup_error": None,
        "outcomes": [],
        "durations": [],
        "chunk": False,
        "terminated": None,
        "host": socket.gethostname(),
        "started": time.time(),
    }
    signum: int | None = None
    if cloudpickle is None:
        envelope["setup_error"] = runner_error(
            MISSING_PACKAGE,
            f"cloudpickle cannot be imported: {CLOUDPICKLE_ZIP} is not beside the runner "
            f"and this node's Python ({sys.executable}) has no cloudpickle installed; the "
            f"executor ships {CLOUDPICKLE_ZIP} with every Python task: check the task's "
            "resource files",
        )
        envelope["finished"] = time.time()
        return envelope, None
    try:
        _interruptible[0] = True
        try:
            fn, calls, envelope["chunk"] = load(function_path, args_path)
        finally:
            _interruptible[0] = False
    except _Setup as setup:
        envelope["setup_error"] = setup.outcome
        calls = []
    except RunnerTerminated as exc:
        signum = exc.signum
        envelope["setup_error"] = runner_error(TERMINATED, str(exc) + " while loading")
        calls = []
    if _last_signal is not None and envelope["setup_error"] is None:
        signum = _last_signal
        envelope["setup_error"] = runner_error(TERMINATED, "stopped by a signal before running")
        calls = []
    for index, call in enumerate(calls):
        t0 = time.monotonic()
        outcome = call_one(fn, call)
        envelope["outcomes"].append(outcome)
        envelope["durations"].append(time.monotonic() - t0)
        if _last_signal is not None:  # even if the function swallowed RunnerTerminated
            signum = _last_signal
            rest = len(calls) - index - 1
            note = runner_error(TERMINATED, "not run: the runner was stopped by a signal")
            envelope["outcomes"].extend([note] * rest)
            envelope["durations"].extend([0.0] * rest)
            break
    envelope["finished"] = time.time()
    envelope["terminated"] = signal.Signals(signum).name if signum else None
    return envelope, signum


_last_signal: int | None = None
# True while user code runs: a signal then raises inside it (so its traceback shows where
# it was stopped); between calls the signal is only recorded and the loop stops.
_interruptible = [False]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _last_signal
    _last_signal = signum
    if _interruptible[0]:
        _interruptible[0] = False
        raise RunnerTerminated(signum)


def summarize(envelope: dict[str, Any]) -> None:
    """One line on stdout and each error's traceback on stderr, for `batchlaunch logs`."""
    outcomes = envelope["outcomes"]
    if envelope["setup_error"] is not None:
        print(f"batchlaunch runner: nothing ran: {envelope['setup_error'][4]}", file=sys.stderr)
        sys.stderr.write(envelope["setup_error"][2])
        return
    errors = [o for o in outcomes if o[0] == "error"]
    print(f"batchlaunch runner: {len(outcomes)} call(s), {len(errors)} raised")
    for index, outcome in enumerate(outcomes):
        if outcome[0] == "error":
            print(f"--- call {index} raised {outcome[3]}:", file=sys.stderr)
            sys.stderr.write(outcome[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--function", required=True, help="pickled function payload")
    parser.add_argument("--args", required=True, help="pickled (args, kwargs) or chunk payload")
    parser.add_argument("--out", required=True, help="result file to write (atomically)")
    options = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    envelope, signum = run(options.function, options.args)
    # No more interruptions while the result is written: a half-run must not lose it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    header = base_header("result")
    header["runner"] = RUNNER_NAME
    try:
        write_atomic(options.out, pack(header, pickle.dumps(envelope, ENVELOPE_PROTOCOL)))
    except BaseException:
        traceback.print_exc()
        return EXIT_RUNNER_FAILED
    summarize(envelope)
    return 128 + signum if signum else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
