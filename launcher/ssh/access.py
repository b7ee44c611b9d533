"""Node users and Connections for one SSH session on some nodes of a pool.

Talks to Batch only through the azure-batch SDK client it is given
(``create_node_user``, ``get_node_remote_login_settings``, ``delete_node_user``), in
parallel across nodes. Each node gets its own random ``bl-`` user (all with the pool's
key): a name then identifies one node, which is what an SSH endpoint shared by many nodes
(the emulator's) needs to know where a login goes. The users are deleted when the session
ends unless `keep_user`; they expire anyway (default one day).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from launcher.errors import UserError
from launcher.ssh.connection import Connection
from launcher.ssh.hostkeys import HostKeyStore
from launcher.ssh.keys import KeyPair, ensure_key_pair
from launcher.ssh.nodeuser import DEFAULT_EXPIRY, NodeUserPlan, plan_node_user

T = TypeVar("T")


class NodeAccess:
    """``with NodeAccess(batch, pool, nodes) as access: access.connections[node].run(...)``"""

    def __init__(
        self,
        batch: Any,  # azure.batch.BatchClient
        pool_id: str,
        node_ids: Sequence[str],
        *,
        is_admin: bool = False,
        expiry: timedelta = DEFAULT_EXPIRY,
        keep_user: bool = False,
        max_workers: int = 8,
        connect_timeout: float = 15.0,
        auth_retry: float = 60.0,
        known_hosts: HostKeyStore | None = None,
        key: KeyPair | None = None,
    ) -> None:
        if not node_ids:
            raise UserError(f"pool {pool_id} has no nodes to connect to")
        self.batch = batch
        self.pool_id = pool_id
        self.node_ids = list(dict.fromkeys(node_ids))
        self.is_admin = is_admin
        self.expiry = expiry
        self.keep_user = keep_user
        self.max_workers = max_workers
        self.connect_timeout = connect_timeout
        self.auth_retry = auth_retry
        self.known_hosts = known_hosts if known_hosts is not None else HostKeyStore()
        self.key = key
        self.users: dict[str, NodeUserPlan] = {}
        self.connections: dict[str, Connection] = {}
        self.cleanup_errors: list[str] = []

    def __enter__(self) -> NodeAccess:
        self.open()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> dict[str, Connection]:
        """Create the node users and build (unopened) Connections; node id -> Connection."""
        key = self.key or ensure_key_pair(self.pool_id)
        self.key = key

        def one(node_id: str) -> Connection:
            plan = plan_node_user(key.public_openssh, expiry=self.expiry, is_admin=self.is_admin)
            self._call(
                f"creating node user on node {node_id}",
                lambda: self.batch.create_node_user(self.pool_id, node_id, plan.to_sdk()),
            )
            self.users[node_id] = plan
            login = self._call(
                f"reading remote login settings of node {node_id}",
                lambda: self.batch.get_node_remote_login_settings(self.pool_id, node_id),
            )
            return Connection(
                login.remote_login_ip_address,
                int(login.remote_login_port),
                plan.name,
                key.private_path,
                host_id=f"{self.pool_id}/{node_id}",
                known_hosts=self.known_hosts,
                connect_timeout=self.connect_timeout,
                auth_retry=self.auth_retry,  # the new user may not be on the node yet
            )

        try:
            self.connections = dict(zip(self.node_ids, self._parallel(one), strict=True))
        except BaseException:
            self.close()
            raise
        return self.connections

    def close(self) -> None:
        """Close the connections and delete the users (unless `keep_user`).

        A user that cannot be deleted is not an error of the session: its reason is kept
        in `cleanup_errors` for the CLI to print as a warning (it expires anyway)."""
        for conn in self.connections.values():
            conn.close()
        if self.keep_user or not self.users:
            return
        users, self.users = dict(self.users), {}

        def delete(node_id: str) -> None:
            try:
                self._call(
                    f"deleting node user {users[node_id].name} on node {node_id}",
                    lambda: self.batch.delete_node_user(self.pool_id, node_id, users[node_id].name),
                )
            except UserError as exc:
                self.cleanup_errors.append(str(exc))

        with ThreadPoolExecutor(max(1, min(self.max_workers, len(users)))) as pool:
            list(pool.map(delete, users))

    def _parallel(self, fn: Callable[[str], T]) -> list[T]:
        with ThreadPoolExecutor(max(1, min(self.max_workers, len(self.node_ids)))) as pool:
            return list(pool.map(fn, self.node_ids))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        try:
            return fn()
        except ResourceNotFoundError as exc:
            raise UserError(
                f"batch: {what}: not found in pool {self.pool_id} "
                f"({_code(exc)}; list nodes with `batchlaunch pool show PARAMS`)"
            ) from None
        except HttpResponseError as exc:
            raise UserError(f"batch: {what} in pool {self.pool_id} failed: {_code(exc)}") from None
        except AzureError as exc:
            raise UserError(f"batch: {what} in pool {self.pool_id} failed: {exc}") from None


def _code(exc: Any) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "reason", None) or "error"
    message = getattr(error, "message", None) or ""
    first = str(message).splitlines()[0] if message else ""
    return f"{code}: {first}" if first else str(code)
