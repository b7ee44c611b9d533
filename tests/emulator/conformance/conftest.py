"""The conformance suite runs against the session's shared emulator (tests/fixtures)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def emulator_endpoint(emulator: Any) -> tuple[str, str, str]:
    """(endpoint, account, key) of the shared emulator; the suite signs requests itself."""
    return str(emulator.endpoint), str(emulator.account), str(emulator.key)
