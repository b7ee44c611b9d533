"""The embedded emulator daemon behind `[batch] endpoint = "emulator"`.

One detached `python -m emulator serve` per state dir, found again through the endpoint file
it writes (endpoint + pid) and a health request, so `run --detach` then `status` from another
process talk to the same service. It exits by itself after an hour without requests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from emulator.config import DEFAULT_ACCOUNT, DEFAULT_KEY, Settings
from emulator.server import ENDPOINT_FILE, HEALTH_PATH, EmulatorInfo, _repo_env, command

DAEMON_IDLE_TIMEOUT = 3600.0
START_TIMEOUT = 30.0


def _alive(pid: int) -> bool:
    """Running (a zombie child of ours, which exited but is not reaped yet, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + HEALTH_PATH, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def running_emulator(state_dir: Path) -> EmulatorInfo | None:
    """The live daemon serving `state_dir`, if there is one."""
    try:
        data = json.loads((Path(state_dir) / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid, endpoint = data.get("pid"), data.get("endpoint")
    if (
        not isinstance(pid, int)
        or not isinstance(endpoint, str)
        or not _alive(pid)
        or not _healthy(endpoint)
    ):
        return None
    return EmulatorInfo(
        endpoint, data.get("account", DEFAULT_ACCOUNT), DEFAULT_KEY, pid, Path(state_dir)
    )


def ensure_emulator(state_dir: Path, idle_timeout: float = DAEMON_IDLE_TIMEOUT) -> EmulatorInfo:
    """Reuse the daemon for `state_dir` or start one detached and wait until it answers."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "daemon.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = running_emulator(state_dir)
        if info is not None:
            return info
        with contextlib.suppress(FileNotFoundError):
            (state_dir / ENDPOINT_FILE).unlink()
        settings = Settings(state_dir=state_dir, idle_timeout=idle_timeout)
        with open(state_dir / "emulator.log", "ab") as logfile:
            proc = subprocess.Popen(
                command(settings),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_repo_env(),
                cwd=state_dir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the emulator daemon exited with code {proc.returncode}; "
                    f"see {state_dir / 'emulator.log'}"
                )
            info = running_emulator(state_dir)
            if info is not None and info.pid == proc.pid:
                return info
            time.sleep(0.05)
        proc.kill()
        raise RuntimeError(
            f"the emulator daemon did not start within {START_TIMEOUT:.0f} s; "
            f"see {state_dir / 'emulator.log'}"
        )


def stop_emulator(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the daemon for `state_dir` (SIGTERM: children killed, state saved). True if one ran."""
    info = running_emulator(Path(state_dir))
    if info is None or info.pid is None:
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(info.pid):
        time.sleep(0.05)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    return True
