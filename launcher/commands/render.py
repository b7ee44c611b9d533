"""`batchlaunch render`: print or write the pool's start-task script."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Any

import click

from launcher.errors import UserError


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


@click.command()
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the script to FILE (mode 0755) instead of printing it.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a parameter, e.g. --set runtime.version=3.12 (repeatable; wins over the "
    "file and the environment).",
)
def render(params: Path, output: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the start-task script a node of PARAMS's pool runs when it joins.

    The script installs the `[runtime]` (Python, Julia, R or none) once into
    $AZ_BATCH_NODE_SHARED_DIR/batchlaunch, runs the pre/post install hooks, and writes
    env.sh there, which every task sources. Rerunning it (after a reboot) returns at once;
    a changed runtime reinstalls. Nothing secret is ever in it.

    PARAMS is a TOML or JSON parameter file (an AzureClusterlessHPC parameters.json works
    too). Bad values fail here, with the file, key and fix.
    """
    from launcher.params import load_params

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_params(params, overrides=parse_set(overrides))
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    script = loaded.start_task_script()
    if output is None:
        click.echo(script, nl=False)
        return
    try:
        output.write_text(script, encoding="utf-8")
        output.chmod(0o755)
    except OSError as exc:
        raise UserError(f"{output}: cannot write the script: {exc}") from None
    click.echo(
        f"wrote {output} ({loaded.runtime.language} runtime, {loaded.pool.kind} pool)", err=True
    )
