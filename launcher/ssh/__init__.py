"""SSH access to Batch nodes: keys, node users, host keys, `Connection`, many nodes at once.

    from launcher.ssh import Connection, ensure_key_pair, plan_node_user

The modules: `keys` (the client's ed25519 key pairs), `nodeuser` (what node user to ask
Batch for), `hostkeys` (trust on first use per pool/node), `connection` (commands and
files over paramiko), `shell` (the interactive pty), `parallel` (``--all-nodes``),
`access` (node users + Connections for a session, through the azure-batch SDK).
"""

from __future__ import annotations

from launcher.ssh.access import NodeAccess
from launcher.ssh.connection import CommandTimeout, Connection, Result, with_env
from launcher.ssh.hostkeys import HostKeyChanged, HostKeyStore, address_name
from launcher.ssh.keys import KeyPair, ensure_key_pair, key_path, load_key_pair, remove_key_pair
from launcher.ssh.nodeuser import DEFAULT_EXPIRY, NodeUserPlan, plan_node_user
from launcher.ssh.parallel import LinePrefixer, run_on_all

__all__ = [
    "DEFAULT_EXPIRY",
    "CommandTimeout",
    "Connection",
    "HostKeyChanged",
    "HostKeyStore",
    "KeyPair",
    "LinePrefixer",
    "NodeAccess",
    "NodeUserPlan",
    "Result",
    "address_name",
    "ensure_key_pair",
    "key_path",
    "load_key_pair",
    "plan_node_user",
    "remove_key_pair",
    "run_on_all",
    "with_env",
]
