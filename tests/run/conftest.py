"""Helpers for `batchlaunch run` tests: parameter files, the CLI in-process, the emulator env."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_env(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Point the launcher at the session emulator, with a private BATCHLAUNCH_HOME."""
    env = {
        "BATCHLAUNCH_HOME": str(tmp_path / "home"),
        "AZURE_BATCH_ENDPOINT": emulator.endpoint,
        "AZURE_BATCH_ACCOUNT": emulator.account,
        "AZURE_BATCH_ACCESS_KEY": emulator.key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    yield env


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `batchlaunch ARGS` in-process; return exit code, stdout, stderr."""

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def cli_subprocess(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    """`batchlaunch ARGS` as its own process (for kill tests)."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture
def write_params(tmp_path: Path) -> Callable[..., Path]:
    """Write a parameter file (TOML text, dedented) plus extra files next to it."""

    def write(text: str, name: str = "params.toml", **files: str) -> Path:
        folder = tmp_path / "project"
        folder.mkdir(exist_ok=True)
        for file_name, content in files.items():
            (folder / file_name).write_text(textwrap.dedent(content))
        path = folder / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
