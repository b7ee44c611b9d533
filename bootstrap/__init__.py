"""What a node runs when it joins a pool: runtime specs -> start-task script.

Public API (used by the launcher):

- ``render_start_task(runtime, pool_kind="marketplace") -> str``: the start-task script.
- ``wrap_command(command) -> str``: a task's Batch command line that sources the env file.
- ``START_TASK_FILE`` / ``start_task_command()``: ship the script as a start-task resource
  file under that name and run it with that command line (elevated); ship
  ``runtime.requirements`` as a resource file named ``REQUIREMENTS_FILE``.
- the runtime models ``PythonRuntime``, ``JuliaRuntime``, ``RRuntime``, ``NoRuntime``
  (``RuntimeSpec`` is their union) and ``runtime_from_dict``.

On the node the start task installs into ``$AZ_BATCH_NODE_SHARED_DIR/batchlaunch`` and writes
``env.sh`` there (``BATCHLAUNCH_RUNTIME``, ``BATCHLAUNCH_PYTHON``/``BATCHLAUNCH_JULIA``/
``BATCHLAUNCH_RSCRIPT``, ``PATH``, ``VIRTUAL_ENV``, ``JULIA_DEPOT_PATH``, ``R_LIBS_USER`` and
``runtime.environment``); tasks source it through ``wrap_command``.
"""

from bootstrap.command import ENV_FILE, START_TASK_FILE, start_task_command, wrap_command
from bootstrap.render import REQUIREMENTS_FILE, render_start_task, spec_hash
from bootstrap.spec import (
    POOL_KINDS,
    JuliaRuntime,
    NoRuntime,
    PoolKind,
    PythonRuntime,
    RRuntime,
    RuntimeSpec,
    runtime_from_dict,
)

__all__ = [
    "ENV_FILE",
    "POOL_KINDS",
    "REQUIREMENTS_FILE",
    "START_TASK_FILE",
    "JuliaRuntime",
    "NoRuntime",
    "PoolKind",
    "PythonRuntime",
    "RRuntime",
    "RuntimeSpec",
    "render_start_task",
    "runtime_from_dict",
    "spec_hash",
    "start_task_command",
    "wrap_command",
]
