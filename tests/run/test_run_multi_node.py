"""`batchlaunch run` with a multi-node (multi-instance) task on the emulator: the run creates
the pool with inter-node communication, the task spans two nodes and its command sees both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.run.conftest import CliResult

pytestmark = pytest.mark.emulator

PARAMS = """
    [batch]
    endpoint = "emulator"
    [storage]
    url = "local"
    container = "runs"
    [pool]
    id = "mpi-two"
    dedicated_nodes = 2
    [job]
    id = "mpi"
    [[tasks]]
    id = "hello"
    nodes = 2
    coordination_command = "echo ready > \\"$AZ_BATCH_TASK_SHARED_DIR/coordinated\\""
    command = '''
    echo "hosts=$AZ_BATCH_HOST_LIST"
    echo "count=$(echo "$AZ_BATCH_HOST_LIST" | tr , '\\n' | wc -l)"
    echo "master=$AZ_BATCH_IS_CURRENT_NODE_MASTER"
    cat "$AZ_BATCH_TASK_SHARED_DIR/coordinated"
    '''
"""


def test_two_node_task_sees_both_hosts(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(PARAMS)
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "mpi-two", "--out", str(out), "-q")
    assert result.code == 0, result.err
    stdout = (out / "mpi-two" / "hello" / "logs" / "stdout.txt").read_text()
    assert stdout == "hosts=127.0.0.1,127.0.0.1\ncount=2\nmaster=true\nready\n"
