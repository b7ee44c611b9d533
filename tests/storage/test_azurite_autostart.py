"""`[storage] url = "azurite"` with no connection string starts Azurite itself."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from launcher.azurite import PORT_ENV, find_azurite
from launcher.errors import UserError
from launcher.storage import open_store
from tests.conftest import unavailable

pytestmark = pytest.mark.azurite


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_open_store_starts_azurite_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if find_azurite() is None:
        unavailable("azurite-blob not installed (scripts/setup-test-env.sh installs it)")
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path))
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    env = {PORT_ENV: str(_free_port())}
    pid_file = tmp_path / "azurite" / "azurite.pid"
    try:
        store = open_store("azurite", "autostart", env)
        store.ensure_container()
        store.upload_bytes(b"hello", "x.txt")
        first_pid = pid_file.read_text()
        again = open_store("azurite", "autostart", env)  # already listening: reused
        assert again.list() == ["x.txt"]
        assert pid_file.read_text() == first_pid
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_missing_azurite_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("launcher.azurite._CHECKOUT_BIN", tmp_path / "none")
    with pytest.raises(UserError, match=r"azurite-blob is not installed.*AZURE_STORAGE_CONNECTION"):
        open_store("azurite", "xyz", {PORT_ENV: str(_free_port())})
