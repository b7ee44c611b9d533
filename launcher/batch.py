"""Building the azure-batch `BatchClient` for the configured endpoint and credentials.

Three ways in, decided by ``[batch] endpoint`` and the environment (Azure CLI names):
``"emulator"`` starts or reuses the embedded emulator daemon (SharedKey with its well-known
key); an endpoint URL with ``AZURE_BATCH_ACCESS_KEY`` uses SharedKey; an https endpoint
without a key uses Entra ID (`DefaultAzureCredential`). Keys only ever come from the
environment, never the parameter file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from launcher import paths
from launcher.errors import UserError

ENDPOINT_ENV = "AZURE_BATCH_ENDPOINT"
ACCOUNT_ENV = "AZURE_BATCH_ACCOUNT"
KEY_ENV = "AZURE_BATCH_ACCESS_KEY"

#: Long-running operations poll every 5 s by default; the emulator answers in milliseconds.
EMULATOR_POLLING_INTERVAL = 0.2
AZURE_POLLING_INTERVAL = 5.0


class BatchSettings(Protocol):
    """The ``[batch]`` table as the params model exposes it."""

    endpoint: str | None
    account: str | None


@dataclass
class BatchConnection:
    """A client plus what callers need to drive it well (poll interval, where it points)."""

    client: Any  # azure.batch.BatchClient
    endpoint: str
    account: str
    polling_interval: float
    emulator: bool


def _is_loopback(endpoint: str) -> bool:
    return (urlparse(endpoint).hostname or "") in {"127.0.0.1", "localhost", "::1"}


def _emulator_defaults() -> tuple[str, str]:
    from emulator.config import DEFAULT_ACCOUNT, DEFAULT_KEY

    return DEFAULT_ACCOUNT, DEFAULT_KEY


def environment_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """``*_proxy`` variables by scheme, as urllib reads them (lowercase names win; an empty
    lowercase variable unsets; ``no`` holds NO_PROXY)."""
    proxies: dict[str, str] = {}
    for name, value in env.items():
        if value and name.lower().endswith("_proxy"):
            proxies[name[:-6].lower()] = value
    if "REQUEST_METHOD" in env:  # a CGI script: HTTP_PROXY may come from a request header
        proxies.pop("http", None)
    for name, value in env.items():
        if name.endswith("_proxy"):  # a lowercase suffix takes precedence
            if value:
                proxies[name[:-6].lower()] = value
            else:
                proxies.pop(name[:-6].lower(), None)
    return proxies


def transport_options(endpoint: str, env: Mapping[str, str]) -> dict[str, Any]:
    """BatchClient options that read the network environment once, for this endpoint.

    With its defaults, requests re-reads the proxy variables (scanning the environment twice)
    and ~/.netrc on every request, a fifth of the client's cost per request in a bulk
    submission; a ~/.netrc entry for the host would even replace the SharedKey header. The
    same settings are honoured, decided once: HTTP(S)_PROXY unless NO_PROXY covers the
    endpoint, and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE for TLS verification.
    """
    from azure.core.pipeline.transport import RequestsTransport
    from requests.utils import should_bypass_proxies

    proxies = environment_proxies(env)
    no_proxy = proxies.pop("no", None)
    bypass = not proxies or should_bypass_proxies(endpoint, no_proxy=no_proxy or "")
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    options: dict[str, Any] = {
        "transport": RequestsTransport(use_env_settings=False, connection_verify=bundle or True)
    }
    if not bypass:
        options["proxies"] = proxies
    return options


def connect(
    settings: BatchSettings | None = None,
    env: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> BatchConnection:
    """Resolve endpoint and credentials and build the client (no request is sent).

    ``client_kwargs`` go to `BatchClient` (azure-core options: hooks, per-call policies,
    or a ``transport`` of your own instead of `transport_options`).
    """
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    env = os.environ if env is None else env

    def client_for(url: str, credential: Any) -> Any:
        options = {} if "transport" in client_kwargs else transport_options(url, env)
        return BatchClient(url, credential, **options, **client_kwargs)

    endpoint = (getattr(settings, "endpoint", None) or env.get(ENDPOINT_ENV) or "").strip()
    account = (getattr(settings, "account", None) or env.get(ACCOUNT_ENV) or "").strip()
    key = env.get(KEY_ENV, "").strip()

    if not endpoint:
        raise UserError(
            f'[batch] endpoint: not set; set it in the parameter file ("emulator" for the '
            f"local emulator) or export {ENDPOINT_ENV}=https://ACCOUNT.REGION.batch.azure.com"
        )
    if endpoint == "emulator":
        from emulator.daemon import ensure_emulator

        info = ensure_emulator(paths.emulator_state_dir())
        client = client_for(info.endpoint, AzureNamedKeyCredential(info.account, info.key))
        return BatchConnection(client, info.endpoint, info.account, EMULATOR_POLLING_INTERVAL, True)

    scheme = urlparse(endpoint).scheme
    if scheme not in ("http", "https") or not urlparse(endpoint).hostname:
        raise UserError(
            f'[batch] endpoint: {endpoint!r} is not a URL; use "emulator" or '
            "https://ACCOUNT.REGION.batch.azure.com"
        )
    loopback = _is_loopback(endpoint)
    interval = EMULATOR_POLLING_INTERVAL if loopback else AZURE_POLLING_INTERVAL
    if loopback and not key:
        # `batchlaunch emulator serve` on this machine: its documented development account.
        default_account, key = _emulator_defaults()
        account = account or default_account
    if key:
        if not account:
            raise UserError(
                f"[batch] account: not set; set it in the parameter file or export {ACCOUNT_ENV} "
                f"(it goes with {KEY_ENV})"
            )
        client = client_for(endpoint, AzureNamedKeyCredential(account, key))
        return BatchConnection(client, endpoint, account, interval, loopback)
    if scheme != "https":
        raise UserError(
            f"[batch] endpoint: {endpoint} is plain http, where Entra ID tokens are refused; "
            f"export {ACCOUNT_ENV} and {KEY_ENV} for SharedKey, or use https"
        )
    credential = entra_credential(
        env, scope="https://batch.core.windows.net/.default", what="[batch] endpoint"
    )
    client = client_for(endpoint, credential)
    return BatchConnection(client, endpoint, account, interval, False)


MANAGED_IDENTITY_ENV = "BATCHLAUNCH_MANAGED_IDENTITY"


def entra_credential(
    env: Mapping[str, str] | None = None, *, scope: str | None = None, what: str = ""
) -> Any:
    """`DefaultAzureCredential` for Entra ID sign-in (environment, workload identity, az /
    azd / PowerShell logins).

    The managed-identity probe is left out unless asked for (``BATCHLAUNCH_MANAGED_IDENTITY=1``)
    or the host advertises one (``IDENTITY_ENDPOINT``/``MSI_ENDPOINT``): on a laptop it
    waits on a metadata endpoint that is not there, which turned a missing credential into a
    minute-long hang instead of a one-line error.
    """
    from azure.identity import DefaultAzureCredential

    env = os.environ if env is None else env
    use_managed = bool(
        env.get(MANAGED_IDENTITY_ENV) or env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT")
    )
    credential = DefaultAzureCredential(
        exclude_managed_identity_credential=not use_managed, process_timeout=20
    )
    if scope is not None:
        # Ask for a token now: without one, the SDKs' retry policies would spend a minute
        # or more retrying every request before reporting the missing sign-in.
        from azure.core.exceptions import ClientAuthenticationError

        try:
            credential.get_token(scope)
        except ClientAuthenticationError:
            raise UserError(
                f"{what}: no Entra ID sign-in found (tried environment, workload identity, "
                "az, azd and PowerShell logins); sign in with `az login`, export "
                "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or use a key "
                f"({KEY_ENV} / AZURE_STORAGE_CONNECTION_STRING)"
            ) from None
    return credential


def make_batch_client(settings: BatchSettings | None = None, **client_kwargs: Any) -> Any:
    """The `azure.batch.BatchClient` for ``[batch]`` settings (see `connect`)."""
    return connect(settings, **client_kwargs).client


def auth_error_message(endpoint: str, detail: str) -> str:
    """The one-line error for rejected or missing Batch credentials."""
    return (
        f"[batch] cannot authenticate to {endpoint} ({detail}); export {ACCOUNT_ENV} and "
        f"{KEY_ENV} for SharedKey, or sign in for Entra ID (az login, or "
        "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET)"
    )
