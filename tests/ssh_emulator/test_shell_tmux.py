"""`batchlaunch ssh PARAMS --node ID` with no command: an interactive shell on the node's pty,
driven in tmux (type with send-keys, read the screen with capture-pane)."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from tests.fixtures.tmux import Tmux
from tests.ssh_emulator.conftest import Cluster

pytestmark = pytest.mark.emulator


def test_interactive_shell_on_a_node(cluster: Cluster, tmux: Tmux, tmp_path: Path) -> None:
    node = cluster.node_ids[0]
    status = tmp_path / "status"
    env = cluster.env()
    assigns = " ".join(
        f"{k}={shlex.quote(env[k])}"
        for k in ("BATCHLAUNCH_HOME", "AZURE_BATCH_ACCESS_KEY", "PYTHONPATH", "PATH")
    )
    argv = shlex.join(cluster.command("ssh", str(cluster.params), "--node", node))
    cmd = f"env {assigns} TERM=xterm {argv}; echo $? > {shlex.quote(str(status))}; sleep 60"
    env_sh = 'd="$AZ_BATCH_NODE_SHARED_DIR/batchlaunch"'
    made = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--",
        f'{env_sh}; mkdir -p "$d" && echo "export BL_SHELL_MARK=from-env-sh" > "$d/env.sh"',
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    try:
        _drive_shell(cluster, tmux, node, cmd, status)
    finally:
        cluster.cli("ssh", str(cluster.params), "--node", node, "--", f'{env_sh}; rm -r "$d"')


def _drive_shell(cluster: Cluster, tmux: Tmux, node: str, cmd: str, status: Path) -> None:
    tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "30", cmd)
    tmux("set-option", "-g", "status", "off")
    tmux.wait_for(rf"@{re.escape(node)}:{re.escape(node)}[#$] *$")  # prompt: user@node:dir

    tmux.type("echo hi-$((6*7)) $AZ_BATCH_POOL_ID")
    tmux.wait_for(rf"^hi-42 {re.escape(cluster.pool_id)}\s*$")
    tmux.type("echo mark-$BL_SHELL_MARK")  # the runtime's env.sh was sourced
    tmux.wait_for(r"^mark-from-env-sh\s*$")
    tmux.type("tty; stty size")
    screen = tmux.wait_for(r"^30 200\s*$")
    assert re.search(r"^/dev/pts/\d+\s*$", screen, re.M)  # a real pty on the node side

    tmux("resize-window", "-t", "t", "-x", "220", "-y", "40")  # window change reaches the node
    time.sleep(0.5)
    tmux.type("clear; stty size")
    tmux.wait_for(r"^40 220\s*$")

    tmux.type("sleep 30; echo not-interrupted")  # Ctrl-C reaches the remote command
    time.sleep(0.5)
    tmux("send-keys", "-t", "t", "C-c")
    tmux.type("echo after-$((1+1))")
    screen = tmux.wait_for(r"^after-2\s*$", timeout=10)
    assert "not-interrupted" not in screen.replace("echo not-interrupted", "")

    tmux.type("exit 7")
    deadline = time.monotonic() + 15
    while not (status.exists() and status.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status.read_text().strip() == "7"  # the remote shell's exit status
