"""What every command taking PARAMS shares: the ``--set`` option and loading the file."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.errors import UserError

if TYPE_CHECKING:
    from launcher.params import Params

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a parameter, e.g. --set pool.dedicated_nodes=4 or --set runtime.version=3.12 "
    "(repeatable; wins over the file and the environment).",
)


def parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as a TOML value when it parses (3, true, ["a"])."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. pool.dedicated_nodes=2")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if isinstance(value, float):
            value = raw  # "3.12" is a version, not a number (no key takes a float)
        out[key.strip()] = value
    return out


def load(params: Path, overrides: tuple[str, ...] = ()) -> Params:
    """Load PARAMS with ``--set`` overrides; warnings (unsupported AzureClusterlessHPC keys)
    become ``warning:`` lines on stderr, the same in every command."""
    from launcher.params import load_params

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_params(params, overrides=parse_set(overrides) or None)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    return loaded
