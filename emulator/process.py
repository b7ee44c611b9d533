"""Running one command line on the "node": no shell, own process group, event-driven exit.

Processes start with subprocess.Popen (vfork/posix_spawn under the hood, close_fds) and their
exit is observed through a pidfd registered with the event loop, so waiting costs no thread
and no polling. A timeout or a kill signals the whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emulator import spawn as fast_spawn


class LaunchError(Exception):
    """The command line could not be executed (bad quoting, program not found)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Running:
    """A started process; `kill()` ends its whole process group."""

    pid: int
    done: asyncio.Future[int]
    killed_by: str | None = None
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def kill(self, reason: str) -> None:
        if self.done.done():
            return
        self.killed_by = self.killed_by or reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def split(command_line: str) -> list[str]:
    try:
        argv = shlex.split(command_line)
    except ValueError as exc:
        raise LaunchError("CommandLineInvalid", f"cannot parse the command line: {exc}") from None
    if not argv:
        raise LaunchError("CommandLineInvalid", "the command line is empty")
    return argv


def make_dirs(task_dir: Path, wd: Path) -> None:
    """The task dir and its wd, in two syscalls when the parents exist (the common case)."""
    try:
        os.mkdir(task_dir)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(task_dir, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(wd)


def spawn(
    command_line: str,
    cwd: Path,
    env: dict[str, str],
    stdout: Path,
    stderr: Path,
    prepare: Callable[[], None] | None = None,
) -> int:
    """Blocking part of a launch (directories, log files, fork/exec): runs on a worker thread,
    where these syscalls release the GIL and overlap across cores. Returns the pid."""
    argv = split(command_line)
    if prepare is not None:
        prepare()
    try:
        if fast_spawn.available():
            return fast_spawn.spawn(argv, cwd, env, stdout, stderr)
        with open(stdout, "wb") as out, open(stderr, "wb") as err:  # each try: fresh logs
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                close_fds=True,
                start_new_session=True,
            )
            proc.returncode = 0  # reaped by watch(); keep Popen's own bookkeeping out of it
            return proc.pid
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise LaunchError(
                "CommandProgramNotFound", f"The specified command program is not found: {argv[0]}"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOEXEC):
            raise LaunchError(
                "CommandProgramNotExecutable",
                f"The specified command program is not executable: {argv[0]}",
            ) from None
        raise LaunchError("CommandLaunchFailed", f"cannot start {argv[0]}: {exc}") from None


def watch(pid: int, timeout: float | None, keep_group: bool = False) -> Running:
    """Observe the exit of `pid` through a pidfd on the running loop (no thread, no polling).

    `keep_group` leaves the group's background children alive after the leader exits (a
    multi-instance coordination command starts services that must outlive it)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    running = Running(pid, done)
    pidfd = os.pidfd_open(pid)

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if running._timer:
            running._timer.cancel()
        # The group may hold orphans (background children): end them with their leader.
        if not keep_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if not done.done():
            done.set_result(128 - code if code < 0 else code)

    loop.add_reader(pidfd, reap)
    if timeout is not None:
        running._timer = loop.call_later(max(timeout, 0.0), running.kill, "timeout")
    return running
