"""The Batch client's network settings, read once from the environment (`transport_options`):
proxies (honoured unless NO_PROXY covers the endpoint), the CA bundle, and urllib's rules
for which spelling of a variable wins. The proxy is a real HTTP server on loopback."""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar

import pytest
from azure.core.exceptions import AzureError

from launcher.batch import connect, environment_proxies, transport_options

KEY = "a2V5LWZvci10ZXN0cy1vbmx5"


class _RecordingProxy(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)  # a proxied request carries the absolute URL
        body = b'{"odata.metadata":"x","code":"PoolNotFound","message":{"value":"no"}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    _RecordingProxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get_pool(env: dict[str, str]) -> None:
    settings = SimpleNamespace(endpoint="http://batch.example.invalid:8080", account="acct")
    client = connect(settings, env={"AZURE_BATCH_ACCESS_KEY": KEY, **env}).client
    client.get_pool("p", connection_timeout=2, retry_total=0)


def test_requests_go_through_the_proxy_from_the_environment(proxy: str) -> None:
    with pytest.raises(AzureError):  # the proxy answers 404 PoolNotFound
        _get_pool({"HTTP_PROXY": proxy})
    assert len(_RecordingProxy.seen) == 1
    assert _RecordingProxy.seen[0].startswith("http://batch.example.invalid:8080/pools/p")


def test_no_proxy_covering_the_endpoint_bypasses_the_proxy(proxy: str) -> None:
    with pytest.raises(AzureError):  # straight to a host that does not resolve
        _get_pool({"HTTP_PROXY": proxy, "NO_PROXY": ".example.invalid"})
    assert _RecordingProxy.seen == []


def test_the_ca_bundle_variables_set_tls_verification() -> None:
    def verify(env: dict[str, str]) -> object:
        return transport_options("https://acct.westeurope.batch.azure.com", env)[
            "transport"
        ].connection_config.verify

    assert verify({}) is True
    assert verify({"CURL_CA_BUNDLE": "/etc/ca.pem"}) == "/etc/ca.pem"
    assert verify({"REQUESTS_CA_BUNDLE": "/r.pem", "CURL_CA_BUNDLE": "/c.pem"}) == "/r.pem"


@pytest.mark.parametrize(
    "env",
    [
        {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1"},
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": ""},
        {"NO_PROXY": "example.org", "Http_proxy": "http://mixed:1"},
        {"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://cgi:1", "https_proxy": "http://s:1"},
        {"ALL_PROXY": "socks5://a:1"},
    ],
)
def test_proxy_variables_are_read_as_urllib_reads_them(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxies(env) == urllib.request.getproxies_environment()
