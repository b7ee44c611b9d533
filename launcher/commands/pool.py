"""`batchlaunch pool create|show|resize|delete` and `batchlaunch images`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from launcher.commands.options import load, set_option
from launcher.errors import about_file

params_argument = click.argument("params", type=click.Path(dir_okay=False, path_type=Path))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _client(params: Path, overrides: tuple[str, ...]) -> Any:
    from launcher.client import Client

    return Client(load(params, overrides))


def _print_pool(info: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(info), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pool {info.id}", show_header=False, title_justify="left")
    table.add_row("state", f"{info.state} ({info.allocation_state})")
    table.add_row("vm size", info.vm_size)
    table.add_row(
        "dedicated nodes", f"{info.dedicated_nodes} (target {info.target_dedicated_nodes})"
    )
    table.add_row(
        "low-priority nodes",
        f"{info.low_priority_nodes} (target {info.target_low_priority_nodes})",
    )
    table.add_row("task slots per node", str(info.task_slots_per_node))
    table.add_row("autoscale", "yes" if info.autoscale else "no")
    if info.node_states:
        states = ", ".join(f"{n} {s}" for s, n in sorted(info.node_states.items()))
        table.add_row("nodes", states)
    Console(highlight=False).print(table)


@click.group()
def pool() -> None:
    """Manage the pool of a parameter file ([pool] id, size, image, runtime)."""


@pool.command()
@params_argument
@click.option(
    "--replace", is_flag=True, help="Delete and recreate the pool if its spec has changed."
)
@json_option
@set_option
def create(params: Path, replace: bool, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Create PARAMS's pool with its start task; an identical existing pool is reused.

    A pool with the same id but a different spec is an error unless --replace (or
    [pool] replace_existing = true) is given.
    """
    client = _client(params, overrides)
    with about_file(params):
        info = client.create_pool(replace_existing=True if replace else None)
    if not as_json:
        click.echo(
            f"pool {info.id}: {'created' if info.created else 'exists with the same spec'}",
            err=True,
        )
    _print_pool(info, as_json)


@pool.command()
@params_argument
@json_option
@set_option
def show(params: Path, as_json: bool, overrides: tuple[str, ...]) -> None:
    """State, node counts and node states of PARAMS's pool."""
    with about_file(params):
        _print_pool(_client(params, overrides).show_pool(), as_json)


@pool.command()
@params_argument
@click.option("--dedicated", type=click.IntRange(min=0), help="Target dedicated nodes.")
@click.option("--low-priority", type=click.IntRange(min=0), help="Target low-priority nodes.")
@click.option("--wait", is_flag=True, help="Wait until the resize is done.")
@json_option
@set_option
def resize(
    params: Path,
    dedicated: int | None,
    low_priority: int | None,
    wait: bool,
    as_json: bool,
    overrides: tuple[str, ...],
) -> None:
    """Change the node counts of PARAMS's (fixed-size) pool."""
    if dedicated is None and low_priority is None:
        raise click.UsageError("give --dedicated N and/or --low-priority N")
    client = _client(params, overrides)
    with about_file(params):
        info = client.resize_pool(
            dedicated_nodes=dedicated, low_priority_nodes=low_priority, wait=wait
        )
    _print_pool(info, as_json)


@pool.command()
@params_argument
@click.option("--wait", is_flag=True, help="Wait until the pool is gone.")
@set_option
def delete(params: Path, wait: bool, overrides: tuple[str, ...]) -> None:
    """Delete PARAMS's pool (its nodes stop costing money at once)."""
    client = _client(params, overrides)
    pool_id = client.params.pool.id
    with about_file(params):
        deleted = client.delete_pool(wait=wait)
    if deleted:
        click.echo(f"pool {pool_id}: {'deleted' if wait else 'deleting'}")
    else:
        click.echo(f"pool {pool_id}: not found (nothing to delete)")


@click.command()
@click.option(
    "--os", "os_name", type=click.Choice(["linux", "windows"]), help="Only this OS's images."
)
@click.option(
    "--params",
    "params",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parameter file whose [batch] endpoint to ask (default: the local emulator, or "
    "AZURE_BATCH_ENDPOINT when set).",
)
@json_option
def images(os_name: str | None, params: Path | None, as_json: bool) -> None:
    """Marketplace images and node agents the Batch account supports.

    The ALIAS column is what `[pool] image = "ALIAS"` accepts (every alias there is, on
    an account that offers its image).
    """
    import os
    from types import SimpleNamespace

    from launcher.batch import ENDPOINT_ENV, connect
    from launcher.client import Client

    if params is not None:
        client = _client(params, ())
    else:
        default = SimpleNamespace(endpoint=os.environ.get(ENDPOINT_ENV) or "emulator", account=None)
        client = Client(None, batch=connect(default))
    rows = client.list_available_images(os=os_name)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Column, Table

    # The alias is what users copy into `[pool] image`: never cut or wrapped (the other
    # columns fold instead), whatever the terminal width or a pipe.
    width = max([len("alias"), *(len(r.alias or "") for r in rows)])
    alias = Column("alias", no_wrap=True, min_width=width)
    others = [Column(h, overflow="fold") for h in ("publisher", "offer", "sku", "node agent", "os")]
    table = Table(alias, *others)
    for r in rows:
        table.add_row(r.alias or "", r.publisher, r.offer, r.sku, r.node_agent_sku_id, r.os)
    Console(highlight=False).print(table)
