"""Host keys remembered on first use, per pool/node id *and* address, in the tool's own file.

OpenSSH's known_hosts is keyed by address only. Batch nodes are reached at addresses that
get reused (a NAT port on a pool's load balancer, a port on loopback for the emulator), so
an address alone would make a new node look like a changed key, or worse, let one node
vouch for another. Our file (``ssh_dir()/known_hosts``) therefore has one entry per line::

    POOL/NODE [HOST]:PORT KEYTYPE BASE64

and a key is trusted for a connection only when both the host id and the address match.
A different key for a known (host id, address) is refused with a message that says how to
forget the old one. Recording on first use is a paramiko `MissingHostKeyPolicy`.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from launcher import paths
from launcher.errors import UserError
from launcher.ssh.keys import private_dir

_HOST_ID = re.compile(r"^[^\s/]+/[^\s/]+$")
_HEADER = (
    "# batchlaunch known hosts: POOL/NODE [HOST]:PORT KEYTYPE BASE64 (delete a line to forget)\n"
)


def address_name(host: str, port: int) -> str:
    """The address as paramiko and OpenSSH write it: ``host`` for port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def check_host_id(host_id: str) -> str:
    """Host ids are ``POOL/NODE`` without whitespace (they are fields of a line)."""
    if not _HOST_ID.match(host_id):
        raise UserError(f"ssh host id {host_id!r} must look like POOL/NODE (no spaces)")
    return host_id


@dataclass(frozen=True)
class Entry:
    line: int  # 1-based line number in the file
    host_id: str
    address: str
    key: paramiko.PKey


class HostKeyChanged(UserError):
    """A node offered a key other than the one remembered for it."""


class HostKeyStore:
    """The known_hosts file of the tool (default ``ssh_dir()/known_hosts``)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else paths.ssh_dir() / "known_hosts"
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for n, raw in enumerate(text.splitlines(), start=1):
            fields = raw.split()
            if len(fields) < 4 or raw.lstrip().startswith("#"):
                continue
            try:
                key = paramiko.PKey.from_type_string(fields[2], base64.b64decode(fields[3]))
            except Exception:  # a corrupt line must not lock the user out of every node
                continue
            out.append(Entry(n, fields[0], fields[1], key))
        return out

    def lookup(self, host_id: str, address: str) -> list[Entry]:
        """Entries trusted for this node at this address."""
        return [e for e in self.entries() if e.host_id == host_id and e.address == address]

    # -- writing -----------------------------------------------------------------------
    def add(self, host_id: str, address: str, key: paramiko.PKey) -> None:
        """Remember `key`; refuses (HostKeyChanged) if a different key was remembered."""
        check_host_id(host_id)
        with self._locked():
            known = self.lookup(host_id, address)
            if any(_same(e.key, key) for e in known):
                return
            if known:
                raise self.changed_error(host_id, address, key, known[0])
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                if new:
                    f.write(_HEADER)
                f.write(f"{host_id} {address} {key.get_name()} {key.get_base64()}\n")

    def forget(self, host_id: str | None = None, *, pool: str | None = None) -> int:
        """Drop the entries of one node (any address) or of a whole pool; returns how many.

        The launcher should call ``forget(pool=ID)`` when it deletes a pool, so a pool
        re-created under the same id starts fresh.
        """
        if (host_id is None) == (pool is None):
            raise ValueError("give exactly one of host_id or pool")

        def dropped(e: Entry) -> bool:
            return e.host_id == host_id if host_id is not None else e.host_id.startswith(f"{pool}/")

        with self._locked():
            drop = {e.line for e in self.entries() if dropped(e)}
            if not drop:
                return 0
            lines = self.path.read_text().splitlines(keepends=True)
            kept = "".join(line for n, line in enumerate(lines, start=1) if n not in drop)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(kept)
            os.replace(tmp, self.path)
            return len(drop)

    def changed_error(
        self, host_id: str, address: str, offered: paramiko.PKey, known: Entry | None
    ) -> HostKeyChanged:
        node = host_id.split("/", 1)[1]
        remembered = f"{known.key.get_name()} {known.key.fingerprint}" if known else "another key"
        where = f"delete line {known.line} of {self.path}" if known else f"edit {self.path}"
        return HostKeyChanged(
            f"ssh: host key of node {host_id} at {address} has CHANGED (remembered "
            f"{remembered}, offered {offered.get_name()} {offered.fingerprint}); refusing to "
            f"connect. If the node was re-created or reimaged, forget the old key with "
            f"`batchlaunch ssh PARAMS --node {node} --forget-host-key` or {where}"
        )

    def policy(self, host_id: str) -> paramiko.MissingHostKeyPolicy:
        """Trust-on-first-use for `host_id`: record the key the node offers."""
        return _RememberPolicy(self, check_host_id(host_id))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across threads and processes (a lock file beside ours)."""
        private_dir(self.path.parent)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with self._lock:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)


class _RememberPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, store: HostKeyStore, host_id: str) -> None:
        self.store = store
        self.host_id = host_id

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.store.add(self.host_id, hostname, key)


def _same(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()
