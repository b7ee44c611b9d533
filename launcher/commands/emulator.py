"""`batchlaunch emulator serve`: the local Batch service (implemented in the emulator package)."""

from __future__ import annotations

from emulator.cli import emulator

__all__ = ["emulator"]
