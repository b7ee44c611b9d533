"""batchlaunch's client: parameter files -> pools, jobs, tasks, functions, outputs, SSH.

The public names are imported lazily so `import launcher` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatchExecutor", "Client", "gather", "julia", "r", "reduce_as_completed"]

_LAZY = {
    "BatchExecutor": "launcher.executor",
    "julia": "launcher.executor",
    "r": "launcher.executor",
    "Client": "launcher.client",
    "gather": "launcher.fetch",
    "reduce_as_completed": "launcher.fetch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")
