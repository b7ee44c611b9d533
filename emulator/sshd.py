"""The emulator's SSH endpoint: what a node's sshd is to a real Batch node.

One paramiko server on loopback serves every node of every pool. Node users created through
the Batch API (``POST .../nodes/NODE/users``) log in with the public key they were created
with; the login name says which node the session is on (the launcher creates one name per
node). Expired and deleted users, and every password, are refused.

On a session: ``exec`` runs ``/bin/sh -c CMD`` in the node's directory with the node's
``AZ_BATCH_*`` environment (stdout, stderr and the exit status kept apart); ``pty`` +
``shell`` runs an interactive bash on a pseudo-terminal (window changes honoured); the
``sftp`` subsystem is rooted at the node's directory. SFTP paths are node-relative (``/``
is the node root) and the node root's real path is accepted too, so a path printed by a
command on the node (``$AZ_BATCH_TASK_DIR/...``) can be copied; nothing outside the node
directory can be reached, through ``..`` or through symlinks.

The endpoint reads the service's state only on the service's asyncio loop (see
`service_resolver`), because everything else runs in paramiko's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import posixpath
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_PERMISSION_DENIED

if TYPE_CHECKING:
    from emulator.service import Service

log = logging.getLogger("emulator.sshd")
logging.getLogger("paramiko").addHandler(logging.NullHandler())

HOST_KEY_FILE = "ssh_host_ed25519_key"
LOOPBACK = "127.0.0.1"
# A node accepts logins once it has booted (a failed start task is exactly when users look).
LOGIN_STATES = frozenset(
    {"idle", "running", "starttaskfailed", "waitingforstarttask", "offline", "unusable"}
)
_CHUNK = 32768


@dataclass(frozen=True)
class NodeLogin:
    """A node user as the endpoint needs it: where its node lives and which key it holds."""

    pool_id: str
    node_id: str
    user: str
    root: Path
    env: Mapping[str, str]
    public_key: str | None  # "ssh-ed25519 AAAA... [comment]"
    expiry: datetime | None

    def accepts(self, key: paramiko.PKey, now: datetime) -> bool:
        if self.expiry is not None and self.expiry <= now:
            log.info("ssh: user %s on %s/%s has expired", self.user, self.pool_id, self.node_id)
            return False
        parts = (self.public_key or "").split()
        return len(parts) >= 2 and (parts[0], parts[1]) == (key.get_name(), key.get_base64())

    def session_env(self, term: str | None = None) -> dict[str, str]:
        env = dict(self.env)
        env.update(USER=self.user, LOGNAME=self.user, SHELL="/bin/bash")
        if term:
            env["TERM"] = term
        return env


#: login name -> the nodes that have a user of that name (usually one).
Resolver = Callable[[str], list[NodeLogin]]


def _parse_expiry(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)  # unreadable: treat as expired
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def service_resolver(service: Service, loop: asyncio.AbstractEventLoop) -> Resolver:
    """Look users up in `service` on its own loop (the only thread that mutates it)."""

    async def find(name: str) -> list[NodeLogin]:
        found = []
        for pool in list(service.pools.values()):
            for node in list(pool.nodes.values()):
                user = node.users.get(name)
                if user is None or node.state not in LOGIN_STATES or not node.root.is_dir():
                    continue
                found.append(
                    NodeLogin(
                        pool_id=pool.id,
                        node_id=node.id,
                        user=name,
                        root=node.root,
                        env=service._node_env(node),
                        public_key=user.get("sshPublicKey"),
                        expiry=_parse_expiry(user.get("expiryTime")),
                    )
                )
        return found

    def resolve(name: str) -> list[NodeLogin]:
        try:
            return asyncio.run_coroutine_threadsafe(find(name), loop).result(timeout=10)
        except Exception:  # the loop is shutting down: nobody can log in
            log.exception("ssh: user lookup failed")
            return []

    return resolve


def load_host_key(state_dir: Path) -> paramiko.Ed25519Key:
    """The endpoint's host key, generated once and kept (0600) in the state dir, so clients
    that remember it (trust on first use) see the same key after a restart."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = state_dir / HOST_KEY_FILE
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f"{HOST_KEY_FILE}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, path)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class SshEndpoint:
    """``SshEndpoint(state_dir, port=0)`` binds at once (so the port is known), then
    ``start(resolver)`` serves until ``stop()``."""

    def __init__(self, state_dir: Path, port: int = 0, host: str = LOOPBACK) -> None:
        if host not in (LOOPBACK, "::1", "localhost"):
            raise ValueError(f"the emulator's SSH endpoint listens on loopback only, not {host}")
        self.host_key = load_host_key(state_dir)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(128)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._resolve: Resolver = lambda name: []
        self._transports: set[paramiko.Transport] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, resolve: Resolver) -> None:
        self._resolve = resolve
        self._thread = threading.Thread(target=self._accept, name="emulator-sshd", daemon=True)
        self._thread.start()

    def active(self) -> bool:
        """Whether a session is open (an idle daemon must not exit under a user's shell)."""
        with self._lock:
            return any(t.is_active() for t in self._transports)

    def stop(self) -> None:
        """Stop accepting, end the sessions and kill what they started."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            transports, procs = list(self._transports), list(self._procs)
        for proc in procs:
            _kill_group(proc)
        for transport in transports:
            transport.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- connections -----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # interactive shells
            # key exchange blocks: one slow client must not hold up the next one
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._negotiate(sock)
        except Exception as exc:  # a broken client must not stop the endpoint
            log.info("ssh: could not start a session: %s", exc)
            sock.close()

    def _negotiate(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(self.host_key)
        server = _Server(self, transport)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, RootedSftp)
        with self._lock:
            self._transports = {t for t in self._transports if t.is_active()}
            self._transports.add(transport)
        transport.start_server(server=server)  # negotiation continues in paramiko's thread

    def _track(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)

    def _untrack(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)


@dataclass
class _Pty:
    term: str
    cols: int
    rows: int
    master: int | None = None


@dataclass
class _Session:
    pty: _Pty | None = None
    started: bool = False


class _Server(paramiko.ServerInterface):
    """One SSH connection: key-only auth against the node users, then session channels."""

    def __init__(self, endpoint: SshEndpoint, transport: paramiko.Transport) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.logins: dict[str, NodeLogin] = {}
        self.sessions: dict[int, _Session] = {}

    @property
    def login(self) -> NodeLogin:
        """The node user this connection authenticated as."""
        return self.logins[self.transport.get_username() or ""]

    # -- auth ------------------------------------------------------------------------------
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        """paramiko verifies the signature itself; here: is this key this user's, now?"""
        now = datetime.now(UTC)
        matches = [n for n in self.endpoint._resolve(username) if n.accepts(key, now)]
        if len(matches) != 1:  # none, or one name on several nodes with the same key
            return AUTH_FAILED
        self.logins[username] = matches[0]
        return AUTH_SUCCESSFUL

    # -- channels --------------------------------------------------------------------------
    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind != "session":
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.sessions[chanid] = _Session()
        return OPEN_SUCCEEDED

    def check_channel_pty_request(
        self,
        channel: paramiko.Channel,
        term: bytes | str,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
        modes: bytes,
    ) -> bool:
        name = term.decode() if isinstance(term, bytes) else term
        self._session(channel).pty = _Pty(name or "xterm", width or 80, height or 24)
        return True

    def check_channel_window_change_request(
        self,
        channel: paramiko.Channel,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
    ) -> bool:
        pty = self._session(channel).pty
        if pty is None:
            return False
        pty.cols, pty.rows = width, height
        if pty.master is not None:
            _set_winsize(pty.master, pty.cols, pty.rows)  # the kernel sends SIGWINCH
        return True

    def check_channel_env_request(
        self, channel: paramiko.Channel, name: bytes, value: bytes
    ) -> bool:
        return False  # as OpenSSH without AcceptEnv: clients export variables in the command

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self._start(channel, None)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return self._start(channel, command.decode("utf-8", errors="surrogateescape"))

    def _session(self, channel: paramiko.Channel) -> _Session:
        return self.sessions.setdefault(channel.get_id(), _Session())

    def _start(self, channel: paramiko.Channel, command: str | None) -> bool:
        session = self._session(channel)
        if session.started:
            return False
        session.started = True
        login = self.login
        target = _run_pty if session.pty is not None else _run_pipes
        threading.Thread(
            target=_guarded,
            args=(target, self.endpoint, channel, login, command, session.pty),
            name=f"ssh-{login.node_id}",
            daemon=True,
        ).start()
        return True


def _guarded(
    target: Callable[..., None],
    endpoint: SshEndpoint,
    channel: paramiko.Channel,
    login: NodeLogin,
    command: str | None,
    pty: _Pty | None,
) -> None:
    try:
        target(endpoint, channel, login, command, pty)
    except (OSError, EOFError, paramiko.SSHException) as exc:  # the client went away
        log.info("ssh: session on %s/%s ended: %s", login.pool_id, login.node_id, exc)
    except Exception:
        log.exception("ssh: session on %s/%s failed", login.pool_id, login.node_id)
        with contextlib.suppress(Exception):
            channel.close()


def _argv(command: str | None, interactive: bool) -> list[str]:
    """A command goes to ``sh -c`` (as sshd runs it with the user's shell); a shell
    request gets bash, interactive on a pty, else reading commands from stdin."""
    if command is not None:
        return ["/bin/sh", "-c", command]
    return ["/bin/bash", "--noprofile", "--norc", *(["-i"] if interactive else [])]


def _run_pipes(
    endpoint: SshEndpoint,
    channel: paramiko.Channel,
    login: NodeLogin,
    command: str | None,
    pty: _Pty | None,
) -> None:
    """exec without a pty: stdout and stderr on their own streams, then the exit status."""
    proc = subprocess.Popen(
        _argv(command, interactive=False),
        cwd=login.root,
        env=login.session_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    endpoint._track(proc)
    try:
        assert proc.stdin and proc.stdout and proc.stderr
        hangup = functools.partial(_kill_group, proc, signal.SIGHUP)
        out = threading.Thread(
            target=_copy_out, args=(proc.stdout, channel.sendall, hangup), daemon=True
        )
        err = threading.Thread(
            target=_copy_out, args=(proc.stderr, channel.sendall_stderr, hangup), daemon=True
        )
        feed = threading.Thread(target=_copy_in, args=(channel, proc.stdin), daemon=True)
        for t in (out, err, feed):
            t.start()
        out.join()
        err.join()
        code = proc.wait()
    finally:
        endpoint._untrack(proc)
    _finish(channel, code)


def _run_pty(
    endpoint: SshEndpoint,
    channel: paramiko.Channel,
    login: NodeLogin,
    command: str | None,
    pty: _Pty | None,
) -> None:
    """A shell (or command) on a pseudo-terminal that is the child's controlling tty."""
    assert pty is not None
    master, slave = os.openpty()
    _set_winsize(master, pty.cols, pty.rows)
    env = login.session_env(pty.term)
    env.setdefault("PS1", f"{login.user}@{login.node_id}:\\W\\$ ")
    try:
        proc = subprocess.Popen(
            _argv(command, interactive=True),
            cwd=login.root,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=_controlling_tty,  # setsid + TIOCSCTTY only: safe after fork
        )
    finally:
        os.close(slave)
    pty.master = master
    endpoint._track(proc)
    stop = threading.Event()
    hangup = functools.partial(_kill_group, proc, signal.SIGHUP)
    feed = threading.Thread(target=_copy_to_fd, args=(channel, master, stop, hangup), daemon=True)
    feed.start()
    connected = True
    try:
        while True:  # until the slave side is closed by every process that had it
            try:
                data = os.read(master, _CHUNK)
            except OSError:  # EIO: no process holds the terminal any more
                break
            if not data:
                break
            if connected:
                try:
                    channel.sendall(data)
                except (OSError, EOFError, paramiko.SSHException):
                    connected = False  # the client is gone: hang up, drain until EIO
                    hangup()
        code = proc.wait()
    finally:
        stop.set()
        endpoint._untrack(proc)
        pty.master = None
        os.close(master)
    _finish(channel, code)


def _controlling_tty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _finish(channel: paramiko.Channel, code: int) -> None:
    """Exit status, then EOF and close; a child killed by a signal gets no status (the
    client sees -1), as OpenSSH sends exit-signal instead."""
    with contextlib.suppress(Exception):
        if code >= 0:
            channel.send_exit_status(code)
        channel.shutdown_write()
        channel.close()


def _copy_out(pipe: Any, send: Callable[[bytes], None], hangup: Callable[[], None]) -> None:
    """Child output to the client; if the client is gone, hang up on the child and drain
    its output so it cannot block on a full pipe."""
    connected = True
    with contextlib.suppress(OSError):
        while data := pipe.read1(_CHUNK):
            if not connected:
                continue
            try:
                send(data)
            except (OSError, EOFError, paramiko.SSHException):
                connected = False
                hangup()
    pipe.close()


def _copy_in(channel: paramiko.Channel, pipe: Any) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while data := channel.recv(_CHUNK):
            pipe.write(data)
            pipe.flush()
    with contextlib.suppress(OSError):
        pipe.close()


def _copy_to_fd(
    channel: paramiko.Channel, fd: int, stop: threading.Event, hangup: Callable[[], None]
) -> None:
    """Client keystrokes to the pty; the client closing its side is a hangup (SIGHUP)."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while not stop.is_set():
            ready, _, _ = select.select([channel], [], [], 0.5)
            if not ready:
                continue
            data = channel.recv(_CHUNK)
            if not data:
                if not stop.is_set():
                    hangup()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# ------------------------------------------------------------------------------ SFTP
class _Handle(paramiko.SFTPHandle):
    filename: str
    readfile: Any
    writefile: Any

    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        try:
            paramiko.SFTPServer.set_file_attr(self.filename, attr)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        return SFTP_OK


class _Escape(Exception):
    """A path that would leave the node directory."""


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _Escape:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class RootedSftp(paramiko.SFTPServerInterface):
    """SFTP confined to one node's directory: ``/`` is the node root."""

    def __init__(self, server: _Server, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.root = server.login.root.resolve()

    # -- paths -----------------------------------------------------------------------------
    def virtual(self, path: str) -> str:
        """The node-relative absolute form of a client path."""
        real = str(self.root)
        if path == real or path.startswith(real + "/"):
            path = path[len(real) :] or "/"
        return posixpath.normpath(posixpath.join("/", path)).replace("//", "/")

    def local(self, path: str, follow: bool = True) -> str:
        """Where `path` is on this machine; `_Escape` if it (or, with `follow`, what its
        symlinks point to) is outside the node directory."""
        virtual = self.virtual(path)
        local = os.path.join(self.root, virtual.lstrip("/")) if virtual != "/" else str(self.root)
        check = local if follow else os.path.dirname(local) if virtual != "/" else local
        resolved = os.path.realpath(check)
        if resolved != str(self.root) and not resolved.startswith(str(self.root) + os.sep):
            raise _Escape(path)
        return local

    def canonicalize(self, path: str) -> str:
        return self.virtual(path)

    # -- operations ------------------------------------------------------------------------
    @_errors
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        folder = self.local(path)
        out = []
        for name in os.listdir(folder):
            attr = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(folder, name)))
            attr.filename = name
            out.append(attr)
        return out

    @_errors
    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        return paramiko.SFTPAttributes.from_stat(os.stat(self.local(path)))

    @_errors
    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        return paramiko.SFTPAttributes.from_stat(os.lstat(self.local(path, follow=False)))

    @_errors
    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _Handle | int:
        local = self.local(path)
        mode = getattr(attr, "st_mode", None)
        fd = os.open(local, flags, mode if mode is not None else 0o666)
        if (flags & os.O_CREAT) and attr is not None:
            attr._flags &= ~attr.FLAG_PERMISSIONS  # type: ignore[attr-defined]
            paramiko.SFTPServer.set_file_attr(local, attr)
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        handle = _Handle(flags)
        handle.filename = local
        handle.readfile = handle.writefile = os.fdopen(fd, fmode)
        return handle

    @_errors
    def remove(self, path: str) -> int:
        os.remove(self.local(path, follow=False))
        return SFTP_OK

    @_errors
    def rename(self, oldpath: str, newpath: str) -> int:
        old, new = self.local(oldpath, follow=False), self.local(newpath, follow=False)
        if os.path.exists(new):
            return SFTP_FAILURE
        os.rename(old, new)
        return SFTP_OK

    @_errors
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        os.replace(self.local(oldpath, follow=False), self.local(newpath, follow=False))
        return SFTP_OK

    @_errors
    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        local = self.local(path, follow=False)
        os.mkdir(local)
        if attr is not None:
            paramiko.SFTPServer.set_file_attr(local, attr)
        return SFTP_OK

    @_errors
    def rmdir(self, path: str) -> int:
        os.rmdir(self.local(path, follow=False))
        return SFTP_OK

    @_errors
    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        paramiko.SFTPServer.set_file_attr(self.local(path), attr)
        return SFTP_OK

    @_errors
    def symlink(self, target_path: str, path: str) -> int:
        """Only links that stay inside the node (stored relative to the node's real root)."""
        link = self.local(path, follow=False)
        target = self.local(posixpath.join(posixpath.dirname(self.virtual(path)), target_path))
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
        return SFTP_OK

    @_errors
    def readlink(self, path: str) -> str | int:
        local = self.local(path, follow=False)
        target = os.path.realpath(os.path.join(os.path.dirname(local), os.readlink(local)))
        if target != str(self.root) and not target.startswith(str(self.root) + os.sep):
            return SFTP_PERMISSION_DENIED
        rel = os.path.relpath(target, self.root)
        return "/" if rel == "." else "/" + rel.replace(os.sep, "/")
