"""Where batchlaunch keeps its files on the user's machine.

Everything lives under one directory so that tests (and users with several setups) can
isolate it with a single environment variable, ``BATCHLAUNCH_HOME``.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$BATCHLAUNCH_HOME``, else ``~/.batchlaunch``."""
    configured = os.environ.get("BATCHLAUNCH_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".batchlaunch"


def emulator_state_dir() -> Path:
    """State of the embedded emulator daemon (pools, jobs, tasks, node directories)."""
    return home() / "emulator"


def local_store_dir() -> Path:
    """The `storage.url = "local"` directory store: one subdirectory per container."""
    return home() / "store"


def runs_dir() -> Path:
    """One record per run id (what `status`, `collect` and resumed runs read)."""
    return home() / "runs"


def ssh_dir() -> Path:
    """Generated SSH keys (0600) and the tool's own known_hosts."""
    return home() / "ssh"
