"""`Client`: the pool, job and task operations the CLI and the Python API use.

It covers what users of a ``CloudClient`` expect (pools with autoscale, images, containers,
blob mounts; jobs with dependencies, retries and logs to blob; tasks one at a time or in
bulk; monitoring) on top of the official azure-batch SDK. Request bodies are built as the
REST wire format (plain dicts wrapped in the SDK models), so what is sent is exactly what
this module says. Creating what exists with the same spec is not an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from launcher.batch import BatchConnection, auth_error_message, connect
from launcher.errors import UserError
from launcher.gc_pause import paused_gc
from launcher.images import CATALOG, alias_for, resolve_image
from launcher.storage import Store, check_blob_name, check_container_name, open_store

SPEC_METADATA = "batchlaunch-spec"
LOGS_METADATA = "batchlaunch-logs"
INT_IDS_METADATA = "batchlaunch-int-ids"
START_SCRIPT_NAME = "batchlaunch-start.sh"
#: SAS lifetime for what pools read on every node start (start script, mounts): nodes join
#: autoscale pools long after creation. Seven days is the user-delegation SAS maximum.
POOL_SAS_EXPIRY = timedelta(days=7)
#: Jobs without a wall-clock limit get output SAS for this long.
DEFAULT_JOB_SAS_EXPIRY = timedelta(days=7)
SAS_MARGIN = timedelta(hours=1)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MOUNT_TARGET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLOBFUSE_CACHE = "-o attr_timeout=240 -o entry_timeout=240 -o negative_timeout=120"
_BLOBFUSE_NO_CACHE = "-o direct_io"

P = ParamSpec("P")
R = TypeVar("R")


def _translate_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn credential and connection failures into one-line `UserError`s."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
        )

        self = args[0]
        endpoint = getattr(getattr(self, "_conn", None), "endpoint", "the Batch endpoint")
        try:
            return fn(*args, **kwargs)
        except ClientAuthenticationError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
            raise UserError(auth_error_message(endpoint, detail)) from None
        except ServiceRequestError as exc:
            raise UserError(
                f"[batch] endpoint: cannot reach {endpoint} ({type(exc).__name__}); check the "
                "endpoint and your network (for the emulator, `batchlaunch emulator serve`)"
            ) from None
        except HttpResponseError as exc:
            if exc.status_code == 403 and getattr(exc.error, "code", "") == "AuthenticationFailed":
                raise UserError(auth_error_message(endpoint, "AuthenticationFailed")) from None
            raise

    return wrapper


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise UserError(
            f"[{kind}] id: {value!r} is not a valid Batch id; use 1-64 letters, digits, "
            "hyphens and underscores"
        )
    return value


def _duration(minutes: float) -> str:
    return f"PT{round(minutes * 60)}S"


def _strip_query(url: str) -> str:
    """The URL without its query (a SAS token) and, for a local-store ``file://`` URL,
    without the store root: ``file:cas/<sha256>/name`` (content-addressed blobs) or the
    last path component, so one pool looks the same through any BATCHLAUNCH_HOME."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        segments = [s for s in parts.path.split("/") if s]
        if "cas" in segments:
            cas = len(segments) - 1 - segments[::-1].index("cas")
            return "file:" + "/".join(segments[cas:])
        return "file:" + (segments[-1] if segments else "")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _canonical(value: Any) -> Any:
    """The spec without secrets or expiring parts, for comparing pools across runs."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k in ("sasKey", "metadata"):
                continue
            if k in ("httpUrl", "storageContainerUrl", "containerUrl") and isinstance(v, str):
                out[k] = _strip_query(v)
            else:
                out[k] = _canonical(v)
        return out
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def spec_hash(body: Mapping[str, Any]) -> str:
    """A stable digest of a pool body: equal for the same spec, whatever the SAS tokens."""
    text = json.dumps(_canonical(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _default_formula(max_nodes: int) -> str:
    """`launcher.autoscale.default_formula` when present, else a minimal equivalent."""
    try:
        from launcher.autoscale import default_formula
    except ImportError:
        # Interim formula (until launcher.autoscale lands): follow pending tasks, cap, drain.
        return (
            "$pending = max(0, $PendingTasks.GetSample(1));\n"
            "$slots = max(1, $TaskSlotsPerNode);\n"
            "$wanted = $pending > 0 ? ($pending + $slots - 1) / $slots : 0;\n"
            f"$TargetDedicatedNodes = max(0, min({int(max_nodes)}, $wanted));\n"
            "$NodeDeallocationOption = taskcompletion;"
        )
    return str(default_formula(max_nodes))


# --------------------------------------------------------------------------------------
# Specs


@dataclass
class PoolSpec:
    """What a pool is made of; defaults follow DESIGN.md's ``[pool]`` table."""

    id: str
    vm_size: str = "standard_d2s_v3"
    dedicated_nodes: int = 1
    low_priority_nodes: int = 0
    task_slots_per_node: int = 1
    task_scheduling: str = "spread"  # spread | pack
    autoscale: bool = False
    max_autoscale_nodes: int = 3
    autoscale_formula: str | None = None
    autoscale_interval_minutes: int = 15
    availability_zones: str = "regional"  # regional | zonal
    image: str | Mapping[str, Any] | None = None
    container_image: str | None = None
    container_registry: Mapping[str, Any] | None = None
    mounts: Sequence[str | Mapping[str, str]] = ()
    cache_blobfuse: bool = True
    start_task_environment: Mapping[str, str] = field(default_factory=dict)
    #: Needed by multi-node tasks; set by `create_pool` when the parameter file has one.
    inter_node_communication: bool = False

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> PoolSpec:
        """From the params model's ``[pool]`` (attributes with these names), then overrides."""
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if settings is not None and getattr(settings, name, None) is not None:
                values[name] = _plain(getattr(settings, name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown pool settings: {sorted(unknown)}")
        if "id" not in values:
            raise UserError("[pool] id: missing; set [pool] id in the parameter file")
        return cls(**values)

    def validate(self) -> None:
        _check_id("pool", self.id)
        if not isinstance(self.vm_size, str) or not re.match(r"^[A-Za-z0-9_]+$", self.vm_size):
            raise UserError(f"[pool] vm_size: {self.vm_size!r} is not a VM size name")
        for key in ("dedicated_nodes", "low_priority_nodes"):
            if int(getattr(self, key)) < 0:
                raise UserError(f"[pool] {key}: must be >= 0")
        if not 1 <= int(self.task_slots_per_node) <= 256:
            raise UserError("[pool] task_slots_per_node: must be between 1 and 256")
        if self.task_scheduling not in ("spread", "pack"):
            raise UserError(
                f'[pool] task_scheduling: {self.task_scheduling!r}; use "spread" or "pack"'
            )
        if self.availability_zones not in ("regional", "zonal"):
            raise UserError(
                f'[pool] availability_zones: {self.availability_zones!r}; use "regional" or "zonal"'
            )
        if self.autoscale:
            if int(self.max_autoscale_nodes) < 1:
                raise UserError("[pool] max_autoscale_nodes: must be >= 1")
            if not 5 <= int(self.autoscale_interval_minutes) <= 10080:
                raise UserError(
                    "[pool] autoscale_interval_minutes: must be between 5 and 10080 (168 h)"
                )
        elif self.dedicated_nodes == 0 and self.low_priority_nodes == 0:
            pass  # an empty fixed pool is legal (resize later)
        for name in self.start_task_environment:
            if not _ENV_NAME.match(name):
                raise UserError(f"[pool] environment: {name!r} is not a variable name")

    def mount_list(self) -> list[tuple[str, str]]:
        """(container, relative mount path) pairs from strings or {source, target} tables."""
        result = []
        for item in self.mounts:
            if isinstance(item, str):
                source, target = item, item
            elif hasattr(item, "source") and hasattr(item, "target"):  # params.Mount
                source, target = str(item.source), str(item.target)
            elif (
                isinstance(item, Mapping) and set(item) <= {"source", "target"} and "source" in item
            ):
                source, target = str(item["source"]), str(item.get("target") or item["source"])
            else:
                raise UserError(
                    f"[pool] mounts: {item!r}; use a container name or "
                    '{source = "container", target = "name"}'
                )
            try:
                check_container_name(source)
            except UserError:
                raise UserError(
                    f"[pool] mounts: source {source!r} is not a valid container name; use 3-63 "
                    "lowercase letters, digits and single hyphens"
                ) from None
            if not _MOUNT_TARGET.match(target):
                raise UserError(
                    f"[pool] mounts: target {target!r} must be a simple name (letters, digits, "
                    "- and _); it is mounted under $AZ_BATCH_NODE_MOUNTS_DIR"
                )
            result.append((source, target))
        targets = [t for _, t in result]
        if len(set(targets)) != len(targets):
            raise UserError(f"[pool] mounts: targets repeat: {targets}; give each its own target")
        return result


@dataclass
class TaskSpec:
    """One task for `Client.add_tasks` (same meaning as `Client.add_task`'s arguments)."""

    command: str
    task_id: str | None = None
    name_suffix: str = ""
    depends_on: Sequence[str] = ()
    depends_on_range: tuple[int, int] | None = None
    run_dependents_on_failure: bool = False
    container_image: str | None = None
    timeout_minutes: float | None = None
    max_retries: int | None = None
    resource_files: Sequence[Mapping[str, Any]] = ()
    output_files: Sequence[Mapping[str, Any]] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    shell: bool = True
    #: > 1: a multi-instance task on this many nodes (``multiInstanceSettings``); the
    #: coordination command (default ``true``) runs on each node before `command` runs on one.
    nodes: int = 1
    coordination_command: str | None = None


@dataclass
class PoolInfo:
    """A pool as `show_pool` reports it."""

    id: str
    state: str
    allocation_state: str
    vm_size: str
    dedicated_nodes: int
    low_priority_nodes: int
    target_dedicated_nodes: int
    target_low_priority_nodes: int
    autoscale: bool
    autoscale_formula: str | None
    task_slots_per_node: int
    node_states: dict[str, int] = field(default_factory=dict)
    created: bool = False  # set by create_pool: False when an identical pool existed


@dataclass(frozen=True)
class TaskCounts:
    """A job's task counts from one task-counts request."""

    active: int
    running: int
    completed: int
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        return self.active + self.running + self.completed

    @property
    def done(self) -> bool:
        return self.total > 0 and self.active == 0 and self.running == 0


@dataclass
class JobSummary:
    """What `monitor_job` returns."""

    job_id: str
    counts: TaskCounts
    elapsed_seconds: float
    timed_out: bool
    polls: int
    #: Active tasks that can never run: they depend (perhaps transitively) on a failed task.
    blocked: list[str] = field(default_factory=list)
    #: Set when no node of the pool can run tasks (start task failed, unusable): why.
    node_failures: list[NodeFailure] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return (
            self.counts.done
            and self.counts.failed == 0
            and not self.timed_out
            and not self.blocked
            and not self.node_failures
        )


@dataclass
class NodeFailure:
    """A node that cannot run tasks, with what its start task said."""

    node_id: str
    state: str
    exit_code: int | None
    failure: str
    #: The start task's ``batchlaunch: step '...' failed (...)`` line, when there is one.
    failed_step: str
    stderr_tail: str


@dataclass
class FailedTask:
    """A task that completed with a failure, with the tail of its stderr."""

    task_id: str
    exit_code: int | None
    failure: str
    stderr_tail: str


@dataclass
class SupportedImage:
    """One row of `list_available_images`."""

    alias: str | None
    publisher: str
    offer: str
    sku: str
    version: str
    node_agent_sku_id: str
    os: str
    verification: str
    capabilities: list[str]


# --------------------------------------------------------------------------------------
# The client


class Client:
    """Batch operations with the parameter file's settings as defaults.

    ``Client("params.toml")`` reads the file with `launcher.params`; ``Client(params_obj)``
    takes a loaded model; ``Client(batch=..., store=...)`` takes explicit parts (tests, API).
    """

    def __init__(
        self,
        params: str | Path | Any | None = None,
        *,
        batch: BatchConnection | None = None,
        store: Store | None = None,
        progress_console: Any = None,
    ) -> None:
        if isinstance(params, str | Path):
            from launcher.params import load_params

            params = load_params(Path(params))
        self.params: Any = params
        self._conn = batch
        self._store = store
        self._console = progress_console
        self._job_meta: dict[str, dict[str, str]] = {}
        self._counters: dict[str, int] = {}

    # Parts ------------------------------------------------------------------------------

    @property
    def conn(self) -> BatchConnection:
        if self._conn is None:
            self._conn = connect(getattr(self.params, "batch", None))
        return self._conn

    @property
    def batch(self) -> Any:
        """The `azure.batch.BatchClient`."""
        return self.conn.client

    @property
    def store(self) -> Store:
        if self._store is None:
            settings = getattr(self.params, "storage", None)
            self._store = open_store(
                getattr(settings, "url", None) or "local",
                getattr(settings, "container", None) or "batchlaunch",
            )
            self._store.ensure_container()
        return self._store

    def _pool_id(self, pool_id: str | None) -> str:
        value = pool_id or getattr(getattr(self.params, "pool", None), "id", None)
        if not value:
            raise UserError("[pool] id: missing; set [pool] id in the parameter file")
        return _check_id("pool", value)

    def _job_id(self, job_id: str | None) -> str:
        value = job_id or getattr(getattr(self.params, "job", None), "id", None)
        if not value:
            raise UserError("[job] id: missing; set [job] id in the parameter file")
        return _check_id("job", value)

    # Resources ----------------------------------------------------------------------------

    def resource_file(
        self,
        source: Path | str | bytes,
        file_path: str | None = None,
        *,
        expiry: timedelta = DEFAULT_JOB_SAS_EXPIRY,
        file_mode: str | None = None,
    ) -> dict[str, str]:
        """Upload content-addressed (skipped when unchanged) and return a ResourceFile."""
        if isinstance(source, bytes):
            if not file_path:
                raise ValueError("resource_file(bytes) needs file_path")
            blob = self.store.put_content_addressed(source, Path(file_path).name)
        else:
            blob = self.store.put_content_addressed(Path(source))
            file_path = file_path or Path(source).name
        check_blob_name(file_path)
        entry = {"httpUrl": self.store.read_url(blob, expiry), "filePath": file_path}
        if file_mode:
            entry["fileMode"] = file_mode
        return entry

    def output_file(
        self,
        pattern: str,
        blob_path: str,
        *,
        container: str | None = None,
        condition: str = "taskcompletion",
        expiry: timedelta = DEFAULT_JOB_SAS_EXPIRY,
        container_url: str | None = None,
    ) -> dict[str, Any]:
        """An OutputFile uploading ``pattern`` to ``blob_path`` with a create+write SAS.

        ``container_url`` reuses a write SAS made once for many tasks (bulk submission).
        """
        if condition not in ("tasksuccess", "taskfailure", "taskcompletion"):
            raise ValueError(f"unknown upload condition {condition!r}")
        if container_url is None:
            store = self.store if container is None else self.store.for_container(container)
            container_url = store.container_write_url(expiry)
        return {
            "filePattern": pattern,
            "destination": {"container": {"containerUrl": container_url, "path": blob_path}},
            "uploadOptions": {"uploadCondition": condition},
        }

    # Pools --------------------------------------------------------------------------------

    def pool_body(self, spec: PoolSpec, start_script: str | None = None) -> dict[str, Any]:
        """The REST body of a pool create request (uploads the start script if given)."""
        spec.validate()
        container = bool(spec.container_image)
        reference, agent = resolve_image(spec.image, containers=container)
        vm: dict[str, Any] = {
            "imageReference": reference,
            "nodeAgentSKUId": agent,
            "nodePlacementConfiguration": {"policy": spec.availability_zones},
        }
        if container:
            cc: dict[str, Any] = {
                "type": "dockerCompatible",
                "containerImageNames": [str(spec.container_image)],
            }
            if spec.container_registry:
                cc["containerRegistries"] = [_registry(spec.container_registry)]
            vm["containerConfiguration"] = cc
        body: dict[str, Any] = {
            "id": spec.id,
            "vmSize": spec.vm_size.lower(),
            "virtualMachineConfiguration": vm,
            "taskSlotsPerNode": int(spec.task_slots_per_node),
            "taskSchedulingPolicy": {"nodeFillType": spec.task_scheduling},
        }
        if spec.inter_node_communication:
            body["enableInterNodeCommunication"] = True
        if spec.autoscale:
            body["enableAutoScale"] = True
            body["autoScaleFormula"] = spec.autoscale_formula or _default_formula(
                int(spec.max_autoscale_nodes)
            )
            body["autoScaleEvaluationInterval"] = _duration(spec.autoscale_interval_minutes)
        else:
            body["enableAutoScale"] = False
            body["targetDedicatedNodes"] = int(spec.dedicated_nodes)
            body["targetLowPriorityNodes"] = int(spec.low_priority_nodes)
        mounts = spec.mount_list()
        if mounts:
            options = _BLOBFUSE_CACHE if spec.cache_blobfuse else _BLOBFUSE_NO_CACHE
            body["mountConfiguration"] = []
            for source, target in mounts:
                account, sas = self.store.for_container(source).mount_credentials(POOL_SAS_EXPIRY)
                body["mountConfiguration"].append(
                    {
                        "azureBlobFileSystemConfiguration": {
                            "accountName": account,
                            "containerName": source,
                            "sasKey": sas,
                            "relativeMountPath": target,
                            "blobfuseOptions": options,
                        }
                    }
                )
        if start_script is not None:
            blob = self.store.put_content_addressed(start_script.encode(), START_SCRIPT_NAME)
            start: dict[str, Any] = {
                "commandLine": f"/bin/bash {START_SCRIPT_NAME}",
                "resourceFiles": [
                    {
                        "httpUrl": self.store.read_url(blob, POOL_SAS_EXPIRY),
                        "filePath": START_SCRIPT_NAME,
                        "fileMode": "0755",
                    }
                ],
                "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
                "waitForSuccess": bool(
                    getattr(getattr(self.params, "pool", None), "start_task_wait_for_success", True)
                ),
                "maxTaskRetryCount": 1,
            }
            requirements = getattr(getattr(self.params, "runtime", None), "requirements", None)
            if requirements:
                from bootstrap.render import REQUIREMENTS_FILE

                req_blob = self.store.put_content_addressed(Path(requirements), REQUIREMENTS_FILE)
                start["resourceFiles"].append(
                    {
                        "httpUrl": self.store.read_url(req_blob, POOL_SAS_EXPIRY),
                        "filePath": REQUIREMENTS_FILE,
                    }
                )
            if spec.start_task_environment:
                start["environmentSettings"] = [
                    {"name": k, "value": str(v)} for k, v in spec.start_task_environment.items()
                ]
            body["startTask"] = start
        body["metadata"] = [{"name": SPEC_METADATA, "value": spec_hash(body)}]
        return body

    @_translate_errors
    def create_pool(
        self,
        pool_id: str | None = None,
        *,
        spec: PoolSpec | None = None,
        start_script: str | None = None,
        replace_existing: bool | None = None,
        wait_timeout: float = 600.0,
        **settings: Any,
    ) -> PoolInfo:
        """Create the pool; an identical existing pool is fine, a different one an error.

        ``settings`` are `PoolSpec` fields overriding the parameter file's ``[pool]``.
        ``start_script`` (rendered by `bootstrap`; default: the parameter file's runtime,
        "" for none) ships as a resource file run by bash as admin; the pool waits for it.
        ``replace_existing`` (default ``[pool] replace_existing``) deletes a different pool.
        """
        from azure.batch import models
        from azure.core.exceptions import ResourceExistsError

        if spec is None:
            if pool_id is not None:
                settings["id"] = pool_id
            if getattr(self.params, "multi_node", False):
                settings.setdefault("inter_node_communication", True)
            spec = PoolSpec.from_settings(getattr(self.params, "pool", None), **settings)
        pool_settings = getattr(self.params, "pool", None)
        if replace_existing is None:
            replace_existing = bool(getattr(pool_settings, "replace_existing", False))
        if start_script is None and hasattr(self.params, "start_task_script"):
            start_script = self.params.start_task_script()
        body = self.pool_body(spec, start_script or None)
        wanted = body["metadata"][0]["value"]
        for _attempt in range(3):
            existing = self._get_pool(spec.id)
            if existing is not None and existing.get("state") == "deleting":
                self._wait_pool_gone(spec.id, wait_timeout)
                existing = None
            if existing is not None:
                recorded = _metadata(existing).get(SPEC_METADATA)
                # A pool made elsewhere has no digest: accept it when the visible settings match.
                same = recorded == wanted or (
                    recorded is None and _summary(existing) == _summary(body)
                )
                if same:
                    info = self._pool_info(existing)
                    info.created = False
                    return info
                if not replace_existing:
                    raise UserError(
                        f"[pool] id: pool {spec.id!r} exists with a different spec"
                        f"{_describe_difference(existing, body)}; delete it "
                        "(`batchlaunch pool delete PARAMS`), set [pool] replace_existing = true "
                        "(or `batchlaunch pool create PARAMS --replace`), or choose another "
                        "[pool] id"
                    )
                self.delete_pool(spec.id, wait=True, timeout=wait_timeout)
            try:
                self.batch.create_pool(models.BatchPoolCreateOptions(body))
            except ResourceExistsError:
                continue  # created concurrently (or being deleted): look again
            created = self._get_pool(spec.id)
            if created is None:
                raise UserError(f"[pool] id: pool {spec.id!r} vanished right after creation")
            info = self._pool_info(created)
            info.created = True
            return info
        raise UserError(f"[pool] id: pool {spec.id!r} keeps changing under us; try again")

    def _get_pool(self, pool_id: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self.batch.get_pool(pool_id).as_dict())
        except ResourceNotFoundError:
            return None

    def _wait_pool_gone(self, pool_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._get_pool(pool_id) is not None:
            if time.monotonic() > deadline:
                raise UserError(
                    f"[pool] id: pool {pool_id!r} is still being deleted after {timeout:.0f} s; "
                    "wait and retry"
                )
            time.sleep(self.conn.polling_interval)

    def _pool_info(self, pool: Mapping[str, Any]) -> PoolInfo:
        return PoolInfo(
            id=str(pool.get("id")),
            state=str(pool.get("state", "")),
            allocation_state=str(pool.get("allocationState", "")),
            vm_size=str(pool.get("vmSize", "")),
            dedicated_nodes=int(pool.get("currentDedicatedNodes") or 0),
            low_priority_nodes=int(pool.get("currentLowPriorityNodes") or 0),
            target_dedicated_nodes=int(pool.get("targetDedicatedNodes") or 0),
            target_low_priority_nodes=int(pool.get("targetLowPriorityNodes") or 0),
            autoscale=bool(pool.get("enableAutoScale")),
            autoscale_formula=pool.get("autoScaleFormula"),
            task_slots_per_node=int(pool.get("taskSlotsPerNode") or 1),
        )

    @_translate_errors
    def get_pool(self, pool_id: str | None = None) -> dict[str, Any] | None:
        """The pool as the service returns it (REST field names), or None."""
        return self._get_pool(self._pool_id(pool_id))

    @_translate_errors
    def show_pool(self, pool_id: str | None = None) -> PoolInfo:
        """State, sizes and node states of a pool; `UserError` when it does not exist."""
        pool_id = self._pool_id(pool_id)
        pool = self._get_pool(pool_id)
        if pool is None:
            raise UserError(
                f"[pool] id: pool {pool_id!r} not found; create it with "
                "`batchlaunch pool create PARAMS`"
            )
        info = self._pool_info(pool)
        for node in self.batch.list_nodes(pool_id):
            state = _enum(node.state)
            info.node_states[state] = info.node_states.get(state, 0) + 1
        return info

    @_translate_errors
    def delete_pool(
        self, pool_id: str | None = None, *, wait: bool = False, timeout: float = 600.0
    ) -> bool:
        """Delete a pool; False when there was none. ``wait`` until it is gone."""
        from azure.core.exceptions import ResourceNotFoundError

        pool_id = self._pool_id(pool_id)
        try:
            poller = self.batch.begin_delete_pool(
                pool_id, polling_interval=self.conn.polling_interval
            )
        except ResourceNotFoundError:
            return False
        if wait:
            poller.result(timeout=timeout)
            # The poller swallows errors (BATCH-NOTES.md): confirm the pool is really gone.
            self._wait_pool_gone(pool_id, timeout)
        return True

    @_translate_errors
    def resize_pool(
        self,
        pool_id: str | None = None,
        *,
        dedicated_nodes: int | None = None,
        low_priority_nodes: int | None = None,
        wait: bool = False,
        timeout: float = 600.0,
    ) -> PoolInfo:
        """Set a fixed pool's target node counts (unchanged counts keep their value)."""
        from azure.batch import models
        from azure.core.exceptions import ResourceExistsError

        pool_id = self._pool_id(pool_id)
        pool = self._get_pool(pool_id)
        if pool is None:
            raise UserError(f"[pool] id: pool {pool_id!r} not found; create it first")
        if pool.get("enableAutoScale"):
            raise UserError(
                f"[pool] autoscale: pool {pool_id!r} autoscales, so it cannot be resized by hand; "
                "change max_autoscale_nodes or the formula instead"
            )
        dedicated = pool.get("targetDedicatedNodes") if dedicated_nodes is None else dedicated_nodes
        low = (
            pool.get("targetLowPriorityNodes") if low_priority_nodes is None else low_priority_nodes
        )
        if int(dedicated or 0) < 0 or int(low or 0) < 0:
            raise UserError("[pool] dedicated_nodes/low_priority_nodes: must be >= 0")
        options = models.BatchPoolResizeOptions(
            {"targetDedicatedNodes": int(dedicated or 0), "targetLowPriorityNodes": int(low or 0)}
        )
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            try:
                self.batch.begin_resize_pool(
                    pool_id, options, polling_interval=self.conn.polling_interval
                )
                break
            except ResourceExistsError as exc:
                # Batch refuses a resize while one is in progress (a pool just created, or
                # resized a moment ago): stop that one; the new target replaces it.
                if getattr(exc.error, "code", "") != "PoolResizing" or attempt == 2:
                    raise
                self.batch.begin_stop_pool_resize(
                    pool_id, polling_interval=self.conn.polling_interval
                ).result(timeout=max(1.0, deadline - time.monotonic()))
        while True:
            current = self._get_pool(pool_id) or {}
            if not wait or current.get("allocationState") == "steady":
                return self._pool_info(current or pool)
            if time.monotonic() > deadline:
                raise UserError(f"[pool] pool {pool_id!r} still resizing after {timeout:.0f} s")
            time.sleep(self.conn.polling_interval)

    @_translate_errors
    def list_available_images(self, os: str | None = None) -> list[SupportedImage]:
        """Images the Batch account supports (with our alias where one exists)."""
        if os is not None and os.lower() not in ("linux", "windows"):
            raise UserError(f"--os: {os!r}; use linux or windows")
        rows = []
        for item in self.batch.list_supported_images():
            data = item.as_dict()
            ref = data.get("imageReference") or {}
            os_type = str(data.get("osType", "")).lower()
            if os is not None and os_type != os.lower():
                continue
            agent = str(data.get("nodeAgentSKUId", ""))
            rows.append(
                SupportedImage(
                    alias=alias_for(ref, agent),
                    publisher=str(ref.get("publisher", "")),
                    offer=str(ref.get("offer", "")),
                    sku=str(ref.get("sku", "")),
                    version=str(ref.get("version", "latest")),
                    node_agent_sku_id=agent,
                    os=os_type,
                    verification=str(data.get("verificationType", "")),
                    capabilities=[str(c) for c in data.get("capabilities") or []],
                )
            )
        return rows

    # Jobs ---------------------------------------------------------------------------------

    @_translate_errors
    def create_job(
        self,
        job_id: str | None = None,
        pool_id: str | None = None,
        *,
        uses_deps: bool | None = None,
        save_logs_to_blob: str | bool | None = None,
        logs_folder: str | None = None,
        task_retries: int | None = None,
        mark_complete_after_tasks_run: bool | None = None,
        timeout_minutes: float | None = None,
        task_id_ints: bool = False,
        exist_ok: bool = False,
        verify_pool: bool = True,
    ) -> str:
        """Create a job on a pool and return its id.

        ``save_logs_to_blob``: a container name (or True for the store's container); every
        task added through this client then uploads ``../std*.txt`` to
        ``LOGS_FOLDER/TASK_ID/``. ``mark_complete_after_tasks_run`` terminates the job when
        all tasks are done (set it only once all tasks are added, see `seal_job`).
        Options left as None come from the parameter file's ``[job]``, else the defaults
        (dependencies on, logs not saved, no retries, no time limit).
        """
        from azure.batch import models
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        job_id = self._job_id(job_id)
        pool_id = self._pool_id(pool_id)
        job = getattr(self.params, "job", None)
        if uses_deps is None:
            uses_deps = bool(getattr(self.params, "uses_task_dependencies", True))
        if save_logs_to_blob is None and getattr(job, "save_logs_to_blob", None) is not None:
            save_logs_to_blob = str(job.save_logs_to_blob.container)  # type: ignore[union-attr]
            logs_folder = logs_folder or str(job.save_logs_to_blob.folder)  # type: ignore[union-attr]
        logs_folder = logs_folder or "stdout_stderr"
        if task_retries is None:
            task_retries = int(getattr(job, "max_task_retries", 0) or 0)
        if mark_complete_after_tasks_run is None:
            mark_complete_after_tasks_run = (
                getattr(job, "on_all_tasks_complete", "") == "terminatejob"
            )
        if timeout_minutes is None:
            timeout_minutes = getattr(job, "max_wall_clock_minutes", None)
        if task_retries < -1:
            raise UserError("[job] max_task_retries: must be >= -1 (-1 retries forever)")
        if timeout_minutes is not None and timeout_minutes <= 0:
            raise UserError("[job] max_wall_clock_minutes: must be > 0")
        if verify_pool:
            try:
                self.batch.pool_exists(pool_id)
            except ResourceNotFoundError:
                raise UserError(
                    f"[job] pool {pool_id!r} not found; create it with "
                    "`batchlaunch pool create PARAMS` first"
                ) from None
        metadata = {INT_IDS_METADATA: "1" if task_id_ints else "0"}
        if save_logs_to_blob:
            container = (
                self.store.container if save_logs_to_blob is True else str(save_logs_to_blob)
            )
            check_container_name(container)
            folder = logs_folder.strip("/")
            check_blob_name(folder)
            metadata[LOGS_METADATA] = f"{container}/{folder}"
        constraints: dict[str, Any] = {"maxTaskRetryCount": int(task_retries)}
        if timeout_minutes is not None:
            constraints["maxWallClockTime"] = _duration(timeout_minutes)
        body = {
            "id": job_id,
            "poolInfo": {"poolId": pool_id},
            "usesTaskDependencies": bool(uses_deps),
            "constraints": constraints,
            "onAllTasksComplete": "terminatejob" if mark_complete_after_tasks_run else "noaction",
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
        }
        try:
            self.batch.create_job(models.BatchJobCreateOptions(body))
        except ResourceExistsError:
            if not exist_ok:
                raise UserError(
                    f"[job] id: job {job_id!r} already exists; choose another id, delete it, "
                    "or pass exist_ok=True to add tasks to it"
                ) from None
            job = self.batch.get_job(job_id).as_dict()
            on_pool = (job.get("poolInfo") or {}).get("poolId")
            if on_pool and on_pool != pool_id:
                raise UserError(
                    f"[job] id: job {job_id!r} exists on pool {on_pool!r}, not {pool_id!r}; "
                    "choose another job id"
                ) from None
            self._job_meta[job_id] = _metadata(job)
            return job_id
        self._job_meta[job_id] = metadata
        return job_id

    @_translate_errors
    def seal_job(self, job_id: str) -> None:
        """Terminate the job once all its tasks complete (call after the last task is added)."""
        from azure.batch import models

        self.batch.update_job(
            job_id, models.BatchJobUpdateOptions({"onAllTasksComplete": "terminatejob"})
        )

    @_translate_errors
    def terminate_job(self, job_id: str, reason: str | None = None) -> bool:
        """Terminate a job: running tasks are stopped, active ones never start; the job ends
        with ``reason`` as its terminateReason. False when it is gone or already completed.

        azure-batch 15.1 exports no public model for this body (`BatchJobTerminateOptions`
        is only in the private `_models`); the SDK JSON-encodes a plain mapping alike, and
        refuses a missing or empty one (BATCH-NOTES.md), so the reason is always set.
        """
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        options: Any = {"terminateReason": reason or "UserTerminate"}
        try:
            self.batch.begin_terminate_job(
                job_id, options, polling_interval=self.conn.polling_interval
            )
        except ResourceNotFoundError:
            return False
        except HttpResponseError as exc:
            if getattr(exc.error, "code", "") in ("JobCompleted", "JobBeingDeleted"):
                return False
            raise
        return True

    @_translate_errors
    def terminate_task(self, job_id: str, task_id: str) -> bool:
        """Terminate one task (running: its process is killed; active: it never runs).
        False when the task or job does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.batch.terminate_task(job_id, task_id)
        except ResourceNotFoundError:
            return False
        return True

    @_translate_errors
    def delete_job(self, job_id: str, *, wait: bool = False, timeout: float = 300.0) -> bool:
        """Delete a job (and its tasks); False when there was none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            poller = self.batch.begin_delete_job(
                job_id, polling_interval=self.conn.polling_interval
            )
        except ResourceNotFoundError:
            return False
        self._job_meta.pop(job_id, None)
        if wait:
            poller.result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while wait:
            try:
                self.batch.get_job(job_id)
            except ResourceNotFoundError:
                break
            if time.monotonic() > deadline:
                raise UserError(f"[job] job {job_id!r} still being deleted after {timeout:.0f} s")
            time.sleep(self.conn.polling_interval)
        return True

    def _meta(self, job_id: str) -> dict[str, str]:
        meta = self._job_meta.get(job_id)
        if meta is not None:  # called once per task: no import statement on this path
            return meta
        from azure.core.exceptions import ResourceNotFoundError

        try:
            meta = _metadata(self.batch.get_job(job_id).as_dict())
        except ResourceNotFoundError:
            raise UserError(
                f"[job] job {job_id!r} not found; create it first (create_job)"
            ) from None
        self._job_meta[job_id] = meta
        return meta

    # Tasks --------------------------------------------------------------------------------

    def task_body(self, job_id: str, task: TaskSpec) -> dict[str, Any]:
        """The REST body of one task (ids, dependencies, constraints, files, logs)."""
        meta = self._meta(job_id)
        task_id = task.task_id
        if task_id is None:
            n = self._counters.get(job_id, 0) + 1
            self._counters[job_id] = n
            base = str(n) if meta.get(INT_IDS_METADATA) == "1" else f"{job_id}-{n}"
            task_id = f"{base}{task.name_suffix}" if task.name_suffix else base
        elif task.name_suffix:
            task_id = f"{task_id}{task.name_suffix}"
        _check_id("task", task_id)
        if not task.command.strip():
            raise UserError(f"[tasks] command: task {task_id!r} has an empty command")
        body: dict[str, Any] = {
            "id": task_id,
            "commandLine": _wrap(task.command) if task.shell else task.command,
        }
        deps: dict[str, Any] = {}
        if task.depends_on:
            deps["taskIds"] = [_check_id("task", str(d)) for d in task.depends_on]
        if task.depends_on_range is not None:
            start, end = (int(v) for v in task.depends_on_range)
            if start < 0 or end < start:
                raise UserError(
                    f"[tasks] depends_on_range: ({start}, {end}) must be (first, last) with "
                    "0 <= first <= last"
                )
            deps["taskIdRanges"] = [{"start": start, "end": end}]
        if deps:
            body["dependsOn"] = deps
        if task.run_dependents_on_failure:
            body["exitConditions"] = {"default": {"dependencyAction": "satisfy"}}
        if task.container_image:
            body["containerSettings"] = {"imageName": task.container_image}
        constraints: dict[str, Any] = {}
        if task.timeout_minutes is not None:
            if task.timeout_minutes <= 0:
                raise UserError(f"[tasks] timeout_minutes: task {task_id!r} needs a value > 0")
            constraints["maxWallClockTime"] = _duration(task.timeout_minutes)
        if task.max_retries is not None:
            constraints["maxTaskRetryCount"] = int(task.max_retries)
        if constraints:
            body["constraints"] = constraints
        # Plain dicts are shared, not copied: the body is only serialized.
        if task.resource_files:
            body["resourceFiles"] = [r if type(r) is dict else dict(r) for r in task.resource_files]
        outputs = [o if type(o) is dict else dict(o) for o in task.output_files]
        logs = meta.get(LOGS_METADATA)
        if logs:
            container, _, folder = logs.partition("/")
            outputs.append(
                self.output_file(
                    "../std*.txt",
                    f"{folder}/{task_id}",
                    container=container,
                    expiry=self.sas_expiry(job_id),
                )
            )
        if outputs:
            body["outputFiles"] = outputs
        if task.environment:
            for name in task.environment:
                if not _ENV_NAME.match(name):
                    raise UserError(f"[tasks] environment: {name!r} is not a variable name")
            body["environmentSettings"] = [
                {"name": k, "value": str(v)} for k, v in task.environment.items()
            ]
        if int(task.nodes) < 1:
            raise UserError(f"[tasks] nodes: task {task_id!r} needs nodes >= 1")
        if int(task.nodes) > 1:
            coordination = task.coordination_command
            body["multiInstanceSettings"] = {
                "numberOfInstances": int(task.nodes),
                "coordinationCommandLine": (_wrap(coordination) if task.shell else coordination)
                if coordination
                else "true",
            }
        return body

    def sas_expiry(self, job_id: str) -> timedelta:
        """How long SAS URLs for this job's files live: its wall-clock limit plus a margin
        (7 days without a limit). Read once per job and cached."""
        meta = self._meta(job_id)
        if "_expiry_s" not in meta:
            seconds = DEFAULT_JOB_SAS_EXPIRY.total_seconds()
            try:
                limit = self.batch.get_job(job_id).constraints
                wall = getattr(limit, "max_wall_clock_time", None)
                if wall is not None and wall < timedelta(days=7):
                    seconds = (wall + SAS_MARGIN).total_seconds()
            except Exception:
                pass
            meta["_expiry_s"] = str(seconds)
        return timedelta(seconds=float(meta["_expiry_s"]))

    @_translate_errors
    def add_task(
        self,
        job_id: str,
        command: str,
        *,
        task_id: str | None = None,
        name_suffix: str = "",
        depends_on: Sequence[str] = (),
        depends_on_range: tuple[int, int] | None = None,
        run_dependents_on_failure: bool = False,
        container_image: str | None = None,
        timeout_minutes: float | None = None,
        max_retries: int | None = None,
        resource_files: Sequence[Mapping[str, Any]] = (),
        output_files: Sequence[Mapping[str, Any]] = (),
        environment: Mapping[str, str] | None = None,
        shell: bool = True,
    ) -> str:
        """Add one task and return its id. Re-adding an identical id is not an error."""
        from azure.batch import models
        from azure.core.exceptions import ResourceExistsError

        spec = TaskSpec(
            command=command,
            task_id=task_id,
            name_suffix=name_suffix,
            depends_on=depends_on,
            depends_on_range=depends_on_range,
            run_dependents_on_failure=run_dependents_on_failure,
            container_image=container_image,
            timeout_minutes=timeout_minutes,
            max_retries=max_retries,
            resource_files=resource_files,
            output_files=output_files,
            environment=environment or {},
            shell=shell,
        )
        for _attempt in range(5):
            body = self.task_body(job_id, spec)
            try:
                self.batch.create_task(job_id, models.BatchTaskCreateOptions(body))
            except ResourceExistsError:
                if task_id is not None:
                    return str(body["id"])  # re-adding a named task (a resumed run) is fine
                # A generated id collided (another client added tasks): skip past them.
                total = self.task_counts(job_id).total
                self._counters[job_id] = max(self._counters.get(job_id, 0), total)
                continue
            return str(body["id"])
        raise UserError(f"[tasks] could not find a free task id in job {job_id!r}; pass task_id")

    @_translate_errors
    def add_tasks(
        self,
        job_id: str,
        tasks: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        max_concurrency: int = 8,
        attempts: int = 5,
    ) -> list[str]:
        """Add many tasks in chunked, parallel task-collection requests; return their ids.

        Tasks are submitted in the order given (Batch schedules them in the order it gets
        them): the first chunk of 100 holds the first tasks, in order, and chunks are sent in
        order (``max_concurrency`` > 1 sends up to that many chunks at once, so only the
        chunks' starts are ordered; 1 gives a strict order).
        Tasks that already exist count as added, so a resumed submission adds each task once.
        Requests that fail in transit are retried (``attempts`` rounds) for the tasks left.
        ``tasks`` may be a generator: tasks are then built as they are sent, and an invalid one
        stops the submission after the tasks before it were added.
        """
        from launcher.task_collection import TaskTooLarge, add_task_collection

        def spec_of(task: TaskSpec | Mapping[str, Any]) -> TaskSpec:
            return task if isinstance(task, TaskSpec) else TaskSpec(**dict(task))

        repeated = f"[tasks] ids repeat within one submission to job {job_id!r}"
        if isinstance(tasks, Sequence):  # a list is checked whole before anything is sent
            specs = [spec_of(t) for t in tasks]
            named = [f"{t.task_id}{t.name_suffix or ''}" for t in specs if t.task_id is not None]
            tasks = specs
            if len(set(named)) != len(named):
                raise UserError(repeated)
        ids: list[str] = []
        seen: set[str] = set()

        def bodies() -> Iterator[dict[str, Any]]:
            # Built as chunks are sent, so building overlaps with the requests in flight (a
            # generator of tasks is built lazily too).
            for task in tasks:
                body = self.task_body(job_id, spec_of(task))
                task_id = str(body["id"])
                if task_id in seen:
                    raise UserError(f"{repeated}: {task_id}")
                seen.add(task_id)
                ids.append(task_id)
                yield body

        try:
            with paused_gc():  # ~30 small containers per task, no cycles among them
                result = add_task_collection(
                    self.batch, job_id, bodies(), max_concurrency=max_concurrency, attempts=attempts
                )
        except TaskTooLarge as exc:
            raise UserError(f"[tasks] {exc}") from None
        if result.refused:
            failures = [f"{task_id}: {code} {message}" for task_id, code, message in result.refused]
            raise UserError(
                f"[tasks] {len(failures)} task(s) rejected by job {job_id!r}: "
                + "; ".join(failures[:3])
            )
        return ids

    # Monitoring ---------------------------------------------------------------------------

    @_translate_errors
    def task_counts(self, job_id: str) -> TaskCounts:
        """One request: the job's task-counts call."""
        result = self.batch.get_job_task_counts(job_id)
        c = result.task_counts
        return TaskCounts(
            active=int(c.active),
            running=int(c.running),
            completed=int(c.completed),
            succeeded=int(c.succeeded),
            failed=int(c.failed),
        )

    @_translate_errors
    def monitor_job(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        progress: bool = True,
        poll_interval: float | None = None,
        expected_tasks: int | None = None,
        pool_id: str | None = None,
        health_check_seconds: float | None = None,
    ) -> JobSummary:
        """Follow a job until all its tasks completed (or ``timeout`` seconds passed).

        Each poll costs one task-counts request whatever the number of tasks; a rich
        progress bar shows completed/total and failures when ``progress`` is set. With
        ``pool_id``, a job where nothing runs is checked every ``health_check_seconds``
        for a pool whose nodes all failed their start task: the monitor then stops and
        says why, instead of waiting forever for nodes that will never take a task.
        """
        interval = poll_interval or (0.25 if self.conn.emulator else 5.0)
        health_every = health_check_seconds or (2.0 if self.conn.emulator else 60.0)
        last_health = time.monotonic()
        started = time.monotonic()
        polls = 0
        previous: TaskCounts | None = None
        bar = None
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            )
            bar.start()
            handle = bar.add_task(job_id, total=expected_tasks or None, detail="")
        try:
            while True:
                counts = self.task_counts(job_id)
                polls += 1
                if bar is not None:
                    bar.update(
                        handle,
                        total=max(counts.total, expected_tasks or 0) or None,
                        completed=counts.completed,
                        detail=f"running {counts.running}  failed {counts.failed}",
                    )
                enough = expected_tasks is None or counts.total >= expected_tasks
                finished = counts.done and enough
                blocked: list[str] = []
                # Only failures followed by a quiet poll can leave tasks waiting forever; check
                # then (a few list requests), never while tasks run.
                stalled = counts.running == 0 and counts.active > 0 and counts.failed > 0
                if stalled and enough and counts == previous:
                    blocked = self.blocked_tasks(job_id)
                    finished = len(blocked) >= counts.active
                previous = counts
                node_failures: list[NodeFailure] = []
                idle = counts.running == 0 and (counts.active > 0 or not enough)
                if pool_id and idle and time.monotonic() - last_health >= health_every:
                    last_health = time.monotonic()
                    node_failures = self.unusable_pool(pool_id)
                elapsed = time.monotonic() - started
                if node_failures:
                    return JobSummary(job_id, counts, elapsed, False, polls, blocked, node_failures)
                if finished or (timeout is not None and elapsed >= timeout):
                    return JobSummary(job_id, counts, elapsed, not finished, polls, blocked)
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.stop()

    @_translate_errors
    def node_failures(self, pool_id: str, *, tail_lines: int = 15) -> list[NodeFailure]:
        """Nodes of the pool that cannot run tasks, each with its start task's diagnosis."""
        failures = []
        for node in self.batch.list_nodes(pool_id):
            state = _enum(node.state)
            if state not in _UNUSABLE_NODE_STATES:
                continue
            info = node.start_task_info
            exit_code = getattr(info, "exit_code", None)
            failure_info = getattr(info, "failure_info", None)
            failure = (
                f"{failure_info.code}: {failure_info.message}" if failure_info is not None else ""
            )
            stderr = self._node_file_tail(pool_id, str(node.id), "startup/stderr.txt", tail_lines)
            step = next(
                (ln for ln in reversed(stderr.splitlines()) if ln.startswith("batchlaunch: step")),
                "",
            )
            failures.append(NodeFailure(str(node.id), state, exit_code, failure, step, stderr))
        return failures

    def unusable_pool(self, pool_id: str) -> list[NodeFailure]:
        """The node failures when *every* node of a steady pool is unusable, else []."""
        pool = self._get_pool(pool_id)
        if pool is None or pool.get("allocationState") != "steady":
            return []
        total = int(pool.get("currentDedicatedNodes") or 0) + int(
            pool.get("currentLowPriorityNodes") or 0
        )
        if total == 0:
            return []
        failures = self.node_failures(pool_id)
        return failures if len(failures) >= total else []

    def _node_file_tail(self, pool_id: str, node_id: str, path: str, lines: int) -> str:
        from azure.core.exceptions import HttpResponseError

        try:
            data = b"".join(self.batch.download_node_file(pool_id, node_id, path))
        except HttpResponseError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    @_translate_errors
    def blocked_tasks(self, job_id: str) -> list[str]:
        """Active tasks whose dependencies can never be met (a parent failed and blocks).

        Batch leaves such tasks active forever; this is how a monitor knows the job is over.
        """
        blocking = set()
        for task in self.batch.list_tasks(
            job_id,
            filter="executionInfo/result eq 'failure'",
            select=["id", "executionInfo", "exitConditions"],
        ):
            info = task.execution_info
            if info is None or _enum(info.result) != "failure":
                continue
            default = (task.as_dict().get("exitConditions") or {}).get("default") or {}
            if default.get("dependencyAction") != "satisfy":
                blocking.add(str(task.id))
        waiting: dict[str, dict[str, Any]] = {}
        for task in self.batch.list_tasks(
            job_id, filter="state eq 'active'", select=["id", "state", "dependsOn"]
        ):
            if _enum(task.state) == "active":
                waiting[str(task.id)] = task.as_dict().get("dependsOn") or {}
        blocked: set[str] = set()
        changed = True
        while changed:  # transitive: waiting on a blocked task is blocked too
            changed = False
            for tid, deps in waiting.items():
                if tid in blocked:
                    continue
                if _depends_on_any(deps, blocking | blocked):
                    blocked.add(tid)
                    changed = True
        return sorted(blocked)

    @_translate_errors
    def failed_tasks(
        self, job_id: str, *, tail_lines: int = 20, logs_prefix: str | None = None
    ) -> list[FailedTask]:
        """Tasks whose last try failed, each with the last lines of its stderr."""
        found = []
        for task in self.batch.list_tasks(
            job_id,
            filter="executionInfo/result eq 'failure'",
            select=["id", "executionInfo"],
        ):
            info = task.execution_info
            if info is None or _enum(info.result) != "failure":
                continue
            failure = ""
            if info.failure_info is not None:
                failure = f"{info.failure_info.code}: {info.failure_info.message}"
            found.append(
                FailedTask(
                    task_id=str(task.id),
                    exit_code=info.exit_code,
                    failure=failure,
                    stderr_tail=self._stderr_tail(job_id, str(task.id), tail_lines, logs_prefix),
                )
            )
        return sorted(found, key=lambda f: f.task_id)

    def _stderr_tail(
        self, job_id: str, task_id: str, lines: int, logs_prefix: str | None = None
    ) -> str:
        """From the node if it still has the file, else from the copy uploaded to storage
        (``LOGS_PREFIX/TASK_ID/logs/stderr.txt`` for runs, or the job's logs folder)."""
        data = b""
        try:
            data = b"".join(self.batch.download_task_file(job_id, task_id, "stderr.txt"))
        except Exception:
            logs = self._meta(job_id).get(LOGS_METADATA)
            store, blob = self.store, None
            if logs_prefix:
                blob = f"{logs_prefix}/{task_id}/logs/stderr.txt"
            elif logs:
                container, _, folder = logs.partition("/")
                store = self.store.for_container(container)
                blob = f"{folder}/{task_id}/stderr.txt"
            if blob is not None and store.exists(blob):
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    data = store.download(blob, Path(tmp) / "stderr.txt").read_bytes()
        text = data.decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------
# Helpers


_UNUSABLE_NODE_STATES = frozenset({"starttaskfailed", "unusable"})


def _enum(value: Any) -> str:
    """SDK enums are str-Enums whose str() is "Class.MEMBER"; the wire value is wanted."""
    return str(getattr(value, "value", value))


def _depends_on_any(deps: Mapping[str, Any], ids: set[str]) -> bool:
    if any(str(d) in ids for d in deps.get("taskIds") or []):
        return True
    for rng in deps.get("taskIdRanges") or []:
        start, end = int(rng.get("start", 0)), int(rng.get("end", -1))
        if any(i.isdigit() and start <= int(i) <= end for i in ids):
            return True
    return False


def _plain(value: Any) -> Any:
    """Pydantic models from `launcher.params` as plain data (mounts keep .source/.target)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not (hasattr(value, "source") and hasattr(value, "target")):
        return dump(exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _registry(registry: Mapping[str, Any]) -> dict[str, Any]:
    """``{server, username}`` (password from the environment) or a REST registry entry."""
    if "registryServer" in registry:
        return dict(registry)
    import os

    from launcher.params import REGISTRY_PASSWORD_ENV

    password = os.environ.get(REGISTRY_PASSWORD_ENV)
    if not password:
        raise UserError(
            f"[pool] container_registry: no password for {registry.get('server')!r}; "
            f"export {REGISTRY_PASSWORD_ENV}"
        )
    return {
        "registryServer": str(registry["server"]),
        "username": str(registry["username"]),
        "password": password,
    }


def _metadata(resource: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(m.get("name")): str(m.get("value"))
        for m in resource.get("metadata") or []
        if isinstance(m, Mapping)
    }


def _summary(pool: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a user recognises, for saying how two pools differ."""
    vm = pool.get("virtualMachineConfiguration") or {}
    cc = vm.get("containerConfiguration") or {}
    return {
        "vm_size": str(pool.get("vmSize", "")).lower(),
        "image": vm.get("imageReference"),
        "node_agent_sku_id": vm.get("nodeAgentSKUId"),
        "container_image": (cc.get("containerImageNames") or [None])[0],
        "task_slots_per_node": pool.get("taskSlotsPerNode"),
        "inter_node_communication": bool(pool.get("enableInterNodeCommunication")),
        "autoscale": bool(pool.get("enableAutoScale")),
        "autoscale_formula": pool.get("autoScaleFormula") if pool.get("enableAutoScale") else None,
        "dedicated_nodes": None
        if pool.get("enableAutoScale")
        else pool.get("targetDedicatedNodes"),
        "mounts": sorted(
            (m.get("azureBlobFileSystemConfiguration") or {}).get("relativeMountPath", "")
            for m in pool.get("mountConfiguration") or []
        ),
    }


def _describe_difference(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    have, want = _summary(existing), _summary(wanted)
    diffs = [f"{k}: {have[k]!r} -> {want[k]!r}" for k in want if have.get(k) != want[k]]
    return f" ({'; '.join(diffs)})" if diffs else " (start task or other settings)"


def _wrap(command: str) -> str:
    """The Batch command line for a shell command (sources the node's runtime env)."""
    from bootstrap.command import wrap_command

    return wrap_command(command)


__all__ = [
    "CATALOG",
    "Client",
    "FailedTask",
    "JobSummary",
    "PoolInfo",
    "PoolSpec",
    "SupportedImage",
    "TaskCounts",
    "TaskSpec",
    "spec_hash",
]
