"""Blob storage for inputs, outputs and logs: a local directory store, Azurite or Azure.

Every store hands the Batch service URLs, never keys: SAS URLs with the least permission
(read for inputs, create+write for outputs) and an expiry, signed with the account key for
connection strings (Azurite, Azure with a key) or with a user-delegation key under Entra ID.
The local store hands out ``file://`` URLs, an emulator-only extension (see DESIGN.md).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from launcher import paths
from launcher.errors import UserError

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"

CAS_PREFIX = "cas"
_AZURE_BLOB_URL = re.compile(r"^https://([a-z0-9]{3,24})\.blob\.core\.windows\.net/?$")
_CONTAINER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
# Clock skew allowance: a SAS valid "from now" fails on a node whose clock runs behind.
_SAS_START_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class BlobInfo:
    """One blob as listed: its name and size in bytes."""

    name: str
    size: int


def check_container_name(container: str) -> str:
    """Container names follow Azure's rules everywhere so a local run ports to Azure."""
    if not _CONTAINER_NAME.match(container):
        raise UserError(
            f"[storage] container: {container!r} is not a valid container name; "
            "use 3-63 lowercase letters, digits and single hyphens"
        )
    return container


def check_blob_name(name: str) -> str:
    """Reject names that could escape a directory when mirrored to disk."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or any(p in ("..", ".") for p in parts):
        raise UserError(f"blob name {name!r}: must be a relative path without '.' or '..' parts")
    return name


def content_address(data: bytes, basename: str) -> str:
    """``cas/<sha256>/<basename>``: same bytes, same name, so unchanged files upload once."""
    return f"{CAS_PREFIX}/{hashlib.sha256(data).hexdigest()}/{check_blob_name(basename)}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Store(ABC):
    """What the launcher needs from blob storage; one container per store."""

    container: str

    @abstractmethod
    def ensure_container(self) -> None:
        """Create the container if it does not exist."""

    @abstractmethod
    def upload_bytes(self, data: bytes, blob_name: str) -> str:
        """Write ``data`` to ``blob_name`` (overwriting); return the blob name."""

    @abstractmethod
    def upload_file(self, path: Path, blob_name: str) -> str:
        """Write the file at ``path`` to ``blob_name`` (overwriting); return the blob name."""

    @abstractmethod
    def exists(self, blob_name: str) -> bool:
        """One metadata request: does the blob exist?"""

    @abstractmethod
    def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        """Blobs whose names start with ``prefix``, with sizes."""

    @abstractmethod
    def download(self, blob_name: str, dest: Path) -> Path:
        """Copy one blob to ``dest`` (parents created); return ``dest``."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix`` (a retried task's old outputs); how many."""

    @abstractmethod
    def read_url(self, blob_name: str, expiry: timedelta) -> str:
        """A URL a node can GET the blob from: read-only, expiring after ``expiry``."""

    @abstractmethod
    def container_read_url(self, expiry: timedelta) -> str:
        """A container URL with read+list only (resource files ``storageContainerUrl``)."""

    @abstractmethod
    def container_write_url(self, expiry: timedelta) -> str:
        """A container URL with create+write only (OutputFiles ``containerUrl``)."""

    @abstractmethod
    def mount_credentials(self, expiry: timedelta) -> tuple[str, str]:
        """(account name, SAS token) for a blobfuse mount of this store's account."""

    @abstractmethod
    def for_container(self, container: str) -> Store:
        """The same account, another container (mounts name other containers)."""

    # Shared behaviour ---------------------------------------------------------------

    def list(self, prefix: str = "") -> list[str]:
        """Blob names under ``prefix``, sorted."""
        return sorted(b.name for b in self.list_blobs(prefix))

    def put_content_addressed(self, source: Path | bytes, name: str | None = None) -> str:
        """Upload under ``cas/<sha256>/<basename>`` unless that blob already exists.

        The existence check is one HEAD request; the upload is skipped when it answers yes,
        which is what makes re-running a run with unchanged inputs cheap.
        """
        if isinstance(source, bytes):
            if not name:
                raise ValueError("put_content_addressed(bytes) needs a name")
            blob = f"{CAS_PREFIX}/{hashlib.sha256(source).hexdigest()}/{check_blob_name(name)}"
            if not self.exists(blob):
                self.upload_bytes(source, blob)
            return blob
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: resource file not found; check the path")
        blob = f"{CAS_PREFIX}/{_file_sha256(path)}/{check_blob_name(name or path.name)}"
        if not self.exists(blob):
            self.upload_file(path, blob)
        return blob

    def download_prefix(
        self,
        prefix: str,
        dest_dir: Path,
        *,
        skip_existing: bool = True,
        max_workers: int = 8,
    ) -> builtins.list[Path]:
        """Mirror every blob under ``prefix`` into ``dest_dir`` (names relative to prefix).

        Files already on disk with the blob's size are not fetched again (resumed collects).
        Returns the paths actually downloaded.
        """
        dest_dir = Path(dest_dir)
        todo: list[tuple[str, Path]] = []
        for blob in self.list_blobs(prefix):
            rel = blob.name[len(prefix) :].lstrip("/")
            if not rel:
                rel = PurePosixPath(blob.name).name
            target = dest_dir / check_blob_name(rel)
            if skip_existing and target.is_file() and target.stat().st_size == blob.size:
                continue
            todo.append((blob.name, target))
        if not todo:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(todo)))) as pool:
            return list(pool.map(lambda item: self.download(*item), todo))


class LocalStore(Store):
    """A directory per container under ``root``; URLs are ``file://`` paths for the emulator."""

    def __init__(self, container: str, root: Path | None = None) -> None:
        self.container = check_container_name(container)
        self.root = (Path(root) if root is not None else paths.local_store_dir()).resolve()

    @property
    def container_dir(self) -> Path:
        return self.root / self.container

    def _path(self, blob_name: str) -> Path:
        return self.container_dir / check_blob_name(blob_name)

    def ensure_container(self) -> None:
        self.container_dir.mkdir(parents=True, exist_ok=True)

    def upload_bytes(self, data: bytes, blob_name: str) -> str:
        target = self._path(blob_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: a concurrent reader never sees half a blob
        return blob_name

    def upload_file(self, path: Path, blob_name: str) -> str:
        target = self._path(blob_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        return blob_name

    def exists(self, blob_name: str) -> bool:
        return self._path(blob_name).is_file()

    def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        base = self.container_dir
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if not path.is_file() or (path.name.startswith(".") and path.name.endswith(".tmp")):
                continue
            name = path.relative_to(base).as_posix()
            if name.startswith(prefix):
                found.append(BlobInfo(name, path.stat().st_size))
        return sorted(found, key=lambda b: b.name)

    def delete_prefix(self, prefix: str) -> int:
        blobs = self.list_blobs(check_blob_name(prefix))
        for blob in blobs:
            self._path(blob.name).unlink(missing_ok=True)
        return len(blobs)

    def download(self, blob_name: str, dest: Path) -> Path:
        source = self._path(blob_name)
        if not source.is_file():
            raise UserError(f"{self.container}/{blob_name}: no such blob in the local store")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest

    def read_url(self, blob_name: str, expiry: timedelta) -> str:
        return self._path(blob_name).as_uri()

    def container_read_url(self, expiry: timedelta) -> str:
        return self.container_dir.as_uri()

    def container_write_url(self, expiry: timedelta) -> str:
        return self.container_dir.as_uri()

    def mount_credentials(self, expiry: timedelta) -> tuple[str, str]:
        # The emulator mounts local containers from the store directory: no secret exists.
        return ("local", "")

    def for_container(self, container: str) -> LocalStore:
        return LocalStore(container, self.root)


class BlobStore(Store):
    """An Azure Blob Storage container (Azure or Azurite) through azure-storage-blob."""

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        **client_kwargs: Any,
    ) -> None:
        """``client_kwargs`` go to the SDK client (transport, per-call hooks, retries)."""
        from azure.storage.blob import BlobServiceClient

        self.container = check_container_name(container)
        self._account_key: str | None = None
        if connection_string:
            fields = _parse_connection_string(connection_string)
            self._account_key = fields.get("AccountKey")
            self.service = BlobServiceClient.from_connection_string(
                connection_string, **client_kwargs
            )
        elif account_url:
            self.service = BlobServiceClient(account_url, credential=credential, **client_kwargs)
        else:
            raise ValueError("BlobStore needs a connection string or an account URL")
        self.account_name: str = self.service.account_name or ""
        self.client = self.service.get_container_client(self.container)
        self._udk: Any = None
        self._udk_expiry: datetime | None = None

    def for_container(self, container: str) -> BlobStore:
        clone = object.__new__(BlobStore)
        clone.__dict__.update(self.__dict__)
        clone.container = check_container_name(container)
        clone.client = self.service.get_container_client(clone.container)
        return clone

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            yield
        except ClientAuthenticationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"[storage] url: cannot authenticate to storage account {self.account_name!r} "
                f"({first}); set {CONNECTION_STRING_ENV}, or sign in for Entra ID "
                "(az login, or AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET)"
            ) from None

    def ensure_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with self._errors(), contextlib.suppress(ResourceExistsError):
            self.client.create_container()

    def upload_bytes(self, data: bytes, blob_name: str) -> str:
        with self._errors():
            self.client.upload_blob(check_blob_name(blob_name), data, overwrite=True)
        return blob_name

    def upload_file(self, path: Path, blob_name: str) -> str:
        with self._errors(), Path(path).open("rb") as fh:
            self.client.upload_blob(check_blob_name(blob_name), fh, overwrite=True)
        return blob_name

    def exists(self, blob_name: str) -> bool:
        with self._errors():
            return bool(self.client.get_blob_client(check_blob_name(blob_name)).exists())

    def delete_prefix(self, prefix: str) -> int:
        names = [b.name for b in self.list_blobs(check_blob_name(prefix))]
        with self._errors():
            for start in range(0, len(names), 256):  # the batch API's limit per request
                self.client.delete_blobs(*names[start : start + 256])
        return len(names)

    def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        from azure.core.exceptions import ResourceNotFoundError

        with self._errors():
            try:
                return [
                    BlobInfo(b.name, int(b.size or 0))
                    for b in self.client.list_blobs(name_starts_with=prefix or None)
                ]
            except ResourceNotFoundError:
                return []

    def download(self, blob_name: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        with self._errors(), tmp.open("wb") as fh:
            self.client.download_blob(check_blob_name(blob_name)).readinto(fh)
        tmp.replace(dest)
        return dest

    # SAS ------------------------------------------------------------------------------

    def _signing(self, expiry: timedelta) -> tuple[datetime, datetime, dict[str, Any]]:
        """Start, expiry and the key argument: the account key, else a user-delegation key."""
        now = datetime.now(UTC)
        start, end = now - _SAS_START_SKEW, now + expiry
        if self._account_key:
            return start, end, {"account_key": self._account_key}
        # A user-delegation key is valid for at most 7 days; reuse one while it covers `end`.
        if self._udk is None or self._udk_expiry is None or self._udk_expiry < end:
            key_end = min(now + timedelta(days=7), max(end, now + timedelta(hours=1)))
            if key_end < end:
                raise UserError(
                    f"SAS expiry {expiry} exceeds the 7-day limit of user-delegation SAS; "
                    f"shorten the job's time limit or set {CONNECTION_STRING_ENV}"
                )
            with self._errors():
                self._udk = self.service.get_user_delegation_key(start, key_end)
            self._udk_expiry = key_end
        return start, end, {"user_delegation_key": self._udk}

    def read_url(self, blob_name: str, expiry: timedelta) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        start, end, key = self._signing(expiry)
        sas = generate_blob_sas(
            self.account_name,
            self.container,
            check_blob_name(blob_name),
            permission=BlobSasPermissions(read=True),
            expiry=end,
            start=start,
            **key,
        )
        return f"{self.client.get_blob_client(blob_name).url}?{sas}"

    def _container_sas(self, expiry: timedelta, **perms: bool) -> str:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        start, end, key = self._signing(expiry)
        return generate_container_sas(
            self.account_name,
            self.container,
            permission=ContainerSasPermissions(**perms),
            expiry=end,
            start=start,
            **key,
        )

    def container_read_url(self, expiry: timedelta) -> str:
        return f"{self.client.url}?{self._container_sas(expiry, read=True, list=True)}"

    def container_write_url(self, expiry: timedelta) -> str:
        return f"{self.client.url}?{self._container_sas(expiry, create=True, write=True)}"

    def mount_credentials(self, expiry: timedelta) -> tuple[str, str]:
        # blobfuse needs to list, read and write (outputs written under the mount), not delete.
        sas = self._container_sas(expiry, read=True, list=True, write=True, create=True, add=True)
        return (self.account_name, sas)


def _parse_connection_string(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in value.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            fields[k.strip()] = v.strip()
    return fields


def open_store(url: str, container: str, env: Mapping[str, str] | None = None) -> Store:
    """The store for ``[storage] url``: "local", "azurite" or an Azure blob account URL."""
    env = os.environ if env is None else env
    check_container_name(container)
    if url == "local":
        return LocalStore(container)
    if url == "azurite":
        conn = env.get(CONNECTION_STRING_ENV)
        if not conn:
            from launcher.azurite import ensure_azurite

            conn = ensure_azurite(env)
        return BlobStore(container, connection_string=conn)
    match = _AZURE_BLOB_URL.match(url.strip())
    if match is None:
        raise UserError(
            f'[storage] url: {url!r} is not supported; use "local", "azurite" or '
            "https://ACCOUNT.blob.core.windows.net"
        )
    account = match.group(1)
    key_conn = env.get(CONNECTION_STRING_ENV)
    if key_conn:
        named = _parse_connection_string(key_conn).get("AccountName")
        if named and named != account:
            raise UserError(
                f"[storage] url: names account {account!r} but {CONNECTION_STRING_ENV} is for "
                f"{named!r}; make them agree"
            )
        return BlobStore(container, connection_string=key_conn)
    try:
        from launcher.batch import entra_credential

        credential = entra_credential(
            env, scope="https://storage.azure.com/.default", what="[storage] url"
        )
    except UserError:
        raise
    except Exception as exc:  # construction fails only on broken identity configuration
        raise UserError(
            f"[storage] url: no credentials for {account!r} ({exc}); set "
            f"{CONNECTION_STRING_ENV} or sign in for Entra ID (az login)"
        ) from None
    return BlobStore(
        container, account_url=f"https://{account}.blob.core.windows.net", credential=credential
    )
