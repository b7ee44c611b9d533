"""run_on_all: many nodes in parallel, prefixed live output, one unreachable node."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest

from launcher.ssh import Connection, run_on_all
from tests.fixtures.sshd import free_port

pytestmark = pytest.mark.sshd

Connect = Callable[..., Connection]


def test_run_on_all(connect: Connect) -> None:
    nodes = {f"node-{i}": connect(host_id=f"testpool/node-{i}") for i in range(5)}
    nodes["node-down"] = Connection(
        "127.0.0.1", free_port(), "root", nodes["node-0"].key_path, host_id="testpool/node-down"
    )
    out, err = io.BytesIO(), io.BytesIO()
    t0 = time.monotonic()
    results = run_on_all(
        nodes,
        'sleep 1; echo "hello $NODE"; echo "two"; echo warn >&2; exit $CODE',
        max_workers=8,
        env={"NODE": "x", "CODE": "3"},
        stdout=out,
        stderr=err,
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 4, f"not parallel: {elapsed:.1f} s for 5 nodes sleeping 1 s"
    assert set(results) == set(nodes)
    for i in range(5):
        r = results[f"node-{i}"]
        assert (r.exit_code, r.stdout, r.stderr, r.error) == (3, b"hello x\ntwo\n", b"warn\n", None)
    down = results["node-down"]
    assert down.exit_code == 255 and down.error is not None and "refused" in down.error
    out_lines = out.getvalue().decode().splitlines()
    for i in range(5):
        mine = [line for line in out_lines if line.startswith(f"[node-{i}] ")]
        assert mine == [f"[node-{i}] hello x", f"[node-{i}] two"]
    err_lines = err.getvalue().decode().splitlines()
    assert sorted(line for line in err_lines if "warn" in line) == [
        f"[node-{i}] warn" for i in range(5)
    ]
    assert any(line.startswith("[node-down] ssh: connection to") for line in err_lines)
