"""A fake Batch node on this machine: temp dirs for every AZ_BATCH_* variable.

The start task and task commands run exactly as Batch runs them on Linux: the command line
is split with shlex and exec'd without a shell, with the node's environment variables.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap import wrap_command


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Node:
    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sub in ("startup/wd", "shared", "fsmounts", "workitems/job/job-1/t1/wd"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def startup_wd(self) -> Path:
        return self.root / "startup" / "wd"

    def env(self, task: bool) -> dict[str, str]:
        # A node does not inherit this machine's CA-bundle variables (the emulator's nodes
        # do not either): the start task must find the system trust store on its own.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZ_BATCH_", "VIRTUAL_ENV", "PIP_", "UV_"))
            and not any(word in k for word in ("CERT", "CA_BUNDLE", "SSL"))
        }
        base.update(
            AZ_BATCH_ACCOUNT_NAME="devbatch",
            AZ_BATCH_ACCOUNT_URL="http://127.0.0.1:1",
            AZ_BATCH_NODE_ID="tvm-1",
            AZ_BATCH_POOL_ID="pool",
            AZ_BATCH_NODE_IS_DEDICATED="true",
            AZ_BATCH_NODE_ROOT_DIR=str(self.root),
            AZ_BATCH_NODE_SHARED_DIR=str(self.shared),
            AZ_BATCH_NODE_STARTUP_DIR=str(self.root / "startup"),
            AZ_BATCH_NODE_MOUNTS_DIR=str(self.root / "fsmounts"),
            AZ_BATCH_TASK_DIR=str(self.root / ("workitems/job/job-1/t1" if task else "startup")),
            AZ_BATCH_TASK_WORKING_DIR=str(
                self.root / ("workitems/job/job-1/t1/wd" if task else "startup/wd")
            ),
        )
        if task:
            base.update(AZ_BATCH_JOB_ID="job", AZ_BATCH_TASK_ID="t1")
        base.update(self.extra_env)
        return base

    def _exec(self, argv: list[str], task: bool, timeout: float) -> Run:
        cwd = self.root / ("workitems/job/job-1/t1/wd" if task else "startup/wd")
        start = time.monotonic()
        proc = subprocess.run(
            argv, cwd=cwd, env=self.env(task), capture_output=True, text=True, timeout=timeout
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)

    def start_task(self, script: str, timeout: float = 240) -> Run:
        path = self.startup_wd / "batchlaunch-start.sh"
        path.write_text(script)
        return self._exec(["/bin/bash", str(path)], task=False, timeout=timeout)

    def task(self, command: str, timeout: float = 60) -> Run:
        """Run `command` the way the launcher creates tasks: through `wrap_command`."""
        return self._exec(shlex.split(wrap_command(command)), task=True, timeout=timeout)
