"""The suite's SharedKey helper signs exactly what the azure-batch SDK signs.

A loopback HTTP server records the requests the real SDK sends (no emulator involved);
for each, our helper, written from BATCH-NOTES.md, must produce the SDK's Authorization
header. This anchors the conformance suite: a request the emulator rejects with our
signature would also be rejected from the SDK.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from tests.emulator.conformance.sharedkey import authorization

ACCOUNT = "signcheck"
KEY = "c2lnbi1jaGVjay1rZXktZm9yLXRoZS1jb25mb3JtYW5jZS1zdWl0ZQ=="


class Recorder(BaseHTTPRequestHandler):
    """Answers every request 404 (so the SDK does not retry) after recording it."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append((self.command, self.path, dict(self.headers.items())))
        body = b'{"code":"PoolNotFound","message":{"lang":"en-US","value":"x"}}'
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _record

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, str, dict[str, str]]]]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = BatchClient(f"http://127.0.0.1:{server.server_address[1]}",
                         AzureNamedKeyCredential(ACCOUNT, KEY))
    calls: list[Callable[[], Any]] = [
        lambda: client.get_pool("p1", select=["id", "state"]),
        lambda: client.pool_exists("p1"),
        lambda: client.create_task("job 1", models.BatchTaskCreateOptions(
            id="t1", command_line="/bin/true")),
        lambda: client.delete_task_file("j", "t", "wd/out dir/x.txt", recursive=False),
        lambda: list(client.list_tasks("j", filter="state eq 'active'", max_results=5)),
        lambda: client.disable_pool_auto_scale("p1"),
    ]
    for call in calls:
        # every answer is a 404 (the HEAD one with an empty body, which the SDK cannot parse)
        with contextlib.suppress(HttpResponseError, ValueError):
            call()
    yield list(Recorder.seen)
    server.shutdown()
    server.server_close()


def test_helper_signs_like_the_sdk(recorded: list[tuple[str, str, dict[str, str]]]) -> None:
    methods = {method for method, _, _ in recorded}
    assert {"GET", "HEAD", "POST", "DELETE"} <= methods, recorded
    for method, target, headers in recorded:
        lowered = {name.lower(): value for name, value in headers.items()}
        sent = lowered.pop("authorization")
        assert authorization(method, target, lowered, ACCOUNT, KEY) == sent, (method, target)


def test_signature_depends_on_what_is_signed() -> None:
    """Changing the path, a query value, an ocp- header or the key changes the signature."""
    headers = {"ocp-date": "Fri, 17 Feb 2017 00:00:00 GMT"}
    base = authorization("GET", "/pools/p1?api-version=2025-06-01", headers, ACCOUNT, KEY)
    variants = [
        authorization("GET", "/pools/p2?api-version=2025-06-01", headers, ACCOUNT, KEY),
        authorization("GET", "/pools/p1?api-version=2024-07-01", headers, ACCOUNT, KEY),
        authorization("GET", "/pools/p1?api-version=2025-06-01",
                      {"ocp-date": "Sat, 18 Feb 2017 00:00:00 GMT"}, ACCOUNT, KEY),
        authorization("GET", "/pools/p1?api-version=2025-06-01", headers, ACCOUNT,
                      "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXk="),
        authorization("HEAD", "/pools/p1?api-version=2025-06-01", headers, ACCOUNT, KEY),
    ]
    assert base.startswith(f"SharedKey {ACCOUNT}:")
    assert len({base, *variants}) == 6
