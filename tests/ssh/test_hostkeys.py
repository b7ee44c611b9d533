"""Host keys: remembered on first use per pool/node and address; a change is refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from launcher import paths
from launcher.ssh import Connection, HostKeyChanged, HostKeyStore
from tests.fixtures.sshd import SshdServer

Connect = Callable[..., Connection]


def _key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)  # only its bytes matter here; fast enough


def test_store_keys_by_host_id_and_address(bl_home: Path) -> None:
    store = HostKeyStore()
    k1, k2 = _key(), _key()
    store.add("pool/n1", "[127.0.0.1]:2200", k1)
    store.add("pool/n1", "[127.0.0.1]:2200", k1)  # same key again: no duplicate
    store.add("pool/n2", "[127.0.0.1]:2200", k2)  # another node on a reused port
    assert [e.key.asbytes() for e in store.lookup("pool/n1", "[127.0.0.1]:2200")] == [k1.asbytes()]
    assert [e.key.asbytes() for e in store.lookup("pool/n2", "[127.0.0.1]:2200")] == [k2.asbytes()]
    assert store.lookup("pool/n1", "[127.0.0.1]:2201") == []
    with pytest.raises(HostKeyChanged, match=r"CHANGED.*--forget-host-key.*line 2 of "):
        store.add("pool/n1", "[127.0.0.1]:2200", k2)
    assert store.path == paths.ssh_dir() / "known_hosts"
    assert store.path.stat().st_mode & 0o777 == 0o600
    store.add("other/n1", "[10.0.0.4]:50000", k1)
    assert store.forget("pool/n1") == 1
    assert store.lookup("pool/n1", "[127.0.0.1]:2200") == []
    assert len(store.lookup("pool/n2", "[127.0.0.1]:2200")) == 1
    assert store.forget(pool="pool") == 1
    assert [e.host_id for e in store.entries()] == ["other/n1"]


@pytest.mark.sshd
def test_first_use_records_the_servers_key(connect: Connect, sshd: SshdServer) -> None:
    with connect(host_id="testpool/node-7") as conn:
        conn.run("true")
    line = (paths.ssh_dir() / "known_hosts").read_text().splitlines()[-1]
    assert line == f"testpool/node-7 [127.0.0.1]:{sshd.port} {sshd.host_public_key()}"


@pytest.mark.sshd
def test_changed_host_key_is_refused_until_forgotten(
    connect: Connect, sshd_factory: Callable[[], SshdServer], sshd_login_user: str
) -> None:
    server = sshd_factory()
    with connect(server) as conn:
        server.authorize(sshd_login_user, _authorized(conn))
        assert conn.run("echo first").stdout == b"first\n"
    server.restart(new_host_key=True)  # same port, new key: what a MITM would look like
    before = (paths.ssh_dir() / "known_hosts").read_text()
    with pytest.raises(HostKeyChanged) as info:
        connect(server).run("echo second")
    message = str(info.value)
    assert "\n" not in message
    assert "testpool/node-0" in message and f"[127.0.0.1]:{server.port}" in message
    assert "--forget-host-key" in message and str(paths.ssh_dir() / "known_hosts") in message
    assert (paths.ssh_dir() / "known_hosts").read_text() == before  # nothing overwritten
    assert "Starting session" not in server.log()  # refused before any command ran
    # another node id that happens to get the same loopback port is not confused with it
    assert connect(server, host_id="testpool/node-1").run("echo other").stdout == b"other\n"
    # after forgetting, the new key is accepted (and remembered)
    assert HostKeyStore().forget("testpool/node-0") == 1
    assert connect(server).run("echo third").stdout == b"third\n"
    assert re.search(
        rf"^testpool/node-0 \[127.0.0.1\]:{server.port} {re.escape(server.host_public_key())}$",
        (paths.ssh_dir() / "known_hosts").read_text(),
        re.M,
    )


def _authorized(conn: Connection) -> str:
    key = paramiko.PKey.from_path(conn.key_path)
    return f"{key.get_name()} {key.get_base64()}"
