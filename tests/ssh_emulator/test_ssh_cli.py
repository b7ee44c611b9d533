"""`batchlaunch ssh` end to end: the CLI subprocess, the real SDK against the emulator, and
the emulator's SSH endpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ssh_emulator.conftest import Cluster

pytestmark = pytest.mark.emulator


def test_command_exit_code_and_separate_streams(cluster: Cluster) -> None:
    # The words after -- are joined with spaces, as ssh(1) does.
    done = cluster.cli(
        "ssh", str(cluster.params), "--", "echo", "out-$AZ_BATCH_NODE_ID;", "pwd;",
        "echo", "err-$AZ_BATCH_POOL_ID", ">&2;", "exit", "7",
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    out = done.stdout.splitlines()
    node = out[0].removeprefix("out-")
    assert node == cluster.node_ids[0] or node in cluster.node_ids  # the first idle node
    assert out[1].endswith(f"/{cluster.pool_id}/{node}")  # cwd: the node's root directory
    assert "err-" not in done.stdout
    assert f"err-{cluster.pool_id}" in done.stderr.splitlines()


def test_named_node_and_exit_zero(cluster: Cluster) -> None:
    target = cluster.node_ids[1]
    done = cluster.cli("ssh", str(cluster.params), "--node", target, "--", "echo $AZ_BATCH_NODE_ID")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{target}\n"


def test_unknown_node_lists_the_nodes(cluster: Cluster) -> None:
    done = cluster.cli("ssh", str(cluster.params), "--node", "tvm-nope", "--", "true")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --node tvm-nope: not a node of pool")
    assert all(f"{n} (idle" in done.stderr for n in cluster.node_ids)
    assert "Traceback" not in done.stderr


def test_all_nodes_prefixes_lines_and_fails_if_one_fails(cluster: Cluster) -> None:
    bad = cluster.node_ids[1]
    done = cluster.cli(
        "ssh", str(cluster.params), "--all-nodes", "--",
        f'echo "hello from $AZ_BATCH_NODE_ID"; echo second; '
        f'test "$AZ_BATCH_NODE_ID" != {bad} || exit 3',
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    for node in cluster.node_ids:
        assert f"[{node}] hello from {node}" in lines
        assert f"[{node}] second" in lines
        # each node's lines in its order
        assert lines.index(f"[{node}] hello from {node}") < lines.index(f"[{node}] second")
    assert len(lines) == 4
    assert f"1 of 2 nodes failed: {bad} (exit 3)" in done.stderr


def test_put_then_get_files_and_trees(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.node_ids[0]
    payload = os.urandom(300_000)
    src = tmp_path / "up.bin"
    src.write_bytes(payload)
    src.chmod(0o640)
    put = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--put", str(src), "/shared/up.bin"
    )
    assert put.returncode == 0, put.stderr
    # checked through the Batch file API, not through our own SFTP
    on_node = b"".join(cluster.client.download_node_file(cluster.pool_id, node, "shared/up.bin"))
    assert on_node == payload
    props = cluster.client.get_node_file_properties(cluster.pool_id, node, "shared/up.bin")
    assert int(str(props.file_mode), 8) & 0o777 == 0o640  # --put keeps the permission bits

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.txt").write_text("b\n")
    put_dir = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--put", str(tree), "/shared/tree"
    )
    assert put_dir.returncode == 0, put_dir.stderr

    back = tmp_path / "back"
    back.mkdir()
    got = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--get", "/shared/up.bin", str(back)
    )
    assert got.returncode == 0, got.stderr
    assert (back / "up.bin").read_bytes() == payload

    got_dir = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--get", "/shared/tree", str(tmp_path / "t2")
    )
    assert got_dir.returncode == 0, got_dir.stderr
    assert (tmp_path / "t2" / "a.txt").read_text() == "a\n"
    assert (tmp_path / "t2" / "sub" / "b.txt").read_text() == "b\n"

    missing = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--get", "/shared/nope", str(back)
    )
    assert missing.returncode == 2
    assert "/shared/nope: no such file or directory" in missing.stderr


def test_forget_host_key(cluster: Cluster) -> None:
    from launcher.ssh import HostKeyStore

    node = cluster.node_ids[0]
    assert cluster.cli("ssh", str(cluster.params), "--node", node, "--", "true").returncode == 0
    store = HostKeyStore()
    assert any(e.host_id == f"{cluster.pool_id}/{node}" for e in store.entries())
    done = cluster.cli("ssh", str(cluster.params), "--node", node, "--forget-host-key")
    assert done.returncode == 0, done.stderr
    assert f"forgot 1 host key(s) of node {cluster.pool_id}/{node}" in done.stderr
    assert not any(e.host_id == f"{cluster.pool_id}/{node}" for e in store.entries())


def test_shell_without_a_terminal_reads_commands_from_stdin(cluster: Cluster) -> None:
    import subprocess

    done = subprocess.run(
        cluster.command("ssh", str(cluster.params), "--node", cluster.node_ids[1]),
        env=cluster.env(),
        input="echo piped-$AZ_BATCH_NODE_ID\necho to-err >&2\nexit 4\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stderr
    assert done.stdout == f"piped-{cluster.node_ids[1]}\n"
    assert "to-err" in done.stderr and "not a terminal" in done.stderr


def test_put_into_a_missing_directory_names_it(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "up.txt"
    src.write_text("x")
    node = cluster.node_ids[0]
    done = cluster.cli(
        "ssh", str(cluster.params), "--node", node, "--put", str(src), "/no-such-dir/x_up.txt"
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: ssh --put: /no-such-dir: no such directory on node {node}"
    )
    assert "mkdir -p /no-such-dir" in done.stderr


def test_commands_and_all_nodes_see_the_task_environment(cluster: Cluster, tmp_path: Path) -> None:
    """A pool whose python runtime (version "system") writes env.sh: `ssh -- CMD` and
    `--all-nodes` get BATCHLAUNCH_PYTHON as tasks do; the session pool (no runtime, no
    env.sh) runs commands quietly without it."""
    import uuid

    from launcher.client import Client
    from tests.ssh_emulator.conftest import wait_nodes, write_params

    pool_id = f"sshenv-{uuid.uuid4().hex[:6]}"
    params = write_params(tmp_path / "py.toml", cluster.info, pool_id, nodes=1)
    params.write_text(
        params.read_text().replace('language = "none"', 'language = "python"\nversion = "system"')
    )
    Client(params).create_pool()
    try:
        wait_nodes(cluster.client, pool_id, 1, {"idle"}, timeout=120)
        one = cluster.cli("ssh", str(params), "--", 'echo "py=$BATCHLAUNCH_PYTHON"')
        assert one.returncode == 0, one.stderr
        assert one.stdout.startswith("py=/") and "python3" in one.stdout
        every = cluster.cli(
            "ssh", str(params), "--all-nodes", "--", 'echo "py=$BATCHLAUNCH_PYTHON"'
        )
        assert every.returncode == 0, every.stderr
        assert every.stdout == one.stdout  # one node: no [node] prefix
    finally:
        cluster.client.begin_delete_pool(pool_id, polling_interval=0.1).result()
    plain = cluster.cli("ssh", str(cluster.params), "--", 'echo "py=${BATCHLAUNCH_PYTHON:-none}"')
    assert plain.returncode == 0 and plain.stdout == "py=none\n" and plain.stderr == ""


def test_set_reaches_a_pool_whose_id_was_overridden(cluster: Cluster, tmp_path: Path) -> None:
    # A parameter file naming another pool, pointed back at the cluster's with --set.
    other = tmp_path / "other.toml"
    other.write_text(
        cluster.params.read_text().replace(f'"{cluster.pool_id}"', '"some-other-pool"', 1)
    )
    assert "some-other-pool" in other.read_text()
    done = cluster.cli(
        "ssh", str(other), "--set", f"pool.id={cluster.pool_id}", "--", "echo $AZ_BATCH_POOL_ID"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{cluster.pool_id}\n"
