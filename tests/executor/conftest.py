"""Fixtures for `BatchExecutor` against the emulator: parameter files naming the session's
emulator, one BATCHLAUNCH_HOME (and so one local store) for the whole tier, and pools shared
by the tests of a language (each test gets its own job), deleted when the session ends."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.client import Client

ParamsFactory = Callable[..., Path]


def bare_node_python(home: Path) -> str:
    """`[runtime]` lines giving the nodes a python3 with NO cloudpickle at all (the client's
    Python under `-S`: standard library only): function shipping must bring its own."""
    bin_dir = home / "bare-python-bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        wrapper = bin_dir / "python3"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "$@"\n')
        wrapper.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return f"[runtime.environment]\nPATH = {json.dumps(path)}"


def write_params(
    path: Path,
    endpoint: str,
    *,
    language: str = "python",
    pool_id: str = "fx-python",
    nodes: int = 2,
    slots: int = 4,
    low_priority: int = 0,
    extra: str = "",
) -> Path:
    """A parameter file for the emulator at `endpoint` with a local store."""
    path.write_text(
        f"""
[batch]
endpoint = "{endpoint}"

[storage]
url = "local"
container = "batchlaunch"

[pool]
id = "{pool_id}"
dedicated_nodes = {nodes}
low_priority_nodes = {low_priority}
task_slots_per_node = {slots}

[runtime]
language = "{language}"
{extra}
"""
    )
    return path


@pytest.fixture(scope="session")
def fx_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fx-home")


@pytest.fixture(autouse=True)
def _home(fx_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch ~/.batchlaunch; one home per session so pools are shared."""
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(fx_home))
    for name in ("AZURE_BATCH_ENDPOINT", "AZURE_BATCH_ACCOUNT", "AZURE_BATCH_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def pools_to_delete(emulator: Any, fx_home: Path) -> Iterator[list[Path]]:
    """Parameter files whose pools are deleted at the end of the session."""
    files: list[Path] = []
    yield files
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BATCHLAUNCH_HOME", str(fx_home))
        for params in files:
            Client(params).delete_pool()


@pytest.fixture(scope="session")
def py_params(emulator: Any, fx_home: Path, pools_to_delete: list[Path]) -> Path:
    """The shared Python pool: 2 nodes x 4 slots, whose python3 has no cloudpickle."""
    path = write_params(fx_home / "python.toml", emulator.endpoint, extra=bare_node_python(fx_home))
    pools_to_delete.append(path)
    return path


@pytest.fixture(scope="session")
def r_params(emulator: Any, fx_home: Path, pools_to_delete: list[Path]) -> Path:
    """An R pool (Rscript + jsonlite from Debian on this machine): 1 node x 2 slots."""
    path = write_params(
        fx_home / "r.toml", emulator.endpoint, language="r", pool_id="fx-r", nodes=1, slots=2
    )
    pools_to_delete.append(path)
    return path


@pytest.fixture
def params_factory(emulator: Any, tmp_path: Path) -> ParamsFactory:
    """Write a parameter file for a pool of one's own (tests that delete their pool)."""

    def make(name: str = "params.toml", **kwargs: Any) -> Path:
        return write_params(tmp_path / name, emulator.endpoint, **kwargs)

    return make
