"""`emulator serve`: the command line of the local Batch service (also `batchlaunch emulator`)."""

from __future__ import annotations

from pathlib import Path

import click

from emulator.config import DEFAULT_ACCOUNT, DEFAULT_HOST, DEFAULT_KEY, Settings


def _rate(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


@click.group()
def emulator() -> None:
    """The local Azure Batch service (data-plane REST API, nodes on this machine)."""


@emulator.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port; 0 picks a free one.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where pools, jobs, tasks and node directories live [default: BATCHLAUNCH_HOME/emulator].",
)
@click.option(
    "--account", default=DEFAULT_ACCOUNT, show_default=True, help="Account name clients sign with."
)
@click.option(
    "--key",
    default=DEFAULT_KEY,
    help="Base64 account key [default: the documented well-known key].",
)
@click.option(
    "--fault-rate",
    default=0.0,
    type=float,
    callback=_rate,
    help="Share (0-1) of requests answered 500/503 or with a dropped connection [default: 0].",
)
@click.option(
    "--throttle-rate",
    default=0.0,
    type=float,
    callback=_rate,
    help="Share (0-1) of requests answered 429 with Retry-After [default: 0].",
)
@click.option("--seed", default=None, type=int, help="Seed for faults, throttling and preemption.")
@click.option(
    "--idle-timeout",
    default=None,
    type=float,
    help="Exit after this many seconds with no request and nothing running [default: never; "
    'the daemon that endpoint = "emulator" starts uses 3600].',
)
@click.option(
    "--time-scale",
    default=1.0,
    type=float,
    show_default=True,
    help="Multiplier for simulated delays (node boot, deletion, autoscale interval).",
)
@click.option(
    "--preempt-rate",
    default=0.0,
    type=float,
    callback=_rate,
    help="Chance (0-1) that a low-priority node is preempted once, shortly after its first "
    "task starts [default: 0].",
)
@click.option(
    "--latency-ms",
    default=0.0,
    type=click.FloatRange(0, 10_000),
    show_default=True,
    help="Simulated network round trip added to every request (benchmarks: weigh request "
    "counts as a client far from Azure would).",
)
@click.option(
    "--remote-login-port",
    default=50000,
    type=click.IntRange(1, 65535),
    show_default=True,
    help="Port reported by remote login settings (the SSH endpoint).",
)
@click.option(
    "--ssh-port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the SSH endpoint on 127.0.0.1 (node users' logins); 0 picks a free one. "
    "Remote login settings report it.",
)
def serve(
    host: str,
    port: int,
    state_dir: Path | None,
    account: str,
    key: str,
    fault_rate: float,
    throttle_rate: float,
    seed: int | None,
    idle_timeout: float | None,
    time_scale: float,
    preempt_rate: float,
    latency_ms: float,
    remote_login_port: int,
    ssh_port: int,
) -> None:
    """Serve until SIGINT/SIGTERM; prints BATCH_ENDPOINT=http://HOST:PORT when ready."""
    import base64
    import binascii

    from emulator.server import serve as run

    try:
        base64.b64decode(key, validate=True)
    except binascii.Error:
        raise click.BadParameter("must be base64", param_hint="--key") from None
    if state_dir is None:
        from launcher.paths import emulator_state_dir

        state_dir = emulator_state_dir()
    settings = Settings(
        state_dir=state_dir.resolve(),
        host=host,
        port=port,
        account=account,
        key=key,
        fault_rate=fault_rate,
        throttle_rate=throttle_rate,
        seed=seed,
        idle_timeout=idle_timeout,
        time_scale=time_scale,
        preempt_rate=preempt_rate,
        latency_ms=latency_ms,
        remote_login_port=remote_login_port,
        ssh_port=ssh_port,
    )
    run(settings)


@emulator.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory of the daemon [default: the embedded one, "
    "$BATCHLAUNCH_HOME/emulator, i.e. ~/.batchlaunch/emulator].",
)
def status(state_dir: Path | None) -> None:
    """Is the background emulator (the one `endpoint = "emulator"` starts) running?

    When it is: its pid and state dir, then ``export`` lines to paste into a shell so that
    the Azure CLI names (AZURE_BATCH_ENDPOINT, _ACCOUNT, _ACCESS_KEY) point SDK clients and
    `batchlaunch images` at it. The key is the emulator's documented well-known key
    (emulator/README.md), not a secret. Exit code 1 when no emulator is running.
    """
    import shlex

    from emulator.daemon import running_emulator

    directory = _default_state_dir(state_dir)
    info = running_emulator(directory)
    if info is None:
        click.echo(f"no emulator running for {directory}")
        raise SystemExit(1)
    click.echo(f"# emulator running: pid={info.pid} state={directory}")
    click.echo(f"export AZURE_BATCH_ENDPOINT={shlex.quote(info.endpoint)}")
    click.echo(f"export AZURE_BATCH_ACCOUNT={shlex.quote(info.account)}")
    click.echo("# the emulator's documented well-known key (emulator/README.md), not a secret:")
    click.echo(f"export AZURE_BATCH_ACCESS_KEY={shlex.quote(info.key)}")


@emulator.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory of the daemon [default: the embedded one, "
    "$BATCHLAUNCH_HOME/emulator, i.e. ~/.batchlaunch/emulator].",
)
def stop(state_dir: Path | None) -> None:
    """Stop the background emulator: running tasks are killed, state is saved.

    It also stops by itself after an hour with no requests and nothing running.
    """
    from emulator.daemon import stop_emulator

    directory = _default_state_dir(state_dir)
    if stop_emulator(directory):
        click.echo(f"stopped the emulator of {directory}")
    else:
        click.echo(f"no emulator running for {directory}")


def _default_state_dir(state_dir: Path | None) -> Path:
    if state_dir is not None:
        return state_dir.resolve()
    from launcher.paths import emulator_state_dir

    return emulator_state_dir()
