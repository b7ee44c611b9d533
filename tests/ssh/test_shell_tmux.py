"""The interactive shell on a real pty: tmux runs a client that calls `Connection.shell()`;
we type with `send-keys` and read the screen with `capture-pane`."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.ssh import Connection, KeyPair
from tests.conftest import REPO
from tests.fixtures.sshd import SshdServer
from tests.fixtures.tmux import Tmux

pytestmark = pytest.mark.sshd

CLIENT = """\
import os, subprocess, sys
sys.path.insert(0, {repo!r})
os.environ["BATCHLAUNCH_HOME"] = {home!r}
from launcher.ssh import Connection
conn = Connection({host!r}, {port}, {user!r}, {key!r}, host_id="testpool/node-0")
code = conn.shell()
conn.close()
stty = subprocess.run(["stty", "-a"], capture_output=True, text=True).stdout
with open({status!r} + ".tmp", "w") as f:
    f.write(f"{{code}}\\n{{stty}}")
os.rename({status!r} + ".tmp", {status!r})
"""


def test_interactive_shell_in_tmux(
    connect: Callable[..., Connection],
    sshd: SshdServer,
    sshd_login_user: str,
    pool_key: KeyPair,
    tmux: Tmux,
    tmp_path: Path,
) -> None:
    connect()  # authorizes the pool key for the login user
    status = tmp_path / "status"
    script = tmp_path / "client.py"
    script.write_text(
        CLIENT.format(
            repo=str(REPO),
            home=os.environ["BATCHLAUNCH_HOME"],
            host=sshd.host,
            port=sshd.port,
            user=sshd_login_user,
            key=str(pool_key.private_path),
            status=str(status),
        )
    )
    cmd = f"{sys.executable} {script}; sleep 60"
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", cmd)
    tmux("set-option", "-g", "status", "off")
    tmux.wait_for(r"[#$] *$")  # the remote prompt

    tmux("send-keys", "-t", "t", "echo hi-$((6*7))", "Enter")
    tmux.wait_for(r"^hi-42\s*$")

    tmux("send-keys", "-t", "t", "stty size", "Enter")
    tmux.wait_for(r"^30 100\s*$")
    tmux("resize-window", "-t", "t", "-x", "120", "-y", "40")  # SIGWINCH to the client
    time.sleep(0.3)
    tmux("send-keys", "-t", "t", "clear; stty size", "Enter")
    tmux.wait_for(r"^40 120\s*$")

    # Ctrl-C interrupts the remote command, not the client
    tmux("send-keys", "-t", "t", "sleep 30; echo not-interrupted", "Enter")
    time.sleep(0.5)
    tmux("send-keys", "-t", "t", "C-c")
    tmux("send-keys", "-t", "t", "echo after-$((1+1))", "Enter")
    screen = tmux.wait_for(r"^after-2\s*$", timeout=5)
    assert "not-interrupted" not in screen.replace("echo not-interrupted", "")
    assert not status.exists()

    tmux("send-keys", "-t", "t", "exit 7", "Enter")
    deadline = time.monotonic() + 10
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    code, stty = status.read_text().split("\n", 1)
    assert code == "7"
    # the local terminal is back in cooked mode
    assert re.search(r"(?<!-)icanon", stty) and re.search(r"(?<!-)\becho\b", stty), stty
