"""Run a function task the way a node does: runner file + payloads in a task working dir,
AZ_BATCH_* variables set, the command from `launcher.runners.command_line` executed without
a shell. The Python "node" is `python -S`: the standard library only (no site-packages, so
no cloudpickle of its own), plus the cloudpickle.zip the executor ships beside the runner:
not batchlaunch, not the tests, not the user's files. `stale_cloudpickle_site` gives a node
another cloudpickle version instead."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle

from launcher import envelope, runners
from launcher.pickling import content_hash


@dataclass
class TaskRun:
    wd: Path
    exit_code: int
    stdout: str
    stderr: str
    result: Path

    def outcomes(self, language: str, expected: int = 1, **facts: object) -> list[envelope.Outcome]:
        """What the executor would resolve the futures with."""
        return envelope.task_outcomes(
            language,
            self.result,
            expected=expected,
            exit_code=self.exit_code,
            stderr_tail=envelope.tail(self.stderr),
            log_location=f"task {self.wd.parent.name}: {self.wd.parent / 'stderr.txt'}",
            **facts,  # type: ignore[arg-type]
        )


#: The version the stale copy claims, and the internal it lacks: cloudpickle 2.1.0 has no
#: `_function_setstate`, so loading a 3.x function pickle fails with an AttributeError.
STALE_VERSION = "2.1.0"
STALE_MISSING = "_function_setstate"


def stale_cloudpickle_site(root: Path) -> Path:
    """A site dir holding a cloudpickle that behaves like an older release installed on the
    node: a copy of the client's with the version set to 2.1.0 and `_function_setstate`
    removed (exactly how a real 2.1.0 fails on a 3.x payload: AttributeError)."""
    site = root / "stale-site"
    if not site.exists():
        package = site / "cloudpickle"
        package.mkdir(parents=True)
        for path in Path(cloudpickle.__file__).parent.glob("*.py"):
            (package / path.name).write_bytes(path.read_bytes())
        with (package / "__init__.py").open("a") as f:
            f.write(f"\n__version__ = {STALE_VERSION!r}\n")
        with (package / "cloudpickle.py").open("a") as f:
            f.write(f"\ndel {STALE_MISSING}\n")
    return site


def task_dir(root: Path, task_id: str) -> Path:
    """workitems/JOB/job-1/TASK/wd, as on a Batch node."""
    wd = root / "workitems" / "job" / "job-1" / task_id / "wd"
    wd.mkdir(parents=True)
    return wd


def node_env(root: Path, wd: Path, task_id: str, pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AZ_BATCH"))}
    env.update(
        AZ_BATCH_NODE_ROOT_DIR=str(root),
        AZ_BATCH_NODE_SHARED_DIR=str(root / "shared"),
        AZ_BATCH_NODE_STARTUP_DIR=str(root / "startup"),
        AZ_BATCH_TASK_DIR=str(wd.parent),
        AZ_BATCH_TASK_WORKING_DIR=str(wd),
        AZ_BATCH_JOB_ID="job",
        AZ_BATCH_TASK_ID=task_id,
        AZ_BATCH_NODE_ID="tvmps_test_node",
        AZ_BATCH_POOL_ID="pool",
    )
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def start_python_task(
    root: Path,
    task_id: str,
    function_payload: bytes,
    args_payload: bytes,
    *,
    bundle: bool = True,
    site: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the runner as a node would. `bundle`: ship cloudpickle.zip beside it (as the
    executor does); `site`: the node's installed packages (PYTHONPATH), none by default."""
    wd = task_dir(root, task_id)
    (wd / runners.runner_file("python")).write_bytes(runners.runner_bytes("python"))
    if bundle:
        (wd / runners.CLOUDPICKLE_ZIP).write_bytes(runners.cloudpickle_zip())
    fn_file = envelope.function_file(content_hash(function_payload))
    (wd / fn_file).write_bytes(function_payload)
    (wd / envelope.ARGS_PICKLE).write_bytes(args_payload)
    command = runners.command_line(
        "python",
        function_file=fn_file,
        args_file=envelope.ARGS_PICKLE,
        out_file=envelope.RESULT_PICKLE,
    )
    argv = shlex.split(command)
    assert argv[0] == "python3"
    argv[0:1] = [sys.executable, "-S"]  # the runtime's python3, without site-packages
    env = node_env(root, wd, task_id, site)
    proc = subprocess.Popen(argv, cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, wd


def finish(
    proc: subprocess.Popen[bytes], wd: Path, result_name: str, timeout: float = 60
) -> TaskRun:
    out, err = proc.communicate(timeout=timeout)
    (wd.parent / "stdout.txt").write_bytes(out)
    (wd.parent / "stderr.txt").write_bytes(err)
    return TaskRun(wd, proc.returncode, out.decode(), err.decode(), wd / result_name)


def run_python_task(
    root: Path,
    task_id: str,
    function_payload: bytes,
    args_payload: bytes,
    *,
    bundle: bool = True,
    site: Path | None = None,
) -> TaskRun:
    proc, wd = start_python_task(
        root, task_id, function_payload, args_payload, bundle=bundle, site=site
    )
    return finish(proc, wd, envelope.RESULT_PICKLE)


def run_json_task(
    root: Path,
    language: str,
    task_id: str,
    source: Path,
    function: str,
    args_payload: bytes,
    interpreter: str,
) -> TaskRun:
    """R (or Julia) task: the source file and args.json shipped beside the runner."""
    wd = task_dir(root, task_id)
    (wd / runners.runner_file(language)).write_bytes(runners.runner_bytes(language))
    (wd / source.name).write_bytes(source.read_bytes())
    (wd / envelope.ARGS_JSON).write_bytes(args_payload)
    command = runners.command_line(
        language,
        source_file=source.name,
        function_name=function,
        args_file=envelope.ARGS_JSON,
        out_file=envelope.RESULT_JSON,
    )
    argv = shlex.split(command)
    argv[0] = interpreter
    proc = subprocess.Popen(
        argv,
        cwd=wd,
        env=node_env(root, wd, task_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return finish(proc, wd, envelope.RESULT_JSON)
