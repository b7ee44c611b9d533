"""A minimal signed HTTP client for the Batch REST API: the conformance suite's wire.

It sends exactly the request an example describes (method, path, query, JSON body) with the
headers every Batch client sends, signed by `sharedkey`, and hands back status, headers and
body untouched, so that nothing between the example and the emulator reinterprets either.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tests.emulator.conformance.sharedkey import authorization

API_VERSION = "2025-06-01"
JSON_CONTENT_TYPE = "application/json; odata=minimalmetadata"


@dataclass
class Response:
    """One HTTP answer; header names lowercased."""

    method: str
    target: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def describe(self) -> str:
        """A one-line summary for assertion messages."""
        text = self.body[:600].decode("utf-8", "replace")
        return f"{self.method} {self.target} -> {self.status}: {text}"


@dataclass
class RawBatchClient:
    """Signed requests against one Batch endpoint (the emulator on loopback)."""

    endpoint: str
    account: str
    key: str
    timeout: float = 30.0
    log: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, headers: Mapping[str, str] | None = None) -> Response:
        """Send `method path?api-version=...&query` with an optional JSON body."""
        params = {"api-version": API_VERSION}
        for name, value in (query or {}).items():
            params[name] = str(value).lower() if isinstance(value, bool) else str(value)
        target = path + "?" + urlencode(params, quote_via=quote)
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        sent: dict[str, str] = {
            "client-request-id": str(uuid.uuid4()),
            "ocp-date": email.utils.formatdate(usegmt=True),
            "accept": "application/json",
        }
        if body is not None:
            sent["content-type"] = JSON_CONTENT_TYPE
        if body is not None or method.upper() not in ("GET", "HEAD"):
            sent["content-length"] = str(len(payload))
        sent.update(headers or {})
        sent["authorization"] = authorization(method, target, sent, self.account, self.key)
        parts = urlsplit(self.endpoint)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                          timeout=self.timeout)
        try:
            conn.putrequest(method.upper(), target, skip_host=False, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders(payload or None)
            answer = conn.getresponse()
            data = answer.read()
            got = {name.lower(): value for name, value in answer.getheaders()}
        finally:
            conn.close()
        response = Response(method.upper(), target, answer.status, got, data)
        self.log.append(response.describe())
        return response

    def get_json(self, path: str, **query: Any) -> dict[str, Any]:
        """GET that must succeed; the decoded JSON body."""
        response = self.request("GET", path, query=query)
        assert response.status == 200, response.describe()
        data = response.json()
        assert isinstance(data, dict), response.describe()
        return data

    def must(self, method: str, path: str, status: int, **kwargs: Any) -> Response:
        """A setup request that must answer `status`; fails the test with the body otherwise."""
        response = self.request(method, path, **kwargs)
        assert response.status == status, f"setup step failed: {response.describe()}"
        return response

    def wait_for(self, path: str, predicate: Callable[[dict[str, Any]], bool], *,
                 timeout: float = 20.0, what: str = "") -> dict[str, Any]:
        """Poll GET `path` until `predicate(body)` holds; the last body, or fail on timeout."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while True:
            response = self.request("GET", path)
            if response.status == 200:
                body = response.json()
                if predicate(body):
                    return body
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what or path}: "
                    f"{response.describe()}"
                )
            time.sleep(0.2)


def quote_file_path(path: str) -> str:
    """Task/node file paths travel as one path segment, quoted with safe='' like the SDK."""
    return quote(path, safe="")
