"""Resource file downloads and output file uploads, as the Batch node agent does them.

Sources and destinations are Azure Blob URLs with a SAS (Azure or Azurite, via
azure-storage-blob) or, as an emulator-only extension for the local store, `file://` URLs:
`file:///DIR/CONTAINER/BLOB` for one file and `file:///DIR/CONTAINER` for a container.
These run on worker threads; they raise TransferError with a message for the task's failureInfo.
"""

from __future__ import annotations

import glob
import os
import shutil
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULT_FILE_MODE = 0o770
WILDCARDS = set("*?[")


class TransferError(Exception):
    """A file could not be fetched or uploaded; `code` is the Batch failureInfo code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _local_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def _safe_target(base: Path, relative: str) -> Path:
    if not relative:
        return base
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise TransferError(
            "ResourceFilePathInvalid",
            f"filePath {relative!r} must stay inside the working directory",
        )
    return base / pure


def _chmod(path: Path, mode: str | None) -> None:
    try:
        os.chmod(path, int(mode, 8) if mode else DEFAULT_FILE_MODE)
    except ValueError:
        raise TransferError(
            "ResourceFileModeInvalid", f"fileMode {mode!r} is not an octal mode"
        ) from None


def _fetch_http(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        raise TransferError(
            "ResourceFileDownloadFailed", f"downloading {_redact(url)}: {exc}"
        ) from None


def _redact(url: str) -> str:
    """A URL without its query (a SAS token must never reach a log)."""
    return url.split("?", 1)[0]


def download(resource_files: list[dict[str, Any]], wd: Path) -> list[str]:
    """Fetch every resource file into the working dir; returns one log line per file."""
    log: list[str] = []
    for rf in resource_files:
        mode = rf.get("fileMode")
        if rf.get("httpUrl"):
            url = rf["httpUrl"]
            name = rf.get("filePath") or unquote(PurePosixPath(urlparse(url).path).name)
            target = _safe_target(wd, name)
            if url.startswith("file://"):
                source = _local_path(url)
                if not source.is_file():
                    raise TransferError("ResourceFileDownloadFailed", f"no such file: {source}")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            else:
                _fetch_http(url, target)
            _chmod(target, mode)
            log.append(f"{_redact(url)} -> {target}")
        elif rf.get("storageContainerUrl"):
            url = rf["storageContainerUrl"]
            prefix = rf.get("blobPrefix") or ""
            base = _safe_target(wd, rf.get("filePath") or "")
            for name, fetch in _container_blobs(url, prefix):
                target = _safe_target(base, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                fetch(target)
                _chmod(target, mode)
                log.append(f"{_redact(url)}/{name} -> {target}")
        elif rf.get("autoStorageContainerName"):
            raise TransferError(
                "ResourceFileDownloadFailed",
                "autoStorageContainerName needs a linked storage account; the emulator has none",
            )
    return log


def _container_blobs(url: str, prefix: str) -> list[tuple[str, Any]]:
    if url.startswith("file://"):
        root = _local_path(url)
        if not root.is_dir():
            raise TransferError(
                "ResourceFileDownloadFailed", f"no such container directory: {root}"
            )
        out = []
        for path in sorted(root.rglob("*")):
            if path.is_file():
                name = path.relative_to(root).as_posix()
                if name.startswith(prefix):
                    out.append((name, lambda t, p=path: shutil.copyfile(p, t)))
        return out
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient

    try:
        container = ContainerClient.from_container_url(url)
        names = [b.name for b in container.list_blobs(name_starts_with=prefix or None)]
    except AzureError as exc:
        raise TransferError(
            "ResourceFileDownloadFailed", f"listing {_redact(url)}: {exc}"
        ) from None

    def fetcher(name: str) -> Any:
        def fetch(target: Path) -> None:
            try:
                with open(target, "wb") as out:
                    container.download_blob(name).readinto(out)
            except AzureError as exc:
                raise TransferError(
                    "ResourceFileDownloadFailed", f"downloading {name}: {exc}"
                ) from None

        return fetch

    return [(n, fetcher(n)) for n in names]


def match(pattern: str, wd: Path) -> list[tuple[Path, str]]:
    """Files matching a Batch filePattern relative to `wd`: (path, blob-relative name).

    `*` does not match dotfiles, `**` spans directories, `../std*.txt` reaches the task dir.
    A pattern without wildcards names one file; with wildcards, names are relative to the
    directory part before the first wildcard.
    """
    pattern = pattern.replace("\\", "/")
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts:
        if WILDCARDS & set(part):
            break
        fixed.append(part)
    has_wild = len(fixed) < len(parts)
    base = wd.joinpath(*fixed[:-1]) if not has_wild else wd.joinpath(*fixed)
    out: list[tuple[Path, str]] = []
    for hit in sorted(glob.glob(pattern, root_dir=wd, recursive=True)):
        path = wd / hit
        if not path.is_file():
            continue
        rel = os.path.relpath(path, base) if has_wild else path.name
        out.append((path, rel.replace(os.sep, "/")))
    return out


def upload(
    output_files: list[dict[str, Any]], wd: Path, succeeded: bool
) -> tuple[list[str], list[str]]:
    """Upload what the conditions select; returns (log lines, error lines)."""
    log: list[str] = []
    errors: list[str] = []
    for spec in output_files:
        condition = str(
            (spec.get("uploadOptions") or {}).get("uploadCondition", "taskcompletion")
        ).lower()
        if (condition == "tasksuccess" and not succeeded) or (
            condition == "taskfailure" and succeeded
        ):
            continue
        dest = (spec.get("destination") or {}).get("container") or {}
        url, prefix = dest.get("containerUrl", ""), dest.get("path") or ""
        pattern = spec.get("filePattern", "")
        hits = match(pattern, wd)
        has_wild = bool(WILDCARDS & set(pattern))
        for path, rel in hits:
            name = _blob_name(prefix, rel, has_wild)
            try:
                _put(url, name, path)
                log.append(f"{path} -> {_redact(url)}/{name}")
            except Exception as exc:
                errors.append(
                    f"{path} -> {_redact(url)}/{name}: {type(exc).__name__}: {_redact(str(exc))}"
                )
    return log, errors


def _blob_name(prefix: str, rel: str, has_wild: bool) -> str:
    """Batch: `path` names the blob for a single file, a virtual directory for wildcards."""
    if not has_wild:
        return prefix or rel
    return f"{prefix.rstrip('/')}/{rel}" if prefix else rel


def _put(url: str, name: str, path: Path) -> None:
    if url.startswith("file://"):
        root = _local_path(url)
        if not root.is_dir():
            raise FileNotFoundError(f"container directory {root} does not exist")
        target = root / PurePosixPath(name)
        if ".." in PurePosixPath(name).parts:
            raise ValueError(f"blob name {name!r} leaves the container")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return
    from azure.storage.blob import ContainerClient

    with open(path, "rb") as data:
        ContainerClient.from_container_url(url).upload_blob(name, data, overwrite=True)
