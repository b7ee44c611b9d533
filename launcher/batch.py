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


def connect(
    settings: BatchSettings | None = None,
    env: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> BatchConnection:
    """Resolve endpoint and credentials and build the client (no request is sent).

    ``client_kwargs`` go to `BatchClient` (azure-core options: hooks, per-call policies).
    """
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    env = os.environ if env is None else env
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
        client = BatchClient(
            info.endpoint, AzureNamedKeyCredential(info.account, info.key), **client_kwargs
        )
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
        client = BatchClient(endpoint, AzureNamedKeyCredential(account, key), **client_kwargs)
        return BatchConnection(client, endpoint, account, interval, loopback)
    if scheme != "https":
        raise UserError(
            f"[batch] endpoint: {endpoint} is plain http, where Entra ID tokens are refused; "
            f"export {ACCOUNT_ENV} and {KEY_ENV} for SharedKey, or use https"
        )
    from azure.identity import DefaultAzureCredential

    client = BatchClient(endpoint, DefaultAzureCredential(), **client_kwargs)
    return BatchConnection(client, endpoint, account, interval, False)


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
