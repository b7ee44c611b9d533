"""Errors the user can act on.

A `UserError` is printed by the CLI as one line ``error: ...`` and exit code 2, never as a
traceback: its message must name the file, the key and the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class UserError(Exception):
    """Bad input or missing configuration: the message says what is wrong and how to fix it."""

    exit_code = 2


class RunFailed(Exception):
    """A run finished but some of its tasks failed (CLI exit code 1)."""

    exit_code = 1


@contextlib.contextmanager
def about_file(path: os.PathLike[str] | str) -> Iterator[None]:
    """Prefix a `UserError` raised inside with the parameter file it is about (once)."""
    try:
        yield
    except UserError as exc:
        message = str(exc)
        if message.startswith(f"{path}:"):
            raise
        raise UserError(f"{path}: {message}") from None
