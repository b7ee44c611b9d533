"""`batchlaunch ssh PARAMS`: a shell, a command or a file copy on the pool's nodes.

    batchlaunch ssh PARAMS                        shell (pty) on the first idle/running node
    batchlaunch ssh PARAMS --node ID -- CMD ARGS  run CMD; exit with its exit code
    batchlaunch ssh PARAMS --all-nodes -- CMD     every node in parallel, [node-id] prefixes
    batchlaunch ssh PARAMS --get REMOTE LOCAL     copy from the node (trees too); --put: there
    batchlaunch ssh PARAMS --node ID --forget-host-key

A node user with the pool's generated key is created for the session on each node used and
deleted at the end (``--keep-user`` leaves it; it expires after ``--expiry`` hours anyway).

Commands and the shell run under bash with the runtime environment the tasks get: the
start task's ``$AZ_BATCH_NODE_SHARED_DIR/batchlaunch/env.sh`` is sourced when it exists
(SSH logins on Azure Batch do not get the ``AZ_BATCH_*`` variables, so the shared dir
defaults to Batch's Linux ``/mnt/batch/tasks/shared``).
"""

from __future__ import annotations

import shlex
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import click

from bootstrap.command import ENV_FILE
from launcher.commands.options import load, set_option
from launcher.errors import UserError
from launcher.logs import start_task_failure

#: Nodes a session goes to without being named; `--node` also reaches a node whose start
#: task failed (that is when users need to look).
READY_STATES = ("idle", "running")
LOGIN_STATES = (*READY_STATES, "starttaskfailed", "unusable", "offline")


@dataclass(frozen=True)
class NodeState:
    """A pool node as `ssh` chooses among them."""

    id: str
    state: str
    start_task: str = ""  # the start task's failure, when it failed

    def describe(self) -> str:
        return f"{self.id} ({self.state}{': ' + self.start_task if self.start_task else ''})"


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "").lower()


def pool_nodes(batch: Any, pool_id: str) -> list[NodeState]:
    """The pool's nodes with their states, through the SDK."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    try:
        nodes = list(batch.list_nodes(pool_id))
    except ResourceNotFoundError:
        raise UserError(
            f"pool {pool_id!r} not found ([pool] id); create it with "
            "`batchlaunch pool create PARAMS`"
        ) from None
    except HttpResponseError as exc:
        raise UserError(f"batch: listing the nodes of pool {pool_id} failed: {exc}") from None
    return [NodeState(str(n.id), _enum(n.state), start_task_failure(n)) for n in nodes]


def choose_nodes(
    nodes: Sequence[NodeState], pool_id: str, node_id: str | None, all_nodes: bool
) -> list[str]:
    """The node ids a session goes to, or a `UserError` that lists the nodes and states."""
    listing = "; ".join(n.describe() for n in nodes) or "no nodes"
    if node_id is not None:
        found = next((n for n in nodes if n.id == node_id), None)
        if found is None:
            raise UserError(f"--node {node_id}: not a node of pool {pool_id}; nodes: {listing}")
        if found.state not in LOGIN_STATES:
            raise UserError(
                f"--node {node_id}: node is {found.state}, not accepting logins; "
                f"wait for it to boot (nodes: {listing})"
            )
        return [node_id]
    wanted = LOGIN_STATES if all_nodes else READY_STATES
    usable = [n.id for n in nodes if n.state in wanted]
    if usable:
        return usable if all_nodes else usable[:1]
    hint = ""
    failed = [n for n in nodes if n.state == "starttaskfailed"]
    if failed:
        hint = (
            f"; see why with `batchlaunch logs RUN_ID --start-task --node {failed[0].id}` "
            f"or log in anyway with --node {failed[0].id}"
        )
    raise UserError(f"pool {pool_id} has no idle or running node; nodes: {listing}{hint}")


#: Where Batch puts the shared dir on Linux nodes, for sessions without AZ_BATCH_* variables.
DEFAULT_SHARED_DIR = "/mnt/batch/tasks/shared"


def with_task_env(cmd: str) -> str:
    """`cmd` run by bash after sourcing the runtime's env.sh (quietly skipped when the
    start task has not written one), so a session sees the Python/Julia/R its tasks see.

    env.sh is written by bash (``printf %q``), so it is sourced by bash, not the login sh."""
    script = (
        f'BL_ENV="${{AZ_BATCH_NODE_SHARED_DIR:-{DEFAULT_SHARED_DIR}}}/{ENV_FILE}"\n'
        'if [ -f "$BL_ENV" ]; then . "$BL_ENV"; fi\n'
        "unset BL_ENV\n"
        f"{cmd}"
    )
    return "/bin/bash -c " + shlex.quote(script)


#: The interactive shell: bash on the pty with env.sh sourced (not a login shell: a
#: login shell's /etc/profile would reset PATH on Debian images). A non-interactive bash
#: drops PS1 from its environment, so a PS1 the session was given is carried as BL_PS1. On
#: the emulator (AZ_BATCH_NODE_ROOT_DIR is set in its sessions, not in Batch's) the session
#: has the host user's HOME, whose ~/.bashrc is not the node's: skipped there.
INTERACTIVE_SHELL = 'BL_PS1="${PS1:-}" ' + with_task_env(
    'if [ -n "$BL_PS1" ]; then export PS1="$BL_PS1"; fi\n'
    "unset BL_PS1\n"
    'if [ -n "${AZ_BATCH_NODE_ROOT_DIR:-}" ]; then exec /bin/bash --norc -i; fi\n'
    "exec /bin/bash -i"
)


def exit_code(code: int) -> int:
    """A remote status as ssh(1) exits: no status (killed by a signal) is 255."""
    return 255 if code < 0 else code


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("params", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--node", "node_id", metavar="ID", help="Node to use [default: first idle/running].")
@click.option("--all-nodes", is_flag=True, help="Run CMD (or copy) on every node in parallel.")
@click.option("--admin", is_flag=True, help="Create the node user as an administrator (sudo).")
@click.option("--keep-user", is_flag=True, help="Do not delete the node user at the end.")
@click.option(
    "--expiry",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    metavar="HOURS",
    help="Node user lifetime.",
)
@click.option(
    "--get",
    "get",
    nargs=2,
    metavar="REMOTE LOCAL",
    help="Copy a file or tree here. On the emulator, remote paths are rooted at the node's "
    "directory (/ is $AZ_BATCH_NODE_ROOT_DIR: /shared, /startup, /workitems).",
)
@click.option(
    "--put",
    "put",
    nargs=2,
    metavar="LOCAL REMOTE",
    help="Copy a file or tree there. A file's remote parent directory must exist (it is "
    "not created: the error names it); a tree's REMOTE is created.",
)
@click.option(
    "--forget-host-key",
    is_flag=True,
    help="Forget the remembered host key of --node (all nodes of the pool without it).",
)
@set_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD...]")
def ssh(
    params: Path,
    node_id: str | None,
    all_nodes: bool,
    admin: bool,
    keep_user: bool,
    expiry: float,
    get: tuple[str, str] | None,
    put: tuple[str, str] | None,
    forget_host_key: bool,
    overrides: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Shell, command (after --) or file copy on a pool node, over SSH with a generated key.

    Commands and the shell run under bash with the tasks' runtime environment (the start
    task's env.sh is sourced when it exists).
    """
    from launcher.client import Client
    from launcher.ssh import HostKeyStore, NodeAccess

    actions = sum(bool(a) for a in (get, put, command))
    if actions > 1:
        raise UserError("ssh: give one of --get, --put or -- CMD, not several")
    if node_id is not None and all_nodes:
        raise UserError("ssh: --node and --all-nodes exclude each other")
    if all_nodes and not actions:
        raise UserError("ssh: --all-nodes needs -- CMD, --get or --put (no shell on many nodes)")

    loaded = load(params, overrides)
    pool_id = loaded.pool.id
    if forget_host_key:
        store = HostKeyStore()
        count = store.forget(f"{pool_id}/{node_id}") if node_id else store.forget(pool=pool_id)
        what = f"node {pool_id}/{node_id}" if node_id else f"pool {pool_id}"
        click.echo(f"forgot {count} host key(s) of {what} in {store.path}", err=True)
        if not actions:
            return

    batch = Client(loaded).batch
    nodes = choose_nodes(pool_nodes(batch, pool_id), pool_id, node_id, all_nodes)
    access = NodeAccess(
        batch, pool_id, nodes, is_admin=admin, expiry=timedelta(hours=expiry), keep_user=keep_user
    )
    try:
        with access:
            code = _session(access, nodes, get, put, " ".join(command))
    finally:
        for warning in access.cleanup_errors:
            click.echo(f"warning: {warning}", err=True)
    if keep_user and access.key is not None:
        for node, plan in access.users.items():
            conn = access.connections.get(node)
            where = f"-p {conn.port} {plan.name}@{conn.host}" if conn else plan.name
            click.echo(
                f"kept node user {plan.name} on {node} until {plan.expiry_time:%Y-%m-%d %H:%M} "
                f"UTC: ssh -i {access.key.private_path} {where}",
                err=True,
            )
    if code:  # SystemExit, not ctx.exit: the exit code must survive `python -m launcher.cli`
        raise SystemExit(code)


def _session(
    access: Any,
    nodes: list[str],
    get: tuple[str, str] | None,
    put: tuple[str, str] | None,
    cmd: str,
) -> int:
    """Do the one thing asked on the chosen nodes; the exit code for the CLI."""
    from launcher.ssh import run_on_all

    conns = access.connections
    if get:
        remote, local = get
        for node in nodes:
            target = Path(local, node) if len(nodes) > 1 else Path(local)
            copied = _get(conns[node], remote, target)
            click.echo(f"{node}: {remote} -> {copied}", err=True)
        return 0
    if put:
        local, remote = put
        for node in nodes:
            where = _put(conns[node], Path(local), remote, node)
            click.echo(f"{node}: {local} -> {where}", err=True)
        return 0
    piped = sys.stdin is not None and not sys.stdin.isatty()
    if not cmd and not piped:
        return exit_code(conns[nodes[0]].shell(command=INTERACTIVE_SHELL))
    if not cmd:  # as ssh(1): no terminal here, so a shell without a pty reads stdin
        click.echo("ssh: stdin is not a terminal: running a shell without a pty", err=True)
        cmd = "exec /bin/bash"
    cmd = with_task_env(cmd)
    if len(nodes) > 1:
        results = run_on_all(conns, cmd, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)
        failed = {n: r for n, r in results.items() if not r.ok}
        if failed:
            listing = ", ".join(f"{n} (exit {exit_code(r.exit_code)})" for n, r in failed.items())
            click.echo(f"ssh: {len(failed)} of {len(results)} nodes failed: {listing}", err=True)
        return max((exit_code(r.exit_code) for r in failed.values()), default=0)
    stdin = sys.stdin.buffer if piped else None
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def write(stream: Any) -> Any:
        def sink(data: bytes) -> None:
            stream.write(data)
            stream.flush()

        return sink

    return exit_code(conns[nodes[0]].stream(cmd, write(out), write(err), stdin=stdin))


def _get(conn: Any, remote: str, local: Path) -> Path:
    """A remote file to `local` (a file, or into it when it is a directory); a tree to `local`."""
    try:
        is_dir = stat.S_ISDIR(conn.sftp.stat(remote).st_mode or 0)
    except FileNotFoundError:
        raise UserError(f"ssh --get: {remote}: no such file or directory on the node") from None
    except OSError as exc:
        raise UserError(f"ssh --get: {remote}: {exc}") from None
    if is_dir:
        conn.get_dir(remote, local)
        return local
    return Path(conn.get(remote, local))


def _put(conn: Any, local: Path, remote: str, node: str) -> str:
    if local.is_dir():
        conn.put_dir(local, remote)
        return remote
    if not local.is_file():
        raise UserError(f"ssh --put: {local}: no such file or directory")
    _check_remote_parent(conn, remote, node)
    return str(conn.put(local, remote))


def _check_remote_parent(conn: Any, remote: str, node: str) -> None:
    """A file goes to `remote` (or into it, if a directory): its parent must exist, and the
    error says which directory is missing rather than that the file is."""

    def is_dir(path: str) -> bool | None:
        try:
            return stat.S_ISDIR(conn.sftp.stat(path).st_mode or 0)
        except FileNotFoundError:
            return None
        except OSError:
            return True  # not ours to judge (permissions): let the copy report it

    if is_dir(remote):
        return
    parent = str(PurePosixPath(remote).parent)
    found = is_dir(parent)
    if found is None:
        raise UserError(
            f"ssh --put: {parent}: no such directory on node {node} (remote paths "
            f"on the emulator are rooted at the node's directory); create it with "
            f"`batchlaunch ssh PARAMS --node ID -- mkdir -p {shlex.quote(parent)}` or put "
            "the file into an existing directory"
        )
    if found is False:
        raise UserError(f"ssh --put: {parent} on node {node} is not a directory")
