"""A run whose pool installs a Python runtime on its nodes, through the emulator.

The start task (rendered by `bootstrap`) installs real packages from PyPI with uv, one from
`packages` and one from a `requirements` file shipped as a start-task resource file; the
tasks import both. A start task that cannot install is diagnosed, not waited on forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.run.conftest import CliResult

pytestmark = pytest.mark.emulator

PARAMS = """
    [batch]
    endpoint = "emulator"
    [pool]
    id = "{pool}"
    dedicated_nodes = 2
    [runtime]
    language = "python"
    packages = [{packages}]
    requirements = "requirements.txt"
    [job]
    id = "{pool}"
    [[tasks]]
    id = "probe"
    command = "python -c 'import six, idna, sys; print(sys.prefix); print(six.__version__)'"
"""


def test_packages_and_requirements_file_are_installed_for_tasks(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        PARAMS.format(pool="pyruntime", packages='"six"'), **{"requirements.txt": "idna\n"}
    )
    out = tmp_path / "out"
    result = cli("run", str(params), "--run-id", "py1", "--out", str(out), "-q")
    assert result.code == 0, result.err
    stdout = (out / "py1" / "probe" / "logs" / "stdout.txt").read_text().splitlines()
    # the interpreter is the runtime's virtual environment in the node's shared dir
    assert stdout[0].endswith("/shared/batchlaunch/python"), stdout
    assert stdout[1].count(".") >= 1


def test_failed_start_task_is_diagnosed_with_its_step(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    params = write_params(
        PARAMS.format(pool="pybroken", packages='"batchlaunch-no-such-package-4f2a9"'),
        **{"requirements.txt": "\n"},
    )
    result = cli("run", str(params), "--run-id", "broken1", "--out", str(tmp_path / "o"), "-q")
    assert result.code == 1
    err = result.err
    assert "no node of the pool can run tasks: every start task failed" in err
    # every node failed the same way: said once, for all of them
    assert err.count("batchlaunch: step 'install python packages' failed") == 1
    assert "2 node(s) starttaskfailed" in err
    assert "batchlaunch-no-such-package-4f2a9" in err
    assert "--start-task --node" in err
    assert "pool pybroken has no usable node" in err


def test_status_of_a_detached_run_says_the_start_task_failed(
    run_env: dict[str, str],
    cli: Callable[..., CliResult],
    write_params: Callable[..., Path],
    tmp_path: Path,
) -> None:
    import time

    params = write_params(
        PARAMS.format(pool="pydetached", packages='"batchlaunch-no-such-package-4f2a9"'),
        **{"requirements.txt": "\n"},
    )
    submitted = cli("run", str(params), "--run-id", "det-broken", "--detach")
    assert submitted.code == 0, submitted.err
    deadline = time.monotonic() + 60
    while True:
        status = cli("status", "det-broken")
        if "no node of the pool can run tasks" in status.err or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status.code == 1
    assert "batchlaunch: step 'install python packages' failed" in status.err
    cli("pool", "delete", str(params))
