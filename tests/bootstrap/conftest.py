"""Fixtures for executing rendered start tasks on a sandboxed fake node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bootstrap.sandbox import Node


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "node")
