"""The emulator's SSH endpoint itself, with launcher.ssh.Connection and plain paramiko:
who may log in (node users' keys only; expired, deleted, wrong-key and password logins
refused), what a session sees (the node's environment and directory; SFTP confined to the
node), and that no private key material ever reaches the emulator."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paramiko
import pytest

from emulator.sshd import HOST_KEY_FILE
from launcher.errors import UserError
from launcher.ssh import Connection, KeyPair, ensure_key_pair, plan_node_user
from tests.ssh_emulator.conftest import Cluster, write_params

pytestmark = pytest.mark.emulator


class User:
    """A node user created through the Batch API, and Connections as it."""

    def __init__(self, cluster: Cluster, node: str, key: KeyPair, **plan: Any) -> None:
        self.cluster, self.node, self.key = cluster, node, key
        self.plan = plan_node_user(key.public_openssh, **plan)
        cluster.client.create_node_user(cluster.pool_id, node, self.plan.to_sdk())
        login = cluster.client.get_node_remote_login_settings(cluster.pool_id, node)
        self.host, self.port = login.remote_login_ip_address, int(login.remote_login_port)

    def connect(self, key: KeyPair | None = None) -> Connection:
        return Connection(
            self.host,
            self.port,
            self.plan.name,
            (key or self.key).private_path,
            host_id=f"{self.cluster.pool_id}/{self.node}",
            connect_timeout=5,
        )

    def delete(self) -> None:
        self.cluster.client.delete_node_user(self.cluster.pool_id, self.node, self.plan.name)


@pytest.fixture
def user(cluster: Cluster) -> Iterator[User]:
    u = User(cluster, cluster.node_ids[0], ensure_key_pair(cluster.pool_id))
    yield u
    with contextlib.suppress(Exception):  # unless the test deleted it
        u.delete()


def test_remote_login_settings_point_at_the_endpoint(cluster: Cluster, user: User) -> None:
    assert user.host == "127.0.0.1"
    with socket.create_connection((user.host, user.port), timeout=5) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-")


def test_a_silent_client_does_not_hold_up_others(user: User) -> None:
    silent = socket.create_connection((user.host, user.port), timeout=5)
    garbage = socket.create_connection((user.host, user.port), timeout=5)
    try:
        garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
        started = time.monotonic()
        with user.connect() as conn:
            assert conn.run("echo ok").stdout == b"ok\n"
        assert time.monotonic() - started < 5
    finally:
        silent.close()
        garbage.close()


def test_session_runs_in_the_node(cluster: Cluster, user: User) -> None:
    with user.connect() as conn:
        r = conn.run('echo "$AZ_BATCH_NODE_ID $AZ_BATCH_POOL_ID $USER"; pwd; echo e >&2; exit 4')
        assert r.exit_code == 4 and r.stderr == b"e\n"
        ids, cwd = r.stdout.decode().splitlines()
        assert ids == f"{user.node} {cluster.pool_id} {user.plan.name}"
        assert cwd.endswith(f"/nodes/{cluster.pool_id}/{user.node}")
        assert conn.run("cat", stdin=b"piped input").stdout == b"piped input"
        assert conn.run("kill -9 $$").exit_code == -1  # killed by a signal: no exit status
        # SFTP: "/" is the node root, and the node root's real path names the same files
        assert conn.sftp.normalize(".") == "/"
        assert {"shared", "startup", "workitems"} <= set(conn.sftp.listdir("/"))
        assert conn.sftp.listdir("/../../..") == conn.sftp.listdir("/")
        assert conn.sftp.listdir(f"{cwd}/startup") == conn.sftp.listdir("/startup")


def test_sftp_cannot_leave_the_node(cluster: Cluster, user: User, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    with user.connect() as conn:
        assert conn.run(f"ln -sfn {outside} shared/escape").exit_code == 0
        with pytest.raises(PermissionError):
            conn.sftp.listdir("/shared/escape")
        with pytest.raises(PermissionError):
            conn.sftp.open("/shared/escape/secret.txt").read()
        with pytest.raises(PermissionError):
            conn.sftp.readlink("/shared/escape")
        # a link made over SFTP to an absolute path points inside the node
        conn.sftp.symlink(str(outside), "/shared/escape2")
        root = conn.run("pwd").stdout.decode().strip()
        target = conn.run("realpath -m shared/escape2").stdout.decode().strip()
        assert target == f"{root}{outside}"
        with conn.sftp.open("/../../shared/inside.txt", "w") as f:  # clamped at the root
            f.write(b"kept in\n")
        assert conn.run("cat shared/inside.txt").stdout == b"kept in\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_expired_user_refused_until_renewed(cluster: Cluster) -> None:
    from azure.batch import models

    past = datetime.now(UTC) - timedelta(hours=2)
    key = ensure_key_pair(cluster.pool_id)
    u = User(cluster, cluster.node_ids[1], key, now=past, expiry=timedelta(minutes=1))
    try:
        assert u.plan.expiry_time < datetime.now(UTC)
        with pytest.raises(UserError, match="refused user"), u.connect() as conn:
            conn.run("true")
        renewed = datetime.now(UTC) + timedelta(hours=1)
        cluster.client.replace_node_user(
            cluster.pool_id,
            u.node,
            u.plan.name,
            models.BatchNodeUserReplaceOptions(
                expiry_time=renewed, ssh_public_key=u.key.public_openssh
            ),
        )
        with u.connect() as conn:  # the same user and key, now valid: it was the expiry
            assert conn.run("true").exit_code == 0
    finally:
        u.delete()


def test_deleted_user_and_wrong_key_refused(cluster: Cluster, user: User) -> None:
    other = ensure_key_pair(f"{cluster.pool_id}-other")
    with pytest.raises(UserError, match="refused user"), user.connect(other) as conn:
        conn.run("true")
    with user.connect() as conn:
        assert conn.run("true").exit_code == 0
    user.delete()
    with pytest.raises(UserError, match="refused user"), user.connect() as conn:
        conn.run("true")


def test_password_logins_refused(user: User) -> None:
    sock = socket.create_connection((user.host, user.port), timeout=5)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.BadAuthenticationType) as info:
            transport.auth_password(user.plan.name, "anything")
        assert info.value.allowed_types == ["publickey"]
    finally:
        transport.close()


# ------------------------------------------------------------------ no private key leaves
class RecordingProxy:
    """A TCP forwarder in front of the emulator's HTTP port that keeps every byte the
    emulator receives (the CLI talks to the proxy's endpoint)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.received.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def _secret_needles(key: KeyPair) -> list[bytes]:
    """The private seed raw, as hex, and base64-encoded at each of the three alignments it
    could have inside a longer base64 text (the PEM body also holds the public key, which
    is sent on purpose, so its chunks are no evidence)."""
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_ssh_private_key(key.private_path.read_bytes(), password=None)
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    aligned = [base64.b64encode(b"\0" * k + seed)[4:-4] for k in range(3)]
    pem = key.private_path.read_text().splitlines()
    body = "".join(line for line in pem if "-----" not in line).encode()
    assert any(n in body for n in aligned)  # the needles do find the seed in a key file
    return [seed, seed.hex().encode(), *aligned, key.private_path.read_bytes(), b"PRIVATE KEY"]


def test_no_private_key_reaches_the_emulator(cluster: Cluster, tmp_path: Path) -> None:
    host, port = cluster.info.endpoint.removeprefix("http://").rsplit(":", 1)
    proxy = RecordingProxy((host, int(port)))
    try:
        params = write_params(
            tmp_path / "proxied.toml",
            type(
                "Info",
                (),
                {"endpoint": f"http://127.0.0.1:{proxy.port}", "account": cluster.info.account},
            ),
            cluster.pool_id,
        )
        upload = tmp_path / "data.txt"
        upload.write_text("payload\n")
        for args in (
            ["--all-nodes", "--", "echo ok"],
            ["--node", cluster.node_ids[0], "--put", str(upload), "/shared/data.txt"],
        ):
            done = cluster.cli("ssh", str(params), *args)
            assert done.returncode == 0, done.stderr
    finally:
        proxy.close()
    wire = b"".join(proxy.received)
    key = ensure_key_pair(cluster.pool_id)
    assert wire.count(b"POST /pools/") >= 3  # three node users were created through it
    assert key.public_openssh.split()[1].encode() in wire  # the search sees key material
    # everything the emulator keeps (state, node directories), but its own host key
    stored = b"".join(
        p.read_bytes()
        for p in Path(cluster.info.state_dir).rglob("*")
        if p.is_file() and p.name != HOST_KEY_FILE
    )
    for needle in _secret_needles(key):
        assert needle not in wire
        assert needle not in stored
