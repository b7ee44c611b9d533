"""Serving the API: the uvicorn process behind `emulator serve`, and a test/embedding helper.

`serve(settings)` binds first (so `--port 0` knows its port before anything prints), runs
until SIGINT/SIGTERM, then kills child process groups and writes the final state.
`start_emulator(...)` runs that in a subprocess, keeping the client's GIL free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.config import DEFAULT_ACCOUNT, DEFAULT_KEY, Settings

ENDPOINT_FILE = "endpoint.json"
HEALTH_PATH = "/emulator-health"


@dataclass(frozen=True)
class EmulatorInfo:
    """How a client reaches one emulator."""

    endpoint: str
    account: str = DEFAULT_ACCOUNT
    key: str = DEFAULT_KEY
    pid: int | None = None
    state_dir: Path | None = None


class _Health:
    """Unauthenticated liveness probe in front of the Batch app (used by the daemon helper)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await self.app(scope, receive, send)


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a caught SIGTERM after shutdown; we exit 0 after a clean stop."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    return Server


class OldGenerationCollector:
    """Collect Python's oldest GC generation when the service is idle, not mid-request.

    A full collection scans every tracked object: with 100,000 tasks held that is ~150 ms
    during which no request is answered, and CPython starts one whenever the heap has grown
    by a quarter, i.e. in the middle of bulk submissions. The young generations stay
    automatic (cheap, and they catch most cycles); the old one is collected after a second
    without requests, or every `max_interval` seconds under constant load.
    """

    def __init__(self, idle_after: float = 1.0, max_interval: float = 300.0) -> None:
        self.idle_after = idle_after
        self.max_interval = max_interval
        self.last = time.monotonic()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000_000_000)

    def tick(self, last_request: float) -> bool:
        """Collect if due; True when it did."""
        now = time.monotonic()
        if gc.get_count()[2] == 0:  # nothing promoted to the old generation since the last one
            return False
        idle = now - last_request >= self.idle_after
        if not idle and now - self.last < self.max_interval:
            return False
        gc.collect()
        self.last = time.monotonic()
        return True


def serve(settings: Settings, announce: Any = None) -> None:
    """Run the service until a signal; print `BATCH_ENDPOINT=...` once ready."""
    import uvicorn

    from emulator.api import BatchApp
    from emulator.service import Service
    from emulator.sshd import SshEndpoint, service_resolver

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.state_dir / "serve.lock", "w")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"error: another emulator is serving {settings.state_dir}; stop it first"
        ) from None
    # proto=IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted
    # sockets whose proto says TCP. With Nagle on, a response written as headers then body
    # waits for the client's delayed ACK: ~40 ms per request on a kept-alive connection.
    sock = socket.socket(
        socket.AF_INET6 if ":" in settings.host else socket.AF_INET,
        socket.SOCK_STREAM,
        socket.IPPROTO_TCP,
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(1024)
    settings.port = sock.getsockname()[1]
    ssh = SshEndpoint(settings.state_dir, settings.ssh_port)  # before Service: nodes get its port
    settings.remote_login_port = ssh.port
    service = Service(settings)
    app = BatchApp(service, settings)
    config = uvicorn.Config(
        _Health(app),
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_keep_alive=30,
        backlog=1024,
    )
    server = _server_class()(config)
    endpoint = f"http://{settings.host}:{settings.port}"

    async def watch() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        info = {"endpoint": endpoint, "pid": os.getpid(), "account": settings.account}
        path = settings.state_dir / ENDPOINT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
        (announce or _print)(f"BATCH_ENDPOINT={endpoint}")
        collector = OldGenerationCollector()
        while not server.should_exit:
            await asyncio.sleep(0.5)
            collector.tick(app.last_request)
            idle = settings.idle_timeout
            busy = service.busy() or ssh.active()
            if idle and time.monotonic() - app.last_request > idle and not busy:
                server.should_exit = True

    async def main() -> None:
        watcher = asyncio.get_running_loop().create_task(watch())
        ssh.start(service_resolver(service, asyncio.get_running_loop()))
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            ssh.stop()
            with contextlib.suppress(FileNotFoundError):
                data = json.loads((settings.state_dir / ENDPOINT_FILE).read_text())
                if data.get("pid") == os.getpid():
                    (settings.state_dir / ENDPOINT_FILE).unlink()

    try:
        asyncio.run(main())
    finally:
        lock.close()


def _print(line: str) -> None:
    print(line, flush=True)


def command(settings: Settings) -> list[str]:
    """The `python -m emulator serve` command line for these settings."""
    argv = [
        sys.executable,
        "-m",
        "emulator",
        "serve",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--state-dir",
        str(settings.state_dir),
        "--account",
        settings.account,
        "--key",
        settings.key,
        "--fault-rate",
        str(settings.fault_rate),
        "--throttle-rate",
        str(settings.throttle_rate),
        "--time-scale",
        str(settings.time_scale),
        "--preempt-rate",
        str(settings.preempt_rate),
        "--latency-ms",
        str(settings.latency_ms),
        "--remote-login-port",
        str(settings.remote_login_port),
        "--ssh-port",
        str(settings.ssh_port),
    ]
    if settings.seed is not None:
        argv += ["--seed", str(settings.seed)]
    if settings.idle_timeout is not None:
        argv += ["--idle-timeout", str(settings.idle_timeout)]
    return argv


def _repo_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@contextlib.contextmanager
def start_emulator(
    state_dir: Path | None = None, *, timeout: float = 30.0, **knobs: Any
) -> Iterator[EmulatorInfo]:
    """Run an emulator subprocess on 127.0.0.1 (port 0) for the duration of the block.

    `knobs` are Settings fields (fault_rate, throttle_rate, seed, time_scale, preempt_rate, ...).
    """
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="batch-emulator-"))
            )
        settings = Settings(state_dir=Path(state_dir), **knobs)
        proc = subprocess.Popen(
            command(settings), stdout=subprocess.PIPE, stderr=None, text=True, env=_repo_env()
        )
        try:
            endpoint = _read_endpoint(proc, timeout)
            yield EmulatorInfo(endpoint, settings.account, settings.key, proc.pid, Path(state_dir))
        finally:
            stop_process(proc)


def _read_endpoint(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"emulator exited with code {proc.wait()} before it was ready")
        if line.startswith("BATCH_ENDPOINT="):
            return line.strip().split("=", 1)[1]
    raise RuntimeError("emulator did not become ready in time")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM (clean shutdown: children killed, state saved), then SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
