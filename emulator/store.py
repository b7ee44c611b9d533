"""Durable state: one SQLite database (WAL) in the state dir, written in batches.

The in-memory objects are the truth while the service runs; every change marks the object
dirty and a flush (a few times a second, and at shutdown) writes all dirty objects in one
transaction. No per-change fsync: a crash loses at most the last flush interval, and a task
whose completion was lost is simply requeued and run again on restart.
"""

from __future__ import annotations

import json
import marshal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KINDS = ("pool", "node", "job", "task")
#: (kind, key, body): body is the marshalled snapshot, None to delete the row.
Row = tuple[str, str, bytes | None]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects (kind TEXT, key TEXT, body TEXT, "
            "PRIMARY KEY (kind, key))"
        )
        self._dirty: dict[tuple[str, str], Callable[[], dict[str, Any]] | None] = {}
        self._write_lock = threading.Lock()
        # Rows taken but not yet committed: a cancelled background write must not lose them.
        self._unwritten: list[list[Row]] = []

    def mark(self, kind: str, key: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Remember that `key` changed; `snapshot()` is called at flush time."""
        self._dirty[(kind, key)] = snapshot

    def forget(self, kind: str, key: str) -> None:
        self._dirty[(kind, key)] = None

    def has_pending(self) -> bool:
        return bool(self._dirty)

    def take(self) -> list[Row]:
        """Serialise the dirty set (on the service's thread, so the snapshot is consistent)."""
        dirty, self._dirty = self._dirty, {}
        rows: list[Row] = []
        for (kind, key), snap in dirty.items():
            rows.append((kind, key, None if snap is None else marshal.dumps(snap())))
        self._unwritten.append(rows)
        return rows

    def write(self, rows: list[Row]) -> None:
        """Apply serialised rows in one transaction (may run on a worker thread)."""
        if not rows:
            return
        with self._write_lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO objects (kind, key, body) VALUES (?, ?, ?)",
                    [r for r in rows if r[2] is not None],
                )
                self._db.executemany(
                    "DELETE FROM objects WHERE kind = ? AND key = ?",
                    [(k, key) for k, key, body in rows if body is None],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._unwritten = [batch for batch in self._unwritten if batch is not rows]

    def flush(self) -> None:
        """Write everything not yet committed, oldest first, in one transaction."""
        self.take()
        with self._write_lock:
            batches, self._unwritten = self._unwritten, []
        latest: dict[tuple[str, str], Row] = {}
        for batch in batches:
            for row in batch:
                latest[(row[0], row[1])] = row
        self.write(list(latest.values()))

    def load(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        cursor = self._db.execute(
            "SELECT key, body FROM objects WHERE kind = ? ORDER BY rowid", (kind,)
        )
        for key, body in cursor:
            # marshal (4-5x faster to write than JSON: the flush runs on the service's
            # thread); rows from older state dirs are JSON text.
            yield key, marshal.loads(body) if isinstance(body, bytes) else json.loads(body)

    def close(self) -> None:
        with self._write_lock:
            self._db.close()
