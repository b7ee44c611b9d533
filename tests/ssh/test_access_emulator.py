"""NodeAccess against the emulator through the real azure-batch SDK: node users created
in parallel (one per node), remote login settings turned into Connections, users deleted
at the end unless kept, and no private key material sent. Only HTTP is involved here.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import UserError
from launcher.ssh import ensure_key_pair
from launcher.ssh.access import NodeAccess
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator

POOL = "sshpool"


@pytest.fixture(scope="module")
def batch(emulator: Any, batch_client: Any) -> Iterator[tuple[Any, Any]]:
    """The shared emulator with a 3-node pool of our own: (client, EmulatorInfo)."""
    from azure.batch import models

    image = models.BatchVmImageReference(
        publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
    )
    batch_client.create_pool(
        models.BatchPoolCreateOptions(
            id=POOL,
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=3,
            virtual_machine_configuration=models.VirtualMachineConfiguration(
                image_reference=image, node_agent_sku_id="batch.node.ubuntu 22.04"
            ),
        )
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = list(batch_client.list_nodes(POOL))
        if len(nodes) == 3 and all(n.state == "idle" for n in nodes):
            break
        time.sleep(0.2)
    else:
        pytest.fail("emulator pool never reached 3 idle nodes")
    yield batch_client, emulator
    batch_client.begin_delete_pool(POOL, polling_interval=0.1).result()


def _node_ids(client: Any) -> list[str]:
    return sorted(n.id for n in client.list_nodes(POOL))


def _user_exists(client: Any, node_id: str, name: str) -> bool:
    from azure.batch import models
    from azure.core.exceptions import ResourceNotFoundError

    try:  # replacing a user is the only way the API tells whether it exists
        client.replace_node_user(
            POOL, node_id, name, models.BatchNodeUserReplaceOptions(ssh_public_key="")
        )
    except ResourceNotFoundError:
        return False
    return True


def test_users_created_per_node_and_deleted_at_the_end(
    batch: tuple[Any, Any], bl_home: Path
) -> None:
    client, _ = batch
    nodes = _node_ids(client)
    with NodeAccess(client, POOL, nodes) as access:
        assert set(access.connections) == set(nodes)
        names = {access.users[n].name for n in nodes}
        assert len(names) == 3  # one distinct user per node
        for node_id, conn in access.connections.items():
            login = client.get_node_remote_login_settings(POOL, node_id)
            assert (conn.host, conn.port) == (
                login.remote_login_ip_address,
                login.remote_login_port,
            )
            assert conn.host_id == f"{POOL}/{node_id}"
            assert conn.user == access.users[node_id].name
            assert conn.key_path == ensure_key_pair(POOL).private_path
            assert not conn.is_open  # nothing connected yet
        created = dict(access.users)
    assert access.cleanup_errors == []
    for node_id, plan in created.items():
        assert not _user_exists(client, node_id, plan.name)


def test_keep_user_leaves_them(batch: tuple[Any, Any], bl_home: Path) -> None:
    client, _ = batch
    node = _node_ids(client)[0]
    with NodeAccess(client, POOL, [node], keep_user=True, is_admin=True) as access:
        name = access.users[node].name
    assert _user_exists(client, node, name)
    client.delete_node_user(POOL, node, name)


def test_unknown_node_is_a_user_error_and_rolls_back(batch: tuple[Any, Any], bl_home: Path) -> None:
    client, _ = batch
    good = _node_ids(client)[:2]
    access = NodeAccess(client, POOL, [*good, "tvm-does-not-exist"])
    with pytest.raises(UserError, match=r"tvm-does-not-exist: not found in pool sshpool"):
        access.open()
    assert access.users == {}  # the users made on the good nodes were deleted again


def test_no_private_key_material_reaches_the_emulator(
    batch: tuple[Any, Any], bl_home: Path
) -> None:
    """Record every request the SDK sends for a session and search it for the secret."""
    from cryptography.hazmat.primitives import serialization

    client, info = batch
    sent: list[bytes] = []

    def record(request: Any) -> None:
        http = request.http_request
        head = f"{http.method} {http.url}\n" + "".join(
            f"{k}: {v}\n" for k, v in http.headers.items()
        )
        body = http.body if isinstance(http.body, bytes) else str(http.body or "").encode()
        sent.append(head.encode() + body)

    recording = make_client(info, raw_request_hook=record)
    with NodeAccess(recording, POOL, _node_ids(client)) as access:
        key = access.key
    assert key is not None
    wire = b"\n".join(sent)
    assert wire.count(b"POST ") == 3 and wire.count(b"DELETE ") == 3
    assert key.public_openssh.split()[1].encode() in wire  # the search does see key material
    private = serialization.load_ssh_private_key(key.private_path.read_bytes(), password=None)
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem_body = "".join(
        line for line in key.private_path.read_text().splitlines() if "-----" not in line
    )
    for needle in [
        seed,
        seed.hex().encode(),
        base64.b64encode(seed).rstrip(b"="),
        *(pem_body[i : i + 32].encode() for i in range(0, len(pem_body) - 32, 32)),
        b"PRIVATE KEY",
    ]:
        assert needle not in wire
