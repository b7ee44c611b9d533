"""The Batch data-plane REST API over the Service: routing, auth, faults, JSON shapes.

A small hand-written router works on the raw (percent-encoded) path, so that SharedKey sees
exactly what the client signed and task file paths (`wd%2Fout%20dir%2Fx.txt`) decode once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import mimetypes
import os
import random
import re
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from emulator import auth, odata
from emulator.catalog import supported_images
from emulator.config import API_VERSION, Settings
from emulator.errors import BatchError, error_body
from emulator.service import Service
from emulator.util import http_date, iso

log = logging.getLogger("emulator.api")

MAX_COLLECTION_BYTES = 1024 * 1024
MAX_COLLECTION_TASKS = 100
SMALL_FILE = 1 << 20
CHUNK = 1 << 20
JSON_TYPE = "application/json;odata=minimalmetadata"

Handler = Callable[["Call"], Awaitable[Response]]
RESOURCE = re.compile(r"^(?:/pools/([^/]+)|/jobs/([^/]+)(?:/tasks/([^/]+))?)$")


class Call:
    """One request: path parameters, query, parsed body and the service."""

    def __init__(self, request: Request, params: dict[str, str], service: Service) -> None:
        self.request = request
        self.params = params
        self.service = service
        self.query = {
            k: v[0]
            for k, v in parse_qs(
                request.scope.get("query_string", b"").decode(), keep_blank_values=True
            ).items()
        }

    async def json(self) -> Any:
        raw = await self.request.body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise BatchError("InvalidRequestBody") from None

    async def obj(self) -> dict[str, Any]:
        body = await self.json()
        if not isinstance(body, dict):
            raise BatchError("InvalidRequestBody")
        return body

    def __getitem__(self, key: str) -> str:
        return self.params[key]


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    regex = (
        "^"
        + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern).replace("(?P<path>[^/]+)", "(?P<path>.+)")
        + "$"
    )

    def register(fn: Handler) -> Handler:
        ROUTES.append((method, re.compile(regex), fn))
        return fn

    return register


# ---------------------------------------------------------------------- response helpers
def reply(
    status: int = 200,
    body: Any = None,
    item: dict[str, Any] | None = None,
    location: str | None = None,
) -> Response:
    headers: dict[str, str] = {"DataServiceVersion": "3.0"}
    if item is not None:
        if item.get("eTag"):
            headers["ETag"] = str(item["eTag"])
        if item.get("lastModified"):
            headers["Last-Modified"] = http_date(
                datetime.fromisoformat(str(item["lastModified"]).replace("Z", "+00:00"))
            )
    if location:
        headers["Location"] = location
        headers["DataServiceId"] = location
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type=JSON_TYPE,
    )


def metadata(call: Call, name: str) -> str:
    return f"{call.service.base_url}/$metadata#{name}"


def encode_token(state: dict[str, Any]) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def decode_token(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
        assert isinstance(state, dict)
        return state
    except Exception:
        raise BatchError(
            "InvalidQueryParameterValue",
            values={"QueryParameterName": "$skiptoken", "QueryParameterValue": token},
        ) from None


def max_results(call: Call, default: int = 1000) -> int:
    text = call.query.get("maxresults")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 1000:
        raise BatchError(
            "InvalidQueryParameterValue",
            values={"QueryParameterName": "maxresults", "QueryParameterValue": text},
        )
    return value


def scan(
    source: list[Any],
    view: Callable[[Any], dict[str, Any] | None],
    state: dict[str, Any],
    start: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """Walk `source` from `start`, keeping items that pass the filter, up to maxresults."""
    predicate = odata.compile_filter(state.get("f"))
    fields = odata.parse_select(state.get("s"))
    limit = int(state.get("m") or 1000)
    out: list[dict[str, Any]] = []
    pos = start
    while pos < len(source):
        obj = source[pos]
        pos += 1
        if obj is None:
            continue
        item = view(obj)
        if item is None or (predicate and not predicate(item)):
            continue
        out.append(odata.select(item, fields))
        if len(out) >= limit:
            return out, (pos if pos < len(source) else None)
    return out, None


def lister(
    call: Call,
    source: Callable[[], list[Any]],
    view: Callable[[Any], dict[str, Any] | None],
    meta: str,
    path: str,
) -> Response:
    token = call.query.get("$skiptoken")
    if token:
        state = decode_token(token)
    else:
        state = {
            "f": call.query.get("$filter"),
            "s": call.query.get("$select"),
            "m": max_results(call),
        }
        odata.compile_filter(state["f"])  # reject a bad filter on the first page

    def items(start: int) -> tuple[list[dict[str, Any]], int | None]:
        return scan(source(), view, state, start)

    if not token:
        state["p"] = 0
    return paged_state(call, items, state, meta, path)


def paged_state(
    call: Call,
    items: Callable[[int], tuple[list[dict[str, Any]], int | None]],
    state: dict[str, Any],
    meta: str,
    path: str,
) -> Response:
    page, next_pos = items(int(state.get("p", 0)))
    body: dict[str, Any] = {"odata.metadata": metadata(call, meta), "value": page}
    if next_pos is not None:
        body["odata.nextLink"] = (
            f"{call.service.base_url}{path}?api-version={API_VERSION}"
            f"&$skiptoken={encode_token(dict(state, p=next_pos))}"
        )
    return reply(200, body)


def one(call: Call, item: dict[str, Any]) -> Response:
    fields = odata.parse_select(call.query.get("$select"))
    return reply(
        200,
        dict(odata.select(item, fields), **{"odata.metadata": metadata(call, "x/@Element")}),
        item=item,
    )


# ---------------------------------------------------------------------- pools
@route("POST", "/pools")
async def create_pool(call: Call) -> Response:
    pool = call.service.create_pool(await call.obj())
    return reply(201, item=pool.data, location=pool.data["url"])


@route("GET", "/pools")
async def list_pools(call: Call) -> Response:
    return lister(
        call, lambda: list(call.service.pools.values()), lambda p: p.data, "pools", "/pools"
    )


@route("GET", "/pools/{poolId}")
async def get_pool(call: Call) -> Response:
    return one(call, call.service.pool(call["poolId"]).data)


@route("HEAD", "/pools/{poolId}")
async def pool_exists(call: Call) -> Response:
    pool = call.service.pools.get(call["poolId"])
    if pool is None:
        return Response(status_code=404)
    return reply(200, item=pool.data)


@route("DELETE", "/pools/{poolId}")
async def delete_pool(call: Call) -> Response:
    call.service.delete_pool(call["poolId"])
    return reply(202)


@route("PATCH", "/pools/{poolId}")
async def update_pool(call: Call) -> Response:
    call.service.update_pool(call["poolId"], await call.obj(), replace=False)
    return reply(200, item=call.service.pool(call["poolId"]).data)


@route("POST", "/pools/{poolId}/updateproperties")
async def replace_pool(call: Call) -> Response:
    call.service.update_pool(call["poolId"], await call.obj(), replace=True)
    return reply(204, item=call.service.pool(call["poolId"]).data)


@route("POST", "/pools/{poolId}/resize")
async def resize_pool(call: Call) -> Response:
    call.service.resize_pool(call["poolId"], await call.obj())
    return reply(202)


@route("POST", "/pools/{poolId}/stopresize")
async def stop_resize(call: Call) -> Response:
    call.service.stop_resize(call["poolId"])
    return reply(202)


@route("POST", "/pools/{poolId}/removenodes")
async def remove_nodes(call: Call) -> Response:
    call.service.remove_nodes(call["poolId"], await call.obj())
    return reply(202)


@route("POST", "/pools/{poolId}/enableautoscale")
async def enable_autoscale(call: Call) -> Response:
    call.service.enable_autoscale(call["poolId"], await call.obj())
    return reply(200, item=call.service.pool(call["poolId"]).data)


@route("POST", "/pools/{poolId}/disableautoscale")
async def disable_autoscale(call: Call) -> Response:
    call.service.disable_autoscale(call["poolId"])
    return reply(200, item=call.service.pool(call["poolId"]).data)


@route("POST", "/pools/{poolId}/evaluateautoscale")
async def evaluate_autoscale(call: Call) -> Response:
    body = await call.obj()
    if not body.get("autoScaleFormula"):
        raise BatchError("MissingRequiredProperty", values={"PropertyName": "autoScaleFormula"})
    run = call.service.evaluate_autoscale(call["poolId"], body["autoScaleFormula"])
    return reply(200, dict(run, **{"odata.metadata": metadata(call, "autoscalerun/@Element")}))


@route("GET", "/nodecounts")
async def node_counts(call: Call) -> Response:
    counts = call.service.node_counts()
    return lister(call, lambda: counts, lambda c: c, "poolnodecounts", "/nodecounts")


@route("GET", "/supportedimages")
async def list_images(call: Call) -> Response:
    images = supported_images()
    return lister(call, lambda: images, lambda i: i, "supportedimages", "/supportedimages")


@route("GET", "/poolusagemetrics")
async def usage(call: Call) -> Response:
    return reply(200, {"odata.metadata": metadata(call, "poolusagemetrics"), "value": []})


@route("GET", "/applications")
async def applications(call: Call) -> Response:
    return reply(200, {"odata.metadata": metadata(call, "applications"), "value": []})


# ---------------------------------------------------------------------- nodes
@route("GET", "/pools/{poolId}/nodes")
async def list_nodes(call: Call) -> Response:
    pool = call.service.pool(call["poolId"])
    return lister(
        call,
        lambda: list(pool.nodes.values()),
        call.service.node_view,
        "nodes",
        f"/pools/{pool.id}/nodes",
    )


@route("GET", "/pools/{poolId}/nodes/{nodeId}")
async def get_node(call: Call) -> Response:
    return one(call, call.service.node_view(call.service.node(call["poolId"], call["nodeId"])))


@route("POST", "/pools/{poolId}/nodes/{nodeId}/reboot")
async def reboot_node(call: Call) -> Response:
    body = await call.obj()
    call.service.reboot_node(
        call["poolId"], call["nodeId"], str(body.get("nodeRebootOption") or "requeue")
    )
    return reply(202)


@route("POST", "/pools/{poolId}/nodes/{nodeId}/reimage")
async def reimage_node(call: Call) -> Response:
    body = await call.obj()
    call.service.reboot_node(
        call["poolId"], call["nodeId"], str(body.get("nodeReimageOption") or "requeue")
    )
    return reply(202)


@route("POST", "/pools/{poolId}/nodes/{nodeId}/deallocate")
async def deallocate_node(call: Call) -> Response:
    body = await call.obj()
    option = str(body.get("nodeDeallocateOption") or "requeue")
    call.service.deallocate_node(call["poolId"], call["nodeId"], option)
    return reply(202)


@route("POST", "/pools/{poolId}/nodes/{nodeId}/start")
async def start_node(call: Call) -> Response:
    call.service.start_node(call["poolId"], call["nodeId"])
    return reply(202)


@route("GET", "/pools/{poolId}/nodes/{nodeId}/extensions/{extensionName}")
async def get_extension(call: Call) -> Response:
    call.service.node(call["poolId"], call["nodeId"])
    raise BatchError("ExtensionNotFound", "The specified extension does not exist.", 404)


@route("POST", "/pools/{poolId}/nodes/{nodeId}/disablescheduling")
async def disable_scheduling(call: Call) -> Response:
    body = await call.obj()
    call.service.set_scheduling(
        call["poolId"],
        call["nodeId"],
        False,
        str(body.get("nodeDisableSchedulingOption") or "requeue").lower(),
    )
    return reply(200)


@route("POST", "/pools/{poolId}/nodes/{nodeId}/enablescheduling")
async def enable_scheduling(call: Call) -> Response:
    call.service.set_scheduling(call["poolId"], call["nodeId"], True)
    return reply(200)


@route("POST", "/pools/{poolId}/nodes/{nodeId}/users")
async def add_user(call: Call) -> Response:
    call.service.add_user(call["poolId"], call["nodeId"], await call.obj())
    return reply(
        201, location=f"{call.service.base_url}/pools/{call['poolId']}/nodes/{call['nodeId']}"
    )


@route("PUT", "/pools/{poolId}/nodes/{nodeId}/users/{userName}")
async def replace_user(call: Call) -> Response:
    call.service.replace_user(call["poolId"], call["nodeId"], call["userName"], await call.obj())
    return reply(200)


@route("DELETE", "/pools/{poolId}/nodes/{nodeId}/users/{userName}")
async def delete_user(call: Call) -> Response:
    call.service.delete_user(call["poolId"], call["nodeId"], call["userName"])
    return reply(200)


@route("GET", "/pools/{poolId}/nodes/{nodeId}/remoteloginsettings")
async def remote_login(call: Call) -> Response:
    node = call.service.node(call["poolId"], call["nodeId"])
    port = call.service.settings.remote_login_port
    return reply(
        200,
        {
            "odata.metadata": metadata(call, "remoteloginsettings/@Element"),
            "remoteLoginIPAddress": node.data.get("ipAddress", "127.0.0.1"),
            "remoteLoginPort": port,
        },
    )


@route("POST", "/pools/{poolId}/nodes/{nodeId}/uploadbatchservicelogs")
async def upload_logs(call: Call) -> Response:
    call.service.node(call["poolId"], call["nodeId"])
    return reply(
        200,
        {
            "virtualDirectoryName": f"{call['poolId']}/{call['nodeId']}/{uuid.uuid4()}",
            "numberOfFilesUploaded": 0,
        },
    )


@route("GET", "/pools/{poolId}/nodes/{nodeId}/extensions")
async def list_extensions(call: Call) -> Response:
    call.service.node(call["poolId"], call["nodeId"])
    return reply(200, {"odata.metadata": metadata(call, "extensions"), "value": []})


def _node_root(call: Call) -> tuple[Path, str]:
    node = call.service.node(call["poolId"], call["nodeId"])
    return node.root, f"{call.service.base_url}/pools/{node.pool.id}/nodes/{node.id}/files"


@route("GET", "/pools/{poolId}/nodes/{nodeId}/files")
async def list_node_files(call: Call) -> Response:
    root, base = _node_root(call)
    return await file_listing(
        call, root, base, f"/pools/{call['poolId']}/nodes/{call['nodeId']}/files"
    )


@route("GET", "/pools/{poolId}/nodes/{nodeId}/files/{path}")
@route("HEAD", "/pools/{poolId}/nodes/{nodeId}/files/{path}")
async def get_node_file(call: Call) -> Response:
    root, base = _node_root(call)
    return file_response(call, root, call["path"], base, body=call.request.method == "GET")


@route("DELETE", "/pools/{poolId}/nodes/{nodeId}/files/{path}")
async def delete_node_file(call: Call) -> Response:
    root, _ = _node_root(call)
    return await delete_file(call, root, call["path"])


# ---------------------------------------------------------------------- jobs
@route("POST", "/jobs")
async def create_job(call: Call) -> Response:
    job = call.service.create_job(await call.obj())
    return reply(201, item=job.data, location=job.data["url"])


@route("GET", "/jobs")
async def list_jobs(call: Call) -> Response:
    return lister(
        call, lambda: list(call.service.jobs.values()), call.service.job_view, "jobs", "/jobs"
    )


@route("GET", "/jobs/{jobId}")
async def get_job(call: Call) -> Response:
    return one(call, call.service.job(call["jobId"]).data)


@route("PATCH", "/jobs/{jobId}")
async def update_job(call: Call) -> Response:
    call.service.update_job(call["jobId"], await call.obj(), replace=False)
    return reply(200, item=call.service.job(call["jobId"]).data)


@route("PUT", "/jobs/{jobId}")
async def replace_job(call: Call) -> Response:
    call.service.update_job(call["jobId"], await call.obj(), replace=True)
    return reply(200, item=call.service.job(call["jobId"]).data)


@route("DELETE", "/jobs/{jobId}")
async def delete_job(call: Call) -> Response:
    call.service.delete_job(call["jobId"])
    return reply(202)


@route("POST", "/jobs/{jobId}/disable")
async def disable_job(call: Call) -> Response:
    body = await call.obj()
    call.service.disable_job(call["jobId"], str(body.get("disableTasks") or "requeue"))
    return reply(202)


@route("POST", "/jobs/{jobId}/enable")
async def enable_job(call: Call) -> Response:
    call.service.enable_job(call["jobId"])
    return reply(202)


@route("POST", "/jobs/{jobId}/terminate")
async def terminate_job(call: Call) -> Response:
    body = await call.obj()
    call.service.terminate_job(call["jobId"], body.get("terminateReason"))
    return reply(202)


@route("GET", "/jobs/{jobId}/taskcounts")
async def task_counts(call: Call) -> Response:
    counts = call.service.task_counts(call["jobId"])
    return reply(
        200, dict(counts, **{"odata.metadata": metadata(call, "taskcountsresult/@Element")})
    )


@route("GET", "/jobs/{jobId}/jobpreparationandreleasetaskstatus")
async def prep_status(call: Call) -> Response:
    call.service.job(call["jobId"])
    return reply(
        200,
        {"odata.metadata": metadata(call, "jobpreparationandreleasetaskstatuslist"), "value": []},
    )


@route("GET", "/jobschedules")
async def list_schedules(call: Call) -> Response:
    return reply(200, {"odata.metadata": metadata(call, "jobschedules"), "value": []})


@route("GET", "/jobschedules/{scheduleId}")
@route("HEAD", "/jobschedules/{scheduleId}")
@route("GET", "/jobschedules/{scheduleId}/jobs")
async def no_schedule(call: Call) -> Response:
    """Job schedules are not emulated: none exists."""
    raise BatchError("JobScheduleNotFound", "The specified job schedule does not exist.", 404)


@route("GET", "/applications/{applicationId}")
async def no_application(call: Call) -> Response:
    raise BatchError("ApplicationNotFound", "The specified application does not exist.", 404)


# ---------------------------------------------------------------------- tasks
@route("POST", "/jobs/{jobId}/tasks")
async def create_task(call: Call) -> Response:
    task = call.service.add_task(call["jobId"], await call.obj())
    return reply(201, item=task.data, location=task.data["url"])


@route("POST", "/jobs/{jobId}/addtaskcollection")
async def add_collection(call: Call) -> Response:
    raw = await call.request.body()
    if len(raw) > MAX_COLLECTION_BYTES:
        raise BatchError(
            "RequestBodyTooLarge", values={"MaxRequestBodySize": str(MAX_COLLECTION_BYTES)}
        )
    body = await call.obj()
    values = body.get("value")
    if not isinstance(values, list) or not values:
        raise BatchError("MissingRequiredProperty", values={"PropertyName": "value"})
    if len(values) > MAX_COLLECTION_TASKS:
        raise BatchError(
            "InvalidPropertyValue",
            values={
                "PropertyName": "value",
                "Reason": f"at most {MAX_COLLECTION_TASKS} tasks per request",
            },
        )
    results = call.service.add_tasks(call["jobId"], values)
    return reply(200, {"odata.metadata": metadata(call, "taskaddresult"), "value": results})


@route("GET", "/jobs/{jobId}/tasks")
async def list_tasks(call: Call) -> Response:
    job = call.service.job(call["jobId"])
    return lister(call, lambda: job.order, call.service.task_view, "tasks", f"/jobs/{job.id}/tasks")


@route("GET", "/jobs/{jobId}/tasks/{taskId}")
async def get_task(call: Call) -> Response:
    task = call.service.task(call["jobId"], call["taskId"])
    return one(call, call.service.task_view(task))


@route("PUT", "/jobs/{jobId}/tasks/{taskId}")
async def update_task(call: Call) -> Response:
    call.service.update_task(call["jobId"], call["taskId"], await call.obj())
    return reply(200, item=call.service.task(call["jobId"], call["taskId"]).data)


@route("DELETE", "/jobs/{jobId}/tasks/{taskId}")
async def delete_task(call: Call) -> Response:
    call.service.delete_task(call["jobId"], call["taskId"])
    return reply(200)


@route("POST", "/jobs/{jobId}/tasks/{taskId}/terminate")
async def terminate_task(call: Call) -> Response:
    call.service.terminate_task(call["jobId"], call["taskId"])
    return reply(204)


@route("POST", "/jobs/{jobId}/tasks/{taskId}/reactivate")
async def reactivate_task(call: Call) -> Response:
    call.service.reactivate_task(call["jobId"], call["taskId"])
    return reply(204)


@route("GET", "/jobs/{jobId}/tasks/{taskId}/subtasksinfo")
async def subtasks(call: Call) -> Response:
    value = call.service.subtasks(call["jobId"], call["taskId"])
    return reply(200, {"odata.metadata": metadata(call, "subtaskinformations"), "value": value})


def _task_root(call: Call) -> tuple[Path | None, str]:
    task = call.service.task(call["jobId"], call["taskId"])
    base = f"{call.service.base_url}/jobs/{task.job.id}/tasks/{task.id}/files"
    return call.service.task_dir(task), base


@route("GET", "/jobs/{jobId}/tasks/{taskId}/files")
async def list_task_files(call: Call) -> Response:
    root, base = _task_root(call)
    return await file_listing(
        call, root, base, f"/jobs/{call['jobId']}/tasks/{call['taskId']}/files"
    )


@route("GET", "/jobs/{jobId}/tasks/{taskId}/files/{path}")
@route("HEAD", "/jobs/{jobId}/tasks/{taskId}/files/{path}")
async def get_task_file(call: Call) -> Response:
    root, base = _task_root(call)
    return file_response(call, root, call["path"], base, body=call.request.method == "GET")


@route("DELETE", "/jobs/{jobId}/tasks/{taskId}/files/{path}")
async def delete_task_file(call: Call) -> Response:
    root, _ = _task_root(call)
    return await delete_file(call, root, call["path"])


# ---------------------------------------------------------------------- files
def _resolve(root: Path | None, rel: str) -> Path:
    if root is None:
        raise BatchError("FileNotFound")
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BatchError("FileNotFound")
    path = root.joinpath(*parts)
    if not os.path.lexists(path):
        raise BatchError("FileNotFound")
    return path


def _file_props(path: Path) -> dict[str, Any]:
    st = path.stat()
    created = datetime.fromtimestamp(st.st_ctime, UTC)
    modified = datetime.fromtimestamp(st.st_mtime, UTC)
    props: dict[str, Any] = {
        "creationTime": iso(created),
        "lastModified": iso(modified),
        "contentLength": str(0 if path.is_dir() else st.st_size),
        "fileMode": f"{st.st_mode:o}",
    }
    if not path.is_dir():
        props["contentType"] = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return props


async def file_listing(call: Call, root: Path | None, base: str, path: str) -> Response:
    recursive = call.query.get("recursive", "").lower() == "true"
    entries = await asyncio.to_thread(_walk, root, base, recursive)
    return lister(call, lambda: entries, lambda e: e, "files", path)


def _walk(root: Path | None, base: str, recursive: bool) -> list[dict[str, Any]]:
    """Directory entries in Batch's file-list shape (on a worker thread: trees can be big)."""
    entries: list[dict[str, Any]] = []
    if root is None or not root.is_dir():
        return entries
    walker = sorted(root.rglob("*")) if recursive else sorted(root.iterdir())
    for entry in walker:
        try:
            rel = entry.relative_to(root).as_posix()
            entries.append(
                {
                    "name": rel,
                    "url": f"{base}/{quote(rel)}",
                    "isDirectory": entry.is_dir(),
                    "properties": _file_props(entry),
                }
            )
        except OSError:
            continue
    return entries


def _parse_range(header: str, size: int) -> tuple[int, int]:
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        raise BatchError("InvalidRange", status=416)
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        start, end = max(0, size - int(m.group(2))), size - 1
    end = min(end, size - 1)
    if start > end and size > 0:
        raise BatchError("InvalidRange", status=416)
    return start, end


def file_response(call: Call, root: Path | None, rel: str, base: str, body: bool) -> Response:
    path = _resolve(root, rel)
    st = path.stat()
    is_dir = stat.S_ISDIR(st.st_mode)
    headers = {
        "ocp-creation-time": http_date(datetime.fromtimestamp(st.st_ctime, UTC)),
        "ocp-batch-file-isdirectory": "true" if is_dir else "false",
        "ocp-batch-file-url": f"{base}/{quote(rel)}",
        "ocp-batch-file-mode": f"{st.st_mode:o}",
        "Last-Modified": http_date(datetime.fromtimestamp(st.st_mtime, UTC)),
        "DataServiceVersion": "3.0",
    }
    if is_dir:
        if body:
            raise BatchError("FileNotFound", "The specified path is a directory.")
        headers["Content-Length"] = "0"
        return Response(status_code=200, headers=headers)
    size = st.st_size
    start, end = 0, size - 1
    range_header = call.request.headers.get("ocp-range")
    if body and range_header:
        start, end = _parse_range(range_header, size)
    length = max(0, end - start + 1)
    headers["Content-Length"] = str(length if body else size)
    if not body:
        return Response(status_code=200, headers=headers, media_type="application/octet-stream")
    if length <= SMALL_FILE:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(length)
        return Response(
            data, status_code=200, headers=headers, media_type="application/octet-stream"
        )
    return StreamingResponse(
        _chunks(path, start, length),
        status_code=200,
        headers=headers,
        media_type="application/octet-stream",
    )


async def _chunks(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    """A large file in 1 MiB reads on a worker thread, so the loop never blocks on it."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(handle.seek, start)
        remaining = length
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


async def delete_file(call: Call, root: Path | None, rel: str) -> Response:
    path = _resolve(root, rel)
    if path.is_dir():
        if call.query.get("recursive", "").lower() != "true" and any(path.iterdir()):
            raise BatchError(
                "DirectoryNotEmpty", "The directory is not empty; use recursive=true.", 409
            )
        await asyncio.to_thread(shutil.rmtree, path)
    else:
        path.unlink()
    return reply(200)


# ---------------------------------------------------------------------- the ASGI app
def _unquote_etag(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


class BatchApp:
    """ASGI app: faults first (before any work), then SharedKey, then the route."""

    def __init__(self, service: Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.fault_rng = random.Random(settings.seed)
        self.last_request = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.last_request = time.monotonic()
        if self.settings.latency_ms > 0:
            # A simulated network round trip, so that benchmarks on loopback weigh the number
            # of requests as a client far from the service would.
            await asyncio.sleep(self.settings.latency_ms / 1000)
        if await self._inject_fault(scope, receive, send):
            return
        request = Request(scope, receive)
        response = await self._handle(request)
        request_id = str(uuid.uuid4())
        response.headers["request-id"] = request_id
        client_id = request.headers.get("client-request-id")
        if client_id:
            response.headers["client-request-id"] = client_id
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.service.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _inject_fault(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer this request with a transient failure, decided before any work is done."""
        rate, throttle = self.settings.fault_rate, self.settings.throttle_rate
        if rate <= 0 and throttle <= 0:
            return False
        draw = self.fault_rng.random()
        kind = self.fault_rng.random()
        method = scope["method"]
        if draw < throttle:
            error = BatchError("TooManyRequests", status=429)
            response = Response(
                json.dumps(error.body(self.service.base_url)),
                status_code=429,
                media_type=JSON_TYPE,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return True
        if draw < throttle + rate:
            # azure-core retries a dropped connection only for idempotent methods; POSTs get a 5xx.
            if kind < 1 / 3 and method in ("GET", "HEAD", "PUT", "DELETE"):
                transport = getattr(getattr(send, "__self__", None), "transport", None)
                if transport is not None:
                    transport.abort()
                    return True
            code, status = ("InternalError", 500) if kind < 2 / 3 else ("ServerBusy", 503)
            error = BatchError(code, status=status)
            response = Response(
                json.dumps(error.body(self.service.base_url)),
                status_code=status,
                media_type=JSON_TYPE,
            )
            await response(scope, receive, send)
            return True
        return False

    def _preconditions(
        self, method: str, raw_path: str, headers: dict[str, str]
    ) -> Response | None:
        """If-Match / If-None-Match against a pool's, job's or task's ETag (412 when unmet)."""
        m = RESOURCE.match(raw_path)
        if m is None:
            return None
        pool_id, job_id, task_id = (unquote(g) if g else None for g in m.groups())
        item: dict[str, Any] | None = None
        if pool_id:
            pool = self.service.pools.get(pool_id)
            item = pool.data if pool else None
        elif job_id and task_id:
            job = self.service.jobs.get(job_id)
            task = job.tasks.get(task_id) if job else None
            item = task.data if task else None
        elif job_id:
            job = self.service.jobs.get(job_id)
            item = job.data if job else None
        current = str(item["eTag"]) if item else None
        if_match = _unquote_etag(headers.get("if-match"))
        if if_match is not None and current is not None and if_match not in ("*", current):
            raise BatchError(
                "ConditionNotMet",
                "The condition specified using HTTP conditional header(s) is not met.",
                412,
            )
        if_none = _unquote_etag(headers.get("if-none-match"))
        if if_none is not None and current is not None and if_none in ("*", current):
            if method in ("GET", "HEAD"):
                return Response(status_code=304, headers={"ETag": current})
            raise BatchError(
                "ConditionNotMet",
                "The condition specified using HTTP conditional header(s) is not met.",
                412,
            )
        return None

    async def _handle(self, request: Request) -> Response:
        scope = request.scope
        method = scope["method"]
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if not auth.verify(
                method, raw_path, query, headers, self.settings.account, self.settings.key
            ):
                raise BatchError(
                    "AuthenticationFailed",
                    values={
                        "AuthenticationErrorDetail": "The MAC signature found in the HTTP "
                        "request is not the same as any computed signature."
                    },
                )
            if "if-match" in headers or "if-none-match" in headers:
                early = self._preconditions(method, raw_path, headers)
                if early is not None:
                    return early
            for route_method, regex, handler in ROUTES:
                if route_method != method:
                    continue
                m = regex.match(raw_path)
                if m:
                    params = {k: unquote(v) for k, v in m.groupdict().items()}
                    return await handler(Call(request, params, self.service))
            raise BatchError("ResourceNotFound", status=404)
        except BatchError as exc:
            if method == "HEAD":
                return Response(status_code=exc.status)
            return Response(
                json.dumps(exc.body(self.service.base_url)),
                status_code=exc.status,
                media_type=JSON_TYPE,
            )
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # A body of the wrong shape (a string where an object belongs, ...) is the client's
            # error: 400, never a retryable 5xx. Logged in case it is ours.
            log.warning("bad request body on %s %s", method, raw_path, exc_info=True)
            error = BatchError(
                "InvalidRequestBody", values={"Reason": f"{type(exc).__name__}: {exc}"}
            )
            return Response(
                json.dumps(error.body(self.service.base_url)), status_code=400, media_type=JSON_TYPE
            )
        except Exception:
            log.exception("unhandled error on %s %s", method, raw_path)
            body = error_body(
                self.service.base_url,
                "InternalError",
                "Server encountered an internal error. Please try again after some time.",
            )
            return Response(json.dumps(body), status_code=500, media_type=JSON_TYPE)
