"""Many nodes at once: `run_on_all` and the ``[node-id] line`` prefixer of ``--all-nodes``."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from launcher.errors import UserError
from launcher.ssh.connection import Connection, Result


class LinePrefixer:
    """Writes ``[PREFIX] line`` for each complete line fed to it.

    Chunks arrive cut anywhere; a partial line waits for its end (or `flush`). The lock is
    shared by all prefixers writing to one stream, so lines of different nodes never mix.
    """

    def __init__(self, prefix: str, sink: BinaryIO, lock: threading.Lock | None = None) -> None:
        self.prefix = f"[{prefix}] ".encode()
        self.sink = sink
        self.lock = lock if lock is not None else threading.Lock()
        self._partial = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self._write(data[:cut])

    def flush(self) -> None:
        """Write a pending unterminated line (with a newline added)."""
        if self._partial:
            pending, self._partial = self._partial, b""
            self._write(pending + b"\n")

    def _write(self, lines: bytes) -> None:
        text = b"".join(self.prefix + line for line in lines.splitlines(keepends=True))
        with self.lock:
            self.sink.write(text)
            self.sink.flush()


def run_on_all(
    connections: Mapping[str, Connection],
    cmd: str,
    max_workers: int = 8,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> dict[str, Result]:
    """Run `cmd` on every node (keys: node ids) in parallel; one `Result` per node.

    With `stdout`/`stderr` streams, output is also written live, each line prefixed with
    ``[node-id]``. A node that cannot be reached does not stop the others: its Result has
    exit code 255 and `error` set to the one-line reason (also written to `stderr`).
    """
    out_lock, err_lock = threading.Lock(), threading.Lock()

    def one(node_id: str, conn: Connection) -> Result:
        out_chunks: list[bytes] = []
        err_chunks: list[bytes] = []
        out_p = LinePrefixer(node_id, stdout, out_lock) if stdout is not None else None
        err_p = LinePrefixer(node_id, stderr, err_lock) if stderr is not None else None

        def on_out(data: bytes) -> None:
            out_chunks.append(data)
            if out_p is not None:
                out_p.feed(data)

        def on_err(data: bytes) -> None:
            err_chunks.append(data)
            if err_p is not None:
                err_p.feed(data)

        try:
            code = conn.stream(cmd, on_out, on_err, env=env, timeout=timeout)
        except UserError as exc:
            message = str(exc)
            on_err(message.encode() + b"\n")
            return Result(255, b"".join(out_chunks), b"".join(err_chunks), error=message)
        finally:
            for p in (out_p, err_p):
                if p is not None:
                    p.flush()
        return Result(code, b"".join(out_chunks), b"".join(err_chunks))

    if not connections:
        return {}
    workers = max(1, min(max_workers, len(connections)))
    with ThreadPoolExecutor(workers, thread_name_prefix="ssh-all") as pool:
        futures = {node: pool.submit(one, node, conn) for node, conn in connections.items()}
        return {node: fut.result() for node, fut in futures.items()}
