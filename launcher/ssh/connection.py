"""`Connection`: one SSH session to one node, in the style of fabric, on paramiko.

Opens lazily (constructing one costs nothing, so the CLI can build one per node and only
pay for those it uses), memoizes its SFTP client, keeps stdout and stderr apart, and turns
every failure a user can act on (auth refused, connection refused, timeout, changed host
key) into a one-line `UserError`.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import shlex
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, BinaryIO

import paramiko

from launcher.errors import UserError
from launcher.ssh.hostkeys import HostKeyStore, address_name, check_host_id
from launcher.ssh.keys import read_private_file

# paramiko logs transport-thread errors that we also raise as one-line UserErrors; without
# a handler Python's last-resort handler would print those tracebacks on the terminal.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 65536

Stdin = bytes | str | BinaryIO | None
OnBytes = Callable[[bytes], object]


@dataclass(frozen=True)
class Result:
    """What a remote command did. `exit_code` is -1 when the server sent no exit status
    (the command was killed by a signal); `error` is set only by `run_on_all` for a node
    that could not be reached (then `exit_code` is 255, as with ssh(1))."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _AuthRefused(Exception):
    """Login refused (retried by `Connection._connect` while `auth_retry` lasts)."""


class CommandTimeout(UserError):
    """A remote command ran longer than its `timeout`."""


class Connection:
    """An SSH connection to one node, opened on first use.

    `host_id` is ``POOL/NODE``: host keys are remembered per host id *and* address (see
    `launcher.ssh.hostkeys`). `known_hosts` is a `HostKeyStore` or a path to its file
    (default ``ssh_dir()/known_hosts``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key_path: str | os.PathLike[str],
        *,
        host_id: str,
        known_hosts: HostKeyStore | str | os.PathLike[str] | None = None,
        connect_timeout: float = 15.0,
        keepalive: int = 30,
        auth_retry: float = 0.0,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.user = user
        self.key_path = Path(key_path)
        self.host_id = check_host_id(host_id)
        self.known_hosts = (
            known_hosts
            if isinstance(known_hosts, HostKeyStore)
            else HostKeyStore(Path(known_hosts) if known_hosts is not None else None)
        )
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.auth_retry = auth_retry
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def address(self) -> str:
        return address_name(self.host, self.port)

    @property
    def is_open(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def __repr__(self) -> str:
        return f"Connection({self.user}@{self.host_id} at {self.address})"

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> paramiko.SSHClient:
        """Connect and authenticate now (otherwise the first operation does it).

        A connection whose transport died (a node rebooted) is opened afresh."""
        with self._lock:
            if self._client is not None and self.is_open:
                return self._client
            self.close()
            self._client = self._connect()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
            if self._client is not None:
                self._client.close()
                self._client = None

    def _connect(self) -> paramiko.SSHClient:
        """Connect once; or, with `auth_retry`, retry refused logins for that many seconds.

        A node user just created through the Batch API can take a few seconds to reach the
        node's sshd, so the launcher retries logins right after creating one."""
        deadline = time.monotonic() + self.auth_retry
        delay = 0.25
        while True:
            try:
                return self._connect_once()
            except _AuthRefused as exc:
                if time.monotonic() + delay > deadline:
                    raise UserError(str(exc)) from None
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    def _connect_once(self) -> paramiko.SSHClient:
        read_private_file(self.key_path)  # refuse a key others can read, before loading it
        try:
            pkey = paramiko.PKey.from_path(self.key_path)
        except (paramiko.SSHException, ValueError) as exc:
            raise UserError(f"{self.key_path}: cannot load ssh private key: {exc}") from exc
        client = paramiko.SSHClient()
        for entry in self.known_hosts.lookup(self.host_id, self.address):
            client.get_host_keys().add(self.address, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(self.known_hosts.policy(self.host_id))
        where = f"node {self.host_id} at {self.host}:{self.port}"
        try:
            client.connect(
                self.host,
                self.port,
                username=self.user,
                pkey=pkey,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            known = self.known_hosts.lookup(self.host_id, self.address)
            raise self.known_hosts.changed_error(
                self.host_id, self.address, exc.key, known[0] if known else None
            ) from None
        except UserError:
            client.close()
            raise
        except paramiko.AuthenticationException:
            client.close()
            raise _AuthRefused(
                f"ssh: {where} refused user {self.user!r} with key {self.key_path} "
                "(key-only login; the node user may have expired or been deleted: "
                "run `batchlaunch ssh` again to create a fresh one)"
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise UserError(
                f"ssh: connection to {where} refused (is the node running and its "
                "remote login settings current? see `batchlaunch pool show PARAMS`)"
            ) from None
        except TimeoutError:
            client.close()
            raise UserError(
                f"ssh: connection to {where} timed out after {self.connect_timeout:g} s"
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise UserError(
                f"ssh: cannot resolve {self.host!r} for node {self.host_id}: {exc}"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport = client.get_transport()
            greeted = transport is not None and bool(transport.remote_version)
            client.close()
            if not greeted:  # paramiko reports a silent server in several ways: all mean this
                raise UserError(
                    f"ssh: connection to {where} timed out: no SSH greeting within "
                    f"{self.connect_timeout:g} s"
                ) from None
            text = str(exc) or type(exc).__name__
            raise UserError(f"ssh: cannot connect to {where}: {text}") from None
        transport = client.get_transport()
        if transport is not None and self.keepalive:
            transport.set_keepalive(self.keepalive)
        return client

    def _transport(self) -> paramiko.Transport:
        transport = self.open().get_transport()
        if transport is None:  # pragma: no cover - open() guarantees an active transport
            raise UserError(f"ssh: connection to node {self.host_id} lost")
        return transport

    @contextmanager
    def _lost(self, what: str) -> Iterator[None]:
        """Turn transport failures mid-operation into one clear line."""
        try:
            yield
        except UserError:
            raise
        except (paramiko.SSHException, EOFError, ConnectionError, TimeoutError) as exc:
            raise UserError(
                f"ssh: {what} on node {self.host_id} failed: {exc or type(exc).__name__}"
            ) from None

    # -- commands --------------------------------------------------------------------------
    def run(
        self,
        cmd: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stdin: Stdin = None,
    ) -> Result:
        """Run `cmd` (through the remote user's login shell, as ssh(1) does) and wait."""
        out: list[bytes] = []
        err: list[bytes] = []
        code = self.stream(cmd, out.append, err.append, env=env, timeout=timeout, stdin=stdin)
        return Result(code, b"".join(out), b"".join(err))

    def stream(
        self,
        cmd: str,
        on_stdout: OnBytes,
        on_stderr: OnBytes,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stdin: Stdin = None,
    ) -> int:
        """Run `cmd`, handing output chunks to the callbacks as they arrive; the exit code.

        For long commands (`logs --follow`, `--all-nodes`): nothing is buffered here.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lost(f"running {cmd!r}"):
            chan = self._transport().open_session(timeout=self.connect_timeout)
            try:
                chan.exec_command(with_env(cmd, env))
                feeder = _feed_stdin(chan, stdin)
                finished = _pump(chan, on_stdout, on_stderr, deadline)
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not (finished and chan.status_event.wait(remaining)):
                    raise CommandTimeout(
                        f"ssh: {cmd!r} on node {self.host_id} did not finish within {timeout:g} s"
                    )
                if feeder is not None:
                    feeder.join(timeout=1)
                return chan.recv_exit_status()
            finally:
                chan.close()

    def shell(
        self,
        stdin: IO[bytes] | IO[str] | None = None,
        stdout: IO[bytes] | IO[str] | None = None,
        command: str | None = None,
    ) -> int:
        """An interactive login shell (or `command`) on a pty; returns the remote exit status.

        The local terminal is put in raw mode (so Ctrl-C, Ctrl-Z, arrows go to the remote),
        window size changes (SIGWINCH) are passed on, and the terminal is restored after.
        """
        from launcher.ssh.shell import interactive

        with self._lost("interactive shell"):
            return interactive(self._transport(), stdin or sys.stdin, stdout or sys.stdout, command)

    # -- files -------------------------------------------------------------------------------
    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP client of this connection, opened once and reused."""
        with self._lock:
            if self._sftp is None or not self.is_open:
                transport = self._transport()
                with self._lost("opening SFTP"):
                    client = paramiko.SFTPClient.from_transport(transport)
                if client is None:
                    raise UserError(f"ssh: node {self.host_id} refused the SFTP subsystem")
                self._sftp = client
            return self._sftp

    def get(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy one remote file here; into `local` if that is a directory. Returns the path."""
        dest = Path(local)
        if dest.is_dir():
            dest = dest / PurePosixPath(remote).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._sftp_errors(remote):
            self.sftp.get(remote, str(dest))
        return dest

    def put(self, local: str | os.PathLike[str], remote: str) -> str:
        """Copy one local file to the node (into `remote` if that is a directory), keeping
        its permission bits. Returns the remote path."""
        src = Path(local)
        if not src.is_file():
            raise UserError(f"ssh: {src} is not a file (use put_dir for directories)")
        with self._sftp_errors(remote):
            sftp = self.sftp
            if _remote_is_dir(sftp, remote):
                remote = str(PurePosixPath(remote) / src.name)
            sftp.put(str(src), remote)
            sftp.chmod(remote, stat.S_IMODE(src.stat().st_mode))
        return remote

    def get_dir(
        self,
        remote: str,
        local: str | os.PathLike[str],
        *,
        max_workers: int = 4,
        on_file: Callable[[str, Path], object] | None = None,
    ) -> list[Path]:
        """Copy the remote tree `remote` to `local` (created), files in parallel."""
        root = PurePosixPath(remote)
        pairs: list[tuple[str, Path]] = []
        with self._sftp_errors(remote):
            for rel in _walk_remote(self.sftp, root, PurePosixPath()):
                pairs.append((str(root / rel), Path(local, *rel.parts)))
        Path(local).mkdir(parents=True, exist_ok=True)
        return self.get_many(pairs, max_workers=max_workers, on_file=on_file)

    def put_dir(self, local: str | os.PathLike[str], remote: str) -> list[str]:
        """Copy the local tree `local` to `remote` (created); returns the remote files."""
        src = Path(local)
        if not src.is_dir():
            raise UserError(f"ssh: {src} is not a directory")
        done: list[str] = []
        with self._sftp_errors(remote):
            sftp = self.sftp
            _remote_mkdirs(sftp, remote)
            for dirpath, dirnames, filenames in os.walk(src):
                rel = Path(dirpath).relative_to(src)
                target = PurePosixPath(remote, *rel.parts)
                for d in sorted(dirnames):
                    _remote_mkdirs(sftp, str(target / d))
                for name in sorted(filenames):
                    path = Path(dirpath, name)
                    if not path.is_file():
                        continue
                    dest = str(target / name)
                    sftp.put(str(path), dest)
                    sftp.chmod(dest, stat.S_IMODE(path.stat().st_mode))
                    done.append(dest)
        return done

    def get_many(
        self,
        pairs: Iterable[tuple[str, str | os.PathLike[str]]],
        *,
        max_workers: int = 4,
        on_file: Callable[[str, Path], object] | None = None,
    ) -> list[Path]:
        """Copy many (remote, local) files over parallel SFTP channels of this connection.

        For `collect --via ssh`: `on_file(remote, local)` is called after each file (from
        worker threads), e.g. to advance a progress bar.
        """
        items = [(r, Path(p)) for r, p in pairs]
        if not items:
            return []
        todo: queue.Queue[tuple[str, Path]] = queue.Queue()
        for item in items:
            todo.put(item)
        failed = threading.Event()  # one failure stops the other workers taking more files
        transport = self._transport()

        def worker() -> None:
            with self._lost("opening SFTP"):
                sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise UserError(f"ssh: node {self.host_id} refused the SFTP subsystem")
            try:
                while not failed.is_set():
                    try:
                        remote, local = todo.get_nowait()
                    except queue.Empty:
                        return
                    local.parent.mkdir(parents=True, exist_ok=True)
                    with self._sftp_errors(remote):
                        sftp.get(remote, str(local))
                    if on_file is not None:
                        on_file(remote, local)
            except BaseException:
                failed.set()
                raise
            finally:
                sftp.close()

        workers = max(1, min(max_workers, len(items)))
        with ThreadPoolExecutor(workers, thread_name_prefix="sftp") as pool:
            for fut in [pool.submit(worker) for _ in range(workers)]:
                fut.result()
        return [local for _, local in items]

    @contextmanager
    def _sftp_errors(self, remote: str) -> Iterator[None]:
        try:
            with self._lost(f"copying {remote}"):
                yield
        except FileNotFoundError:
            raise UserError(
                f"ssh: {remote}: no such file or directory on node {self.host_id}"
            ) from None
        except PermissionError:
            raise UserError(f"ssh: {remote}: permission denied on node {self.host_id}") from None
        except OSError as exc:
            raise UserError(
                f"ssh: {remote} on node {self.host_id}: {exc.strerror or exc}"
            ) from None


def with_env(cmd: str, env: Mapping[str, str] | None) -> str:
    """Prefix `cmd` with ``export NAME='value' ...;``.

    Not SSH ``env`` requests: OpenSSH only accepts the names in its AcceptEnv (on Debian and
    Batch images just LANG and LC_*) and silently drops the rest. Names are validated and
    values quoted, so nothing in `env` can inject shell syntax."""
    if not env:
        return cmd
    for name in env:
        if not _ENV_NAME.match(name):
            raise UserError(f"ssh: environment variable name {name!r} is not valid")
    assigns = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    return f"export {assigns}; {cmd}"


def _feed_stdin(chan: paramiko.Channel, stdin: Stdin) -> threading.Thread | None:
    """Send stdin from a thread (a big input must not block reading the output), then EOF."""
    if stdin is None:
        chan.shutdown_write()
        return None

    def feed() -> None:
        try:
            if isinstance(stdin, str | bytes):
                chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            else:
                while chunk := stdin.read(_CHUNK):
                    chan.sendall(chunk)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited without reading all of its input, as with a pipe

    thread = threading.Thread(target=feed, name="ssh-stdin", daemon=True)
    thread.start()
    return thread


def _pump(
    chan: paramiko.Channel, on_stdout: OnBytes, on_stderr: OnBytes, deadline: float | None
) -> bool:
    """Hand stdout and stderr chunks to their callbacks until the remote closes both
    (True), or until `deadline` (False)."""
    while True:
        progressed = False
        if chan.recv_ready():
            on_stdout(chan.recv(_CHUNK))
            progressed = True
        if chan.recv_stderr_ready():
            on_stderr(chan.recv_stderr(_CHUNK))
            progressed = True
        if progressed:
            continue
        if chan.eof_received or chan.closed:
            return True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        select.select([chan], [], [], 1.0 if deadline is None else min(1.0, deadline - now))


def safe_remote_name(name: str, parent: PurePosixPath) -> str:
    """A name listed by the server, refused if it could step out of the local target
    (``..``, a slash): a compromised node must not write outside the download dir."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UserError(f"ssh: refusing unsafe file name {name!r} listed in {parent} by the node")
    return name


def _remote_is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except FileNotFoundError:
        return False


def _remote_mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
    parts = PurePosixPath(path)
    for p in [*reversed(parts.parents), parts]:
        if str(p) in ("/", ".", "") or _remote_is_dir(sftp, str(p)):
            continue
        sftp.mkdir(str(p))


def _walk_remote(
    sftp: paramiko.SFTPClient, root: PurePosixPath, rel: PurePosixPath
) -> Iterator[PurePosixPath]:
    """Regular files under root (symlinks to files followed, to directories not: no loops)."""
    for attr in sorted(sftp.listdir_attr(str(root / rel)), key=lambda a: a.filename):
        child = rel / safe_remote_name(attr.filename, root / rel)
        mode = attr.st_mode or 0
        if stat.S_ISLNK(mode):
            try:
                mode = sftp.stat(str(root / child)).st_mode or 0
            except FileNotFoundError:
                continue
            if stat.S_ISREG(mode):
                yield child
        elif stat.S_ISDIR(mode):
            yield from _walk_remote(sftp, root, child)
        elif stat.S_ISREG(mode):
            yield child
