"""Adding many tasks at once: Batch's `addtaskcollection`, in ordered chunks, in parallel.

Why not the SDK's `create_tasks`: it builds a model per task and deserializes a model per
result, which on 10,000 tasks cost more client time than the requests themselves. Here each
task is serialized once as plain JSON, chunks are cut by count (at most 100, the service
limit) and by size (under the 1 MiB request limit), and the per-task results are read as
plain JSON. Requests still go through the SDK client's pipeline (`send_request`), so
authentication (SharedKey or Entra ID), retries of 429/5xx and transport settings stay the
SDK's.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

#: Batch accepts at most this many tasks per addtaskcollection request.
MAX_TASKS_PER_REQUEST = 100
#: Batch refuses request bodies over 1 MiB (RequestBodyTooLarge); keep a margin.
MAX_REQUEST_BYTES = 1024 * 1024 - 4096
#: 429 answers a chunk may get before the submission gives up (each waits Retry-After).
MAX_THROTTLED = 30


@dataclass
class CollectionResult:
    """What became of each task: added now, already there, or refused (id, code, message)."""

    added: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)


class TaskTooLarge(ValueError):
    """One task's JSON alone exceeds the request size limit."""


_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


@dataclass
class _Chunk:
    ids: list[str]
    bodies: list[dict[str, Any]]
    text: str | None = None  # the JSON array of `bodies`, once encoded

    def payload(self) -> bytes:
        if self.text is None:
            self.text = _encode(self.bodies)
        return ('{"value":' + self.text + "}").encode()

    def halves(self) -> tuple[_Chunk, _Chunk]:
        mid = len(self.bodies) // 2
        return self.subset(range(mid)), self.subset(range(mid, len(self.bodies)))

    def subset(self, keep: Iterable[int]) -> _Chunk:
        positions = list(keep)
        return _Chunk([self.ids[i] for i in positions], [self.bodies[i] for i in positions])


#: Room for the ``{"value":[...]}`` around the tasks (the per-task path adds one comma each).
_ENVELOPE = 16


def chunks(
    bodies: Iterable[dict[str, Any]],
    max_tasks: int = MAX_TASKS_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[_Chunk]:
    """Consecutive chunks in the order given, each within both limits."""
    group: list[dict[str, Any]] = []
    for body in bodies:
        group.append(body)
        if len(group) >= max_tasks:
            yield from _cut(group, max_tasks, max_bytes)
            group = []
    if group:
        yield from _cut(group, max_tasks, max_bytes)


def _cut(group: list[dict[str, Any]], max_tasks: int, max_bytes: int) -> Iterator[_Chunk]:
    """`group` as one chunk when it fits (one encoder call for all of it: the common case),
    else cut by size, task by task."""
    ids = [str(body["id"]) for body in group]
    text = _encode(group)  # ASCII (ensure_ascii): characters are bytes
    if len(text) + _ENVELOPE <= max_bytes:
        yield _Chunk(ids, group, text)
        return
    current: list[int] = []
    size = _ENVELOPE
    for i, body in enumerate(group):
        grow = len(_encode(body)) + 1
        if _ENVELOPE + grow > max_bytes:
            raise TaskTooLarge(
                f"task {body.get('id')!r} is {grow} bytes of JSON, over Batch's request limit"
                f" of {max_bytes} bytes; ship large command lines or environments as"
                " resource files"
            )
        if current and (len(current) >= max_tasks or size + grow > max_bytes):
            yield _Chunk([ids[j] for j in current], [group[j] for j in current])
            current, size = [], _ENVELOPE
        current.append(i)
        size += grow
    if current:
        yield _Chunk([ids[j] for j in current], [group[j] for j in current])


def add_task_collection(
    client: Any,
    job_id: str,
    bodies: Iterable[dict[str, Any]],
    *,
    max_concurrency: int = 8,
    attempts: int = 5,
    max_bytes: int = MAX_REQUEST_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> CollectionResult:
    """Add ``bodies`` (REST task JSON, a list or a generator) to the job; chunks start in
    order. An exception raised by a generator stops the submission; tasks sent before it
    stay added (sending them again is harmless: they count as existing).

    A chunk whose request failed in transit (connection dropped, 5xx after the pipeline's
    own retries) is sent again, up to ``attempts`` times, and a throttled one (429) after
    the service's Retry-After: tasks it had already added come back as `TaskExists` and
    count as existing, so every task is added once. Tasks the service reports as server
    errors are resent the same way. Errors that retrying cannot fix (job missing,
    authentication) are raised at once; tasks the service refuses are in ``refused``.
    """
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
    from azure.core.rest import HttpRequest

    api_version = getattr(getattr(client, "_config", None), "api_version", None) or "2025-06-01"
    url = f"/jobs/{quote(job_id, safe='')}/addtaskcollection"
    headers = {
        "Content-Type": "application/json; odata=minimalmetadata",
        "Accept": "application/json",
    }
    result = CollectionResult()

    def post(chunk: _Chunk) -> Any:
        request = HttpRequest(
            "POST",
            url,
            params={"api-version": api_version},
            headers=headers,
            content=chunk.payload(),
        )
        response = client.send_request(request)  # raises HttpResponseError unless 2xx
        if response.status_code != 200:  # a client without the SDK's error policy
            raise HttpResponseError(response=response, message=_error_text(response))
        return response.json()

    def send(chunk: _Chunk) -> None:
        pending = [chunk]
        failures = throttled = 0

        def again(current: _Chunk, delay: float) -> None:
            sleep(delay)
            pending.append(current)

        while pending:
            current = pending.pop()
            try:
                reply = post(current)
            except (ServiceRequestError, ServiceResponseError):
                failures += 1
                if failures >= attempts:
                    raise
                again(current, _backoff(failures))
                continue
            except HttpResponseError as exc:
                status = exc.status_code or 0
                if status == 413 or getattr(exc.error, "code", "") == "RequestBodyTooLarge":
                    if len(current.bodies) == 1:
                        raise TaskTooLarge(
                            f"task {current.ids[0]!r} was refused as too large"
                            " (RequestBodyTooLarge); ship large parts as resource files"
                        ) from None
                    pending.extend(reversed(current.halves()))
                    continue
                # azure-core does not retry a POST answered 429 or 502, nor any 5xx after
                # its own retries: a chunk is safe to resend (tasks added count as existing).
                if status == 429 and throttled < MAX_THROTTLED:
                    throttled += 1
                    again(current, _retry_after(exc.response, _backoff(throttled)))
                    continue
                if status >= 500 and failures + 1 < attempts:
                    failures += 1
                    again(current, _backoff(failures))
                    continue
                raise
            retry = _read_results(reply, result)
            if retry:
                failures += 1
                if failures >= attempts:
                    raise HttpResponseError(
                        message=f"{len(retry)} task(s) still failing with server errors after"
                        f" {attempts} attempts, e.g. {sorted(retry)[0]}"
                    )
                keep = [i for i, task_id in enumerate(current.ids) if task_id in retry]
                again(current.subset(keep), _backoff(failures))

    if max_concurrency <= 1:
        for chunk in chunks(bodies, max_bytes=max_bytes):
            send(chunk)
        return result
    # Chunks are cut from `bodies` as they come: when `bodies` is a generator, building the
    # next tasks overlaps with sending the previous ones. At most 2 x max_concurrency chunks
    # wait in memory.
    with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        inflight: deque[Future[None]] = deque()
        try:
            for chunk in chunks(bodies, max_bytes=max_bytes):
                inflight.append(pool.submit(send, chunk))
                while inflight and (len(inflight) > 2 * max_concurrency or inflight[0].done()):
                    inflight.popleft().result()  # the first error stops the submission
            while inflight:
                inflight.popleft().result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return result


def _read_results(reply: Any, result: CollectionResult) -> set[str]:
    """Record each task's outcome; return the ids to resend (server errors)."""
    retry: set[str] = set()
    for item in reply.get("value") or []:
        task_id = str(item.get("taskId"))
        status = str(item.get("status", "")).lower()
        error = item.get("error") or {}
        code = str(error.get("code") or "")
        if status == "success":
            result.added.append(task_id)
        elif code == "TaskExists":
            result.existed.append(task_id)
        elif status == "servererror":
            retry.add(task_id)
        else:
            message = (error.get("message") or {}).get("value", "") if error else ""
            result.refused.append((task_id, code, str(message)))
    return retry


def _backoff(failures: int) -> float:
    return float(min(8.0, 0.25 * 2 ** (failures - 1)))


def _retry_after(response: Any, default: float) -> float:
    """The service's Retry-After (seconds), capped at a minute."""
    try:
        return min(60.0, float(response.headers.get("Retry-After", default)))
    except (AttributeError, TypeError, ValueError):
        return default


def _error_text(response: Any) -> str:
    """``Code: message`` from a Batch error body, or the status line."""
    try:
        body = response.json()
        message = body.get("message") or {}
        text = message.get("value", "") if isinstance(message, dict) else str(message)
        return f"({body.get('code', response.status_code)}) {text}".strip()
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code} {getattr(response, 'reason', '')}".strip()
