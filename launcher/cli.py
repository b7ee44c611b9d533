"""The `batchlaunch` command line: a thin layer over the library.

Subcommands live in `launcher.commands.*` and are imported only when used, so that
`batchlaunch --help` and `batchlaunch render` do not pay for importing the Azure SDK.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys

import click

from launcher.errors import RunFailed, UserError

# name -> (module, attribute, one-line help shown by `batchlaunch --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "render": ("launcher.commands.render", "render", "Print the pool's start-task script."),
    "run": ("launcher.commands.run", "run", "Run a parameter file's tasks on its pool."),
    "status": ("launcher.commands.run", "status", "Task counts and failures of a run."),
    "collect": ("launcher.commands.run", "collect", "Download a run's outputs."),
    "logs": ("launcher.commands.logs", "logs", "Print or follow a task's stdout/stderr."),
    "pool": ("launcher.commands.pool", "pool", "Create, show, resize or delete a pool."),
    "images": ("launcher.commands.pool", "images", "Supported marketplace images."),
    "ssh": ("launcher.commands.ssh", "ssh", "Shell, command or file copy on a pool node."),
    "autoscale": ("launcher.commands.autoscale", "autoscale", "Check autoscale formulas."),
    "emulator": ("launcher.commands.emulator", "emulator", "The local Batch service."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _ = entry
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchlaunch")
def cli() -> None:
    """Boot Azure Batch pools with the runtime you need and launch work on them.

    Every command reads a parameter file (TOML or JSON). With `[batch] endpoint =
    "emulator"` (the default) everything runs on a local emulator of the Batch service.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one `error:` line and exit code 2."""
    if not os.environ.get("BATCHLAUNCH_DEBUG"):
        # azure-core logs recoverable conditions (failsafe deserialization, retries) with
        # tracebacks; users get our one-line errors instead. BATCHLAUNCH_DEBUG=1 shows them.
        logging.getLogger("azure").setLevel(logging.ERROR)
    try:
        result = cli.main(args=argv, standalone_mode=False)
        # `ctx.exit(n)` comes back as n when click does not exit itself.
        return result if isinstance(result, int) else 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(UserError.exit_code)
    except RunFailed as exc:
        if str(exc):
            click.echo(str(exc), err=True)
        sys.exit(RunFailed.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


#: Young-generation size before a cyclic collection (CPython's default: 700 allocations).
GC_THRESHOLDS = (100_000, 50, 100)


def entry() -> None:
    """The `batchlaunch` console script: `main` with the collector tuned for a CLI.

    Startup and a bulk run allocate ~10^6 objects, nearly none in a cycle. With CPython's
    defaults (a young collection every 700 allocations, a full one whenever the heap grew
    by a quarter) collecting took ~6% of a 10,000-task `run --detach`; rarer collections
    still find the cycles, with at most ~10^5 young objects waiting. At exit the
    interpreter would run one more full pass over every object the imports made (~40 ms,
    to free memory the OS takes back anyway); freezing the heap first skips it. atexit
    handlers (logging's flush) still run, and reference counting still frees objects.
    `main` itself leaves the collector alone, for callers that keep running.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    code: int | str | None = 1
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
