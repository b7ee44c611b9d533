"""Exceptions a shipped function's future can resolve with.

A function that raised comes back as its own exception type when it unpickles here, with a
`RemoteTraceback` as `__cause__` (the way `concurrent.futures.ProcessPoolExecutor` does it)
and a note naming the log location, so `str(exc)` and `exc.args` stay what user code
expects. Otherwise it comes back as `RemoteError`, whose message holds everything. Task-level
failures (no result to read) are `TaskFailed` subclasses: never a silent `None`.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import UserError


def _logs_line(log_location: str | None) -> str:
    return f"\nlogs: {log_location}" if log_location else ""


class RemoteTraceback(Exception):
    """Carries the remote traceback text; attached as `__cause__` of a re-raised exception."""

    def __init__(self, traceback_text: str, log_location: str | None = None) -> None:
        super().__init__(traceback_text, log_location)
        self.traceback_text = traceback_text
        self.log_location = log_location

    def __str__(self) -> str:
        text = self.traceback_text.rstrip()
        return f"\n\nremote traceback:\n{text}{_logs_line(self.log_location)}"


class RemoteError(Exception):
    """The remote function raised something that cannot be recreated here (an R or Julia
    error, or a Python exception that does not pickle): type name, message and traceback."""

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback: str = "",
        log_location: str | None = None,
        language: str = "python",
    ) -> None:
        super().__init__(type_name, message, traceback, log_location, language)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.log_location = log_location
        self.language = language

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if self.traceback:
            text += f"\n\nremote {self.language} traceback:\n{self.traceback.rstrip()}"
        return text + _logs_line(self.log_location)


class PayloadLoadError(RemoteError):
    """Nothing ran: the node could not load the function or its arguments (a module missing
    on the node, a payload it cannot read). The message keeps the runner's hint: what failed
    to load and why, with the Python and cloudpickle versions of client and node."""


class ResultUnreadable(RemoteError):
    """The function returned, but its value could not be unpickled on the client (for
    example its class lives in a package installed on the node only)."""


class TaskFailed(Exception):
    """The task ended without a result to read; the message says why and where the logs are."""

    def __init__(
        self,
        reason: str,
        *,
        log_location: str | None = None,
        exit_code: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_location = log_location
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        text = self.reason
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.stderr_tail.strip():
            text += f"\n\nstderr (tail):\n{self.stderr_tail.rstrip()}"
        return text + _logs_line(self.log_location)

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self.log_location, self.exit_code, self.stderr_tail)
        return (_rebuild_task_failed, (type(self), self.reason, state))


def _rebuild_task_failed(
    cls: type[TaskFailed], reason: str, state: tuple[str | None, int | None, str]
) -> TaskFailed:
    return cls(reason, log_location=state[0], exit_code=state[1], stderr_tail=state[2])


class TaskCrashed(TaskFailed):
    """The process exited (non-zero, or killed) without writing a result."""


class TaskTimedOut(TaskFailed):
    """The task hit its wall-clock limit and was killed."""


class NodePreempted(TaskFailed):
    """The node (low priority / spot) was preempted while the task ran."""


class ResultMissing(TaskFailed):
    """The task exited 0 but its result file never arrived (upload failed or was deleted)."""


class PythonVersionMismatch(TaskFailed):
    """Client and node run different Python minor versions: the pickles cannot load."""


class PayloadTooLarge(UserError):
    """A pickled function or argument set is above the size limit (the message says how to
    ship the data instead)."""
