"""Run records: what `status`, `collect`, `logs` and a resumed `run` need to find a run again.

A run is one Batch job whose id is the run id. The record (JSON under
``paths.runs_dir()``) keeps the parameter file's absolute path, so later commands reach the
same endpoint and storage with the same credentials from the environment; it holds no
secrets and no SAS URLs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher import paths
from launcher.errors import UserError

if TYPE_CHECKING:
    from launcher.client import Client
    from launcher.params import Params

_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_run_id(run_id: str) -> str:
    """Run ids are Batch job ids: 1-64 letters, digits, hyphens, underscores."""
    if not _RUN_ID.fullmatch(run_id):
        raise UserError(f"run id {run_id!r}: expected 1-64 letters, digits, hyphens or underscores")
    return run_id


def new_run_id(job_id: str, now: datetime | None = None) -> str:
    """``JOB-YYYYMMDD-HHMMSS``: sortable, readable, and a valid Batch job id."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{job_id[: 64 - len(stamp) - 1]}-{stamp}"


@dataclass
class RunRecord:
    """Where a run lives: its job, pool, parameter file, storage prefix and output dir."""

    run_id: str
    job_id: str
    pool_id: str
    params_path: str
    out_dir: str
    storage_prefix: str
    task_count: int = 0
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    pool_created_by_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return record_path(self.run_id)

    def save(self) -> Path:
        """Write atomically, so a run killed mid-write leaves the previous record intact."""
        target = self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)
        return target

    def load_params(self) -> Params:
        from launcher.params import load_params

        return load_params(Path(self.params_path))

    def client(self) -> Client:
        from launcher.client import Client

        return Client(self.load_params())


def record_path(run_id: str) -> Path:
    return paths.runs_dir() / f"{check_run_id(run_id)}.json"


def load_run(run_id: str) -> RunRecord:
    """The record of ``run_id``, or a `UserError` that lists the most recent runs."""
    target = record_path(run_id)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        recent = ", ".join(r.run_id for r in list_runs()[:5]) or "none yet"
        raise UserError(
            f"run {run_id!r}: no record in {target.parent}; recent runs: {recent}"
            " (start one with `batchlaunch run PARAMS`)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{target}: unreadable run record: {exc}") from None
    known = {f for f in RunRecord.__dataclass_fields__}
    return RunRecord(**{k: v for k, v in data.items() if k in known})


def list_runs() -> list[RunRecord]:
    """All recorded runs, newest first."""
    folder = paths.runs_dir()
    records = []
    for entry in folder.glob("*.json") if folder.is_dir() else []:
        try:
            records.append(load_run(entry.stem))
        except UserError:
            continue
    return sorted(records, key=lambda r: r.created_at, reverse=True)
