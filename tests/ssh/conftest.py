"""Fixtures of the SSH tests: an isolated BATCHLAUNCH_HOME and connections to `sshd`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.ssh import Connection, KeyPair, ensure_key_pair
from tests.fixtures.sshd import SshdServer


@pytest.fixture
def bl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "blhome"
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(home))
    return home


@pytest.fixture
def pool_key(bl_home: Path) -> KeyPair:
    """The tool's own generated key for pool "testpool" (what the CLI will use)."""
    return ensure_key_pair("testpool")


@pytest.fixture
def connect(
    sshd: SshdServer, sshd_login_user: str, pool_key: KeyPair
) -> Iterator[Callable[..., Connection]]:
    """Build Connections to the session server as the login user with the pool key."""
    sshd.authorize(sshd_login_user, pool_key.public_openssh)
    opened: list[Connection] = []

    def make(server: SshdServer | None = None, **kw: Any) -> Connection:
        srv = server or sshd
        kw.setdefault("host_id", "testpool/node-0")
        kw.setdefault("connect_timeout", 5)
        user = kw.pop("user", sshd_login_user)
        conn = Connection(srv.host, srv.port, user, pool_key.private_path, **kw)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()
