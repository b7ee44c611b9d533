"""The interactive side of `Connection.shell`: a pty on the node wired to this terminal.

The local terminal goes into raw mode, so every key (Ctrl-C included) is sent to the
remote as a byte and reaches the remote program through the remote pty's line discipline,
exactly as with ssh(1); nothing kills the client. SIGWINCH is turned into a pty resize. The
signal handlers only write a byte to a self-pipe that the select loop watches, so no
paramiko call ever runs inside a signal handler.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import struct
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO

import paramiko

from launcher.errors import UserError

_WINCH = b"w"
_INTR = b"c"


def window_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd`, else of the environment, else 80x24."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        if rows and cols:
            return cols, rows
    except OSError:
        pass
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


def interactive(
    transport: paramiko.Transport,
    stdin: IO[bytes] | IO[str],
    stdout: IO[bytes] | IO[str],
    command: str | None = None,
) -> int:
    """Run a login shell (or `command`, e.g. one that sets up an environment and execs a
    shell) on a pty until it exits; its exit status (-1 if none was sent)."""
    try:
        in_fd, out_fd = stdin.fileno(), stdout.fileno()
    except (AttributeError, OSError, ValueError):
        raise UserError("ssh: an interactive shell needs a terminal (or pass -- CMD)") from None
    stdout.flush()
    is_tty = os.isatty(in_fd)
    size = window_size(out_fd if os.isatty(out_fd) else in_fd)
    chan = transport.open_session()
    try:
        chan.get_pty(term=os.environ.get("TERM", "xterm"), width=size[0], height=size[1])
        if command is None:
            chan.invoke_shell()
        else:
            chan.exec_command(command)
        with _signals(catch_interrupt=not is_tty) as wake, _raw(in_fd if is_tty else None):
            _loop(chan, in_fd, out_fd, wake, size)
        return chan.recv_exit_status()
    finally:
        chan.close()


def _loop(
    chan: paramiko.Channel, in_fd: int, out_fd: int, wake: int | None, size: tuple[int, int]
) -> None:
    stdin_open = True
    while True:
        watch: list[paramiko.Channel | int] = [chan]
        if stdin_open:
            watch.append(in_fd)
        if wake is not None:
            watch.append(wake)
        ready, _, _ = select.select(watch, [], [], 0.5)
        while chan.recv_ready():
            _write_all(out_fd, chan.recv(65536))
        while chan.recv_stderr_ready():
            _write_all(out_fd, chan.recv_stderr(65536))
        if (chan.eof_received or chan.closed) and not (
            chan.recv_ready() or chan.recv_stderr_ready()
        ):
            return
        if wake is not None and wake in ready:
            signals = os.read(wake, 1024)
            if _INTR in signals:
                chan.sendall(b"\x03")
        new_size = window_size(out_fd if os.isatty(out_fd) else in_fd)
        if new_size != size:  # checked every turn too: SIGWINCH only reaches the main thread
            size = new_size
            chan.resize_pty(width=size[0], height=size[1])
        if stdin_open and in_fd in ready:
            data = os.read(in_fd, 4096)
            if data:
                chan.sendall(data)
            else:  # local EOF (piped input): Ctrl-D to the remote line discipline
                chan.sendall(b"\x04")
                stdin_open = False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _raw(fd: int | None) -> Iterator[None]:
    """Raw mode on a terminal, restored however we leave."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _signals(catch_interrupt: bool) -> Iterator[int | None]:
    """SIGWINCH (and SIGINT when stdin is not a terminal) -> a byte on a self-pipe."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    r, w = os.pipe()
    os.set_blocking(w, False)

    def handler(tag: bytes) -> Callable[[int, FrameType | None], None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(OSError):
                os.write(w, tag)

        return on_signal

    old_winch = signal.signal(signal.SIGWINCH, handler(_WINCH))
    old_int = signal.signal(signal.SIGINT, handler(_INTR)) if catch_interrupt else None
    try:
        yield r
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        os.close(r)
        os.close(w)
