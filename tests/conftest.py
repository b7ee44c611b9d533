"""Shared pytest configuration.

Server fixtures live in tests/fixtures/ (one module per server: the emulator, Azurite,
OpenSSH) and are loaded as plugins. In CI (`CI=true`) a tier whose server cannot be
started fails loudly instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.azurite",
    "tests.fixtures.sshd",
    "tests.fixtures.tmux",
]


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a missing server must never pass silently there."""
    if os.environ.get("CI"):
        pytest.fail(f"required test server unavailable in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def repo_root() -> Path:
    return REPO
