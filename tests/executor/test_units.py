"""Executor pieces that need no server: task options, R/Julia function handles, task-id
buckets (what the completed-task query filters on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import julia, r
from launcher.errors import UserError
from launcher.executor import TaskOptions, _bucket


def test_task_options_merge_and_validate() -> None:
    base = TaskOptions().merged(timeout_minutes=5)
    assert base.merged(max_retries=2) == TaskOptions(timeout_minutes=5, max_retries=2)
    with pytest.raises(TypeError, match="unknown task option 'timeout'"):
        base.merged(timeout=3)
    with pytest.raises(ValueError, match="> 0"):
        base.merged(timeout_minutes=0)


def test_foreign_function_handles(tmp_path: Path) -> None:
    model = tmp_path / "model.R"
    model.write_text("f <- function(x) x\n")
    handle = r(model, "f")
    assert handle.language == "r" and handle.source == model.resolve()
    assert repr(handle) == f"r({str(model.resolve())!r}, 'f')"
    with pytest.raises(TypeError, match="runs on the pool only"):
        handle(1)
    with pytest.raises(UserError, match="source file not found"):
        julia(tmp_path / "missing.jl", "f")
    with pytest.raises(UserError, match="not a valid r function name"):
        r(model, "f; system('rm')")
    jl = tmp_path / "model.jl"
    jl.write_text("step!(x) = x\n")
    assert julia(jl, "step!").name == "step!"


def test_task_ids_share_buckets_of_100() -> None:
    assert _bucket("t0000100") == _bucket("t0000199") == "t00001"
    assert _bucket("t0000200") != _bucket("t0000199")
