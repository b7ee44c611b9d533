"""`batchlaunch render`: print or write the pool's start-task script."""

from __future__ import annotations

from pathlib import Path

import click

from launcher.commands.options import load, set_option
from launcher.errors import UserError


@click.command()
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the script to FILE (mode 0755) instead of printing it.",
)
@set_option
def render(params: Path, output: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the start-task script a node of PARAMS's pool runs when it joins.

    The script installs the `[runtime]` (Python, Julia, R or none) once into
    $AZ_BATCH_NODE_SHARED_DIR/batchlaunch, runs the pre/post install hooks, and writes
    env.sh there, which every task sources. Rerunning it (after a reboot) returns at once;
    a changed runtime reinstalls. Nothing secret is ever in it.

    PARAMS is a TOML or JSON parameter file (an AzureClusterlessHPC parameters.json works
    too). Bad values fail here, with the file, key and fix.
    """
    loaded = load(params, overrides)
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
