"""AzureClusterlessHPC ``parameters.json`` mapped onto batchlaunch's parameter file.

Users coming from AzureClusterlessHPC.jl keep their file; each `_KEY` we understand becomes
one of our keys (`_NUM_NODES_PER_TASK` > 1 makes every [[tasks]] entry a multi-node task), and
each one we do not (mpirun wrapping, several pools, credentials in a file) is named in a
warning so nothing is dropped silently.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from launcher.errors import UserError


class LegacyParamsWarning(UserWarning):
    """A key of an AzureClusterlessHPC parameters.json that batchlaunch ignores."""


# _KEY -> dotted batchlaunch key, and how to convert the (usually string) value.
_DIRECT: dict[str, tuple[str, str]] = {
    "_POOL_ID": ("pool.id", "str"),
    "_POOL_VM_SIZE": ("pool.vm_size", "str"),
    "_NODE_COUNT_PER_POOL": ("pool.dedicated_nodes", "int"),
    "_JOB_ID": ("job.id", "str"),
    "_BLOB_CONTAINER": ("storage.container", "str"),
    "_NUM_RETRYS": ("job.max_task_retries", "int"),
    "_CONTAINER": ("pool.container_image", "str"),
    "_JULIA_DEPOT_PATH": ("runtime.depot_path", "str"),
    "_OMP_NUM_THREADS": ("runtime.environment.OMP_NUM_THREADS", "env"),
    "_JULIA_NUM_THREADS": ("runtime.environment.JULIA_NUM_THREADS", "env"),
}
_IMAGE_KEYS = ("_NODE_OS_PUBLISHER", "_NODE_OS_OFFER", "_NODE_OS_SKU")
# Keys that only matter for features batchlaunch does not have; harmless at these values.
_UNSUPPORTED: dict[str, tuple[set[str], str]] = {
    "_POOL_COUNT": ({"1"}, "batchlaunch runs one pool per parameter file"),
    "_INTER_NODE_CONNECTION": (
        {"0", "false"},
        "the pool gets inter-node communication exactly when a task spans several nodes"
        " ([[tasks]] nodes > 1)",
    ),
    "_NUM_PROCS_PER_NODE": (
        {"1"},
        "batchlaunch starts no MPI processes; run mpirun in the task's command"
        " with the hosts in $AZ_BATCH_HOST_LIST",
    ),
    "_MPI_RUN": (
        {"", "0", "false"},
        "batchlaunch does not wrap commands in mpirun; call it in the task's command"
        " with the hosts in $AZ_BATCH_HOST_LIST",
    ),
    "_VERBOSE": (set(), "ignored: use `batchlaunch logs` and `status` for detail"),
}


def _warn(message: str) -> None:
    warnings.warn(message, LegacyParamsWarning, stacklevel=3)


def _convert(file: Path, key: str, value: Any, kind: str) -> Any:
    if kind == "int":
        try:
            return int(str(value).strip())
        except ValueError:
            raise UserError(f"{file}: {key}: expected a whole number, got {value!r}") from None
    return str(value)


def _node_agent(publisher: str, offer: str, sku: str) -> str:
    """The Batch node agent for an Ubuntu marketplace image (the AzureClusterlessHPC default)."""
    match = re.search(r"(\d\d)[._]04", f"{offer} {sku}")
    if publisher.lower() == "canonical" and match:
        return f"batch.node.ubuntu {match.group(1)}.04"
    if "centos" in offer.lower() or "alma" in offer.lower():
        return "batch.node.el 8"
    return "batch.node.ubuntu 22.04"


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _num_nodes(raw: dict[str, Any]) -> int:
    try:
        return int(str(raw.get("_NUM_NODES_PER_TASK", "1")).strip())
    except ValueError:
        return 1


def _nodes_per_task(data: dict[str, Any], file: Path, nodes: int) -> None:
    """`_NUM_NODES_PER_TASK` > 1: every [[tasks]] entry (that does not say) spans that many
    nodes, a Batch multi-instance task."""
    if nodes < 1:
        raise UserError(f"{file}: _NUM_NODES_PER_TASK: expected a whole number >= 1, got {nodes}")
    if nodes == 1:
        return
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        _warn(
            f"{file}: _NUM_NODES_PER_TASK = {nodes} applies to [[tasks]] entries and this file"
            " has none; give each task nodes = N"
        )
        return
    for entry in tasks:
        if isinstance(entry, dict):
            entry.setdefault("nodes", nodes)


def from_clusterless(raw: dict[str, Any], file: Path) -> dict[str, Any]:
    """Our parameter dict for an AzureClusterlessHPC parameters.json (non-`_` keys kept)."""
    data: dict[str, Any] = {k: v for k, v in raw.items() if not str(k).startswith("_")}
    data.setdefault("runtime", {}).setdefault("language", "julia")
    for key, value in raw.items():
        if not str(key).startswith("_") or key in _IMAGE_KEYS:
            continue
        if key in _DIRECT:
            dotted, kind = _DIRECT[key]
            _put(data, dotted, _convert(file, key, value, kind))
        elif key == "_CREDENTIALS":
            _warn(
                f"{file}: {key} ignored: credentials come from the environment"
                " (AZURE_BATCH_ACCESS_KEY, AZURE_STORAGE_CONNECTION_STRING) or Entra ID"
            )
        elif key == "_NUM_NODES_PER_TASK":
            _nodes_per_task(data, file, _convert(file, key, value, "int"))
        elif key in _UNSUPPORTED:
            harmless, why = _UNSUPPORTED[key]
            multi = _num_nodes(raw) > 1
            if str(value).strip().lower() not in harmless and not (
                key == "_INTER_NODE_CONNECTION" and multi
            ):
                _warn(f"{file}: {key} = {value!r} not supported: {why}")
        else:
            _warn(f"{file}: {key} is not an AzureClusterlessHPC key batchlaunch knows; ignored")
    image = [raw.get(k) for k in _IMAGE_KEYS]
    if any(image):
        if not all(image):
            missing = [k for k, v in zip(_IMAGE_KEYS, image, strict=True) if not v]
            raise UserError(
                f"{file}: {', '.join(missing)}: missing; give all of {', '.join(_IMAGE_KEYS)}"
            )
        publisher, offer, sku = (str(v) for v in image)
        _put(
            data,
            "pool.image",
            {
                "publisher": publisher,
                "offer": offer,
                "sku": sku,
                "version": "latest",
                "node_agent_sku_id": _node_agent(publisher, offer, sku),
            },
        )
    return data
