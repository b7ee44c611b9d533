"""Fixtures for the function-shipping tests: a user's local package that exists only on the
client (never installed, never on the node's sys.path)."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

USERLIB = '''
import threading


class CustomError(Exception):
    """An exception class that exists only in the user's source tree."""


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


SCALE = 3


def helper(x):
    return x + 1


def scaled(x, offset=0):
    return helper(x) * SCALE + offset


def fails(x):
    raise CustomError(f"bad input {x}")


def fails_unpicklable(x):
    raise Unpicklable(f"holds a lock, input {x}")
'''


@pytest.fixture
def userlib(tmp_path: Path) -> Iterator[ModuleType]:
    """Import a throwaway package from a temp dir, as a user's `import mylib` would."""
    name = f"userlib_{uuid.uuid4().hex[:8]}"
    src = tmp_path / "usersrc" / name
    src.mkdir(parents=True)
    (src / "__init__.py").write_text(textwrap.dedent(USERLIB))
    sys.path.insert(0, str(src.parent))
    try:
        module = __import__(name)
        yield module
    finally:
        sys.path.remove(str(src.parent))
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
