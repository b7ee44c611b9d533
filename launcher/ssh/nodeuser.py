"""The node user the launcher creates for an SSH session: key-only, expiring, not admin.

Batch creates the account on the node (``POST /pools/P/nodes/N/users``); this module only
decides what to ask for, so that every caller asks for the same safe thing: a random
``bl-`` name (no clash with a user's own accounts, easy to spot and clean up), an expiry
(Batch's own default is one day, but we send it explicitly so the CLI can show it),
``isAdmin`` only when asked, the public key, and never a password.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from launcher.errors import UserError

DEFAULT_EXPIRY = timedelta(days=1)
USER_PREFIX = "bl-"
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # a portable Linux user name


@dataclass(frozen=True)
class NodeUserPlan:
    """What to send to Batch's create-node-user call."""

    name: str
    expiry_time: datetime
    is_admin: bool
    ssh_public_key: str

    def to_rest(self) -> dict[str, Any]:
        """The REST body (``BatchNodeUserCreateOptions`` on the wire); no password field."""
        return {
            "name": self.name,
            "isAdmin": self.is_admin,
            "expiryTime": self.expiry_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sshPublicKey": self.ssh_public_key,
        }

    def to_sdk(self) -> Any:
        """An ``azure.batch.models.BatchNodeUserCreateOptions`` for ``create_node_user``."""
        from azure.batch import models

        return models.BatchNodeUserCreateOptions(
            name=self.name,
            is_admin=self.is_admin,
            expiry_time=self.expiry_time,
            ssh_public_key=self.ssh_public_key,
        )


def plan_node_user(
    ssh_public_key: str,
    *,
    name: str | None = None,
    expiry: timedelta = DEFAULT_EXPIRY,
    is_admin: bool = False,
    now: datetime | None = None,
) -> NodeUserPlan:
    """The node-user spec for one session: ``bl-<8 hex>`` unless `name` is given."""
    if not ssh_public_key.startswith("ssh-") or len(ssh_public_key.split()) < 2:
        raise UserError(
            "ssh public key must be in OpenSSH format ('ssh-ed25519 AAAA...'); "
            "use launcher.ssh.ensure_key_pair()"
        )
    user = name if name is not None else USER_PREFIX + secrets.token_hex(4)
    if not _NAME.match(user):
        raise UserError(
            f"node user name {user!r} is not valid: use lowercase letters, digits, '-', '_' "
            "(at most 32 characters, starting with a letter or '_')"
        )
    if expiry <= timedelta(0):
        raise UserError(f"node user expiry must be in the future, got {expiry}")
    start = now if now is not None else datetime.now(UTC)
    return NodeUserPlan(
        name=user,
        expiry_time=start + expiry,
        is_admin=is_admin,
        ssh_public_key=ssh_public_key,
    )
