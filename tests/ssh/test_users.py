"""Expired and deleted node users are refused by the real sshd, with a clear error."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from launcher.errors import UserError
from launcher.ssh import Connection, KeyPair
from tests.fixtures.sshd import SshdServer

pytestmark = pytest.mark.sshd

Connect = Callable[..., Connection]


def _login(connect: Connect, sshd: SshdServer, user: str, key: KeyPair) -> Connection:
    sshd.authorize(user, key.public_openssh)
    return connect(user=user, host_id="testpool/node-u")


def test_expired_user_is_refused(
    connect: Connect, sshd: SshdServer, throwaway_user: str, pool_key: KeyPair
) -> None:
    with _login(connect, sshd, throwaway_user, pool_key) as conn:
        assert conn.run("id -un").stdout.decode().strip() == throwaway_user  # works while valid
    subprocess.run(["chage", "-E", "0", throwaway_user], check=True)  # expired since 1970-01-01
    with pytest.raises(UserError, match=f"refused user '{throwaway_user}'") as info:
        _login(connect, sshd, throwaway_user, pool_key).run("true")
    assert "expired or been deleted" in str(info.value)
    sshd.wait_for_log(f"Account {throwaway_user} has expired")


def test_deleted_user_is_refused(
    connect: Connect, sshd: SshdServer, throwaway_user: str, pool_key: KeyPair
) -> None:
    with _login(connect, sshd, throwaway_user, pool_key) as conn:
        assert conn.run("echo ok").stdout == b"ok\n"
    subprocess.run(["userdel", "-r", "-f", throwaway_user], check=True, capture_output=True)
    with pytest.raises(UserError, match=f"refused user '{throwaway_user}'"):
        _login(connect, sshd, throwaway_user, pool_key).run("true")
    sshd.wait_for_log(f"Invalid user {throwaway_user}")
