"""A lean process launcher: glibc posix_spawnp with file actions, through ctypes.

Why: the emulator's throughput on short tasks is bound by the cost of starting processes.
subprocess.Popen does its setup in Python and opens the log files in the parent; posix_spawnp
with `addchdir_np`, `addopen` and `POSIX_SPAWN_SETSID` does the chdir, the stdout/stderr
opens and setsid in the child (vfork-style, in parallel with the service) and the foreign call
releases the GIL. Signals Python ignores (SIGPIPE, SIGXFSZ) are reset to default in the child,
as Popen's restore_signals does; descriptors from 3 up are closed (closefrom), as close_fds.

`available()` is False where glibc lacks these calls; the caller then falls back to Popen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from pathlib import Path

POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
POSIX_SPAWN_SETSID = 0x80
_BUF = 1024  # larger than glibc's posix_spawnattr_t (336) and file_actions_t (80)

_libc: ctypes.CDLL | None = None
try:
    _path = ctypes.util.find_library("c")
    if _path:
        _candidate = ctypes.CDLL(_path, use_errno=True)
        for _name in (
            "posix_spawnp",
            "posix_spawn_file_actions_init",
            "posix_spawn_file_actions_destroy",
            "posix_spawn_file_actions_addopen",
            "posix_spawn_file_actions_addchdir_np",
            "posix_spawn_file_actions_addclosefrom_np",
            "posix_spawnattr_init",
            "posix_spawnattr_destroy",
            "posix_spawnattr_setflags",
            "posix_spawnattr_setsigdefault",
            "posix_spawnattr_setsigmask",
            "sigemptyset",
            "sigaddset",
        ):
            getattr(_candidate, _name)
        _libc = _candidate
except (OSError, AttributeError):
    _libc = None


def available() -> bool:
    return _libc is not None


def _strings(items: list[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    array = (ctypes.c_char_p * (len(items) + 1))()
    for index, item in enumerate(items):
        array[index] = item
    array[len(items)] = None
    return array


def spawn(argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path) -> int:
    """Start `argv` in a new session with cwd and log files set in the child; returns the pid.

    Raises OSError with the child's errno when the program cannot be executed.
    """
    libc = _libc
    if libc is None:
        raise OSError("posix_spawn file actions are unavailable")
    actions = ctypes.create_string_buffer(_BUF)
    attr = ctypes.create_string_buffer(_BUF)
    sigdef = ctypes.create_string_buffer(256)
    sigmask = ctypes.create_string_buffer(256)
    libc.posix_spawn_file_actions_init(actions)
    libc.posix_spawnattr_init(attr)
    try:
        # Each try starts with empty logs, as on Batch (a retry does not append).
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0)
        libc.posix_spawn_file_actions_addopen(actions, 1, os.fsencode(stdout), flags, 0o644)
        libc.posix_spawn_file_actions_addopen(actions, 2, os.fsencode(stderr), flags, 0o644)
        libc.posix_spawn_file_actions_addclosefrom_np(actions, 3)
        libc.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(cwd))
        libc.sigemptyset(sigdef)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            libc.sigaddset(sigdef, int(sig))
        libc.sigemptyset(sigmask)
        libc.posix_spawnattr_setsigdefault(attr, sigdef)
        libc.posix_spawnattr_setsigmask(attr, sigmask)
        libc.posix_spawnattr_setflags(
            attr,
            ctypes.c_short(POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK),
        )
        pid = ctypes.c_int(0)
        c_argv = _strings([os.fsencode(a) for a in argv])
        c_env = _strings([os.fsencode(f"{k}={v}") for k, v in env.items()])
        err = libc.posix_spawnp(
            ctypes.byref(pid), os.fsencode(argv[0]), actions, attr, c_argv, c_env
        )
        if err:
            raise OSError(err, os.strerror(err), argv[0])
        return int(pid.value)
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attr)
