"""launcher.envelope and launcher.remote_errors without a runner process: task-level facts
(preemption, time limit, missing upload) and what the exceptions carry."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from launcher import envelope, runners
from launcher.pickling import dumps_args, dumps_function
from launcher.remote_errors import (
    NodePreempted,
    PythonVersionMismatch,
    RemoteError,
    ResultMissing,
    TaskCrashed,
    TaskTimedOut,
)
from launcher.runners import run_python as rp

from .node import run_python_task


def test_no_result_maps_batch_facts_to_specific_exceptions(tmp_path: Path) -> None:
    absent = tmp_path / "result.pkl"
    cases = [
        ({"preempted": True, "exit_code": None}, NodePreempted, "preempted"),
        ({"timed_out": True, "exit_code": 137}, TaskTimedOut, "wall-clock limit"),
        ({"exit_code": 0}, ResultMissing, "result.pkl never arrived"),
        ({"exit_code": None}, ResultMissing, "fileuploaderr.txt"),
        ({"exit_code": -11}, TaskCrashed, "SIGSEGV"),
        ({"exit_code": 1}, TaskCrashed, "exit code 1"),
    ]
    for facts, kind, text in cases:
        outcomes = envelope.task_outcomes(
            "python", absent, expected=2, stderr_tail="MemoryError\n", log_location="L", **facts
        )  # type: ignore[arg-type]
        assert len(outcomes) == 2 and outcomes[0].error is not outcomes[1].error
        for outcome in outcomes:
            with pytest.raises(kind, match=text) as info:
                outcome.result()
            assert "logs: L" in str(info.value)


def test_json_language_uses_result_json(tmp_path: Path) -> None:
    [outcome] = envelope.task_outcomes("r", None, expected=1, exit_code=0)
    with pytest.raises(ResultMissing, match=r"result\.json"):
        outcome.result()
    assert envelope.result_file("julia") == envelope.RESULT_JSON
    assert envelope.args_file("python") == envelope.ARGS_PICKLE


def test_unreadable_result_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "result.pkl"
    bad.write_bytes(b"garbage")
    [outcome] = envelope.task_outcomes("python", bad, expected=1, exit_code=0)
    with pytest.raises(ResultMissing, match="unreadable"):
        outcome.result()


def test_exceptions_survive_pickling_with_their_fields() -> None:
    crash = TaskCrashed("died", log_location="L", exit_code=3, stderr_tail="tail")
    again = pickle.loads(pickle.dumps(crash))
    assert type(again) is TaskCrashed and str(again) == str(crash) and again.exit_code == 3
    remote = RemoteError("simpleError", "boom", "1: f()", "L", "r")
    again_remote = pickle.loads(pickle.dumps(remote))
    assert str(again_remote) == str(remote) and again_remote.language == "r"
    mismatch = PythonVersionMismatch("versions differ")
    assert isinstance(pickle.loads(pickle.dumps(mismatch)), PythonVersionMismatch)


def test_keyboard_interrupt_raised_by_the_function_is_an_error_not_a_stop(
    tmp_path: Path,
) -> None:
    def interrupt(x: int) -> int:
        if x == 0:
            raise KeyboardInterrupt("user code raised it")
        return x

    from launcher.pickling import dumps_chunk

    calls: list[tuple[tuple[int], dict[str, int]]] = [((0,), {}), ((5,), {})]
    run = run_python_task(tmp_path, "ki", dumps_function(interrupt), dumps_chunk(calls))
    assert run.exit_code == 0
    first, second = run.outcomes("python", expected=2)
    with pytest.raises(RemoteError, match="KeyboardInterrupt: user code raised it"):
        first.result()
    assert second.result() == 5


def test_runner_resource_and_command_line() -> None:
    source = runners.runner_bytes("python")
    assert source == Path(rp.__file__).read_bytes()
    assert runners.runner_bytes("r").startswith(b"#!/usr/bin/env Rscript")
    assert runners.runner_bytes("julia").startswith(b"#!/usr/bin/env julia")
    command = runners.command_line(
        "python", function_file="function-ab.pkl", args_file="args.pkl", out_file="result.pkl"
    )
    assert command == (
        "python3 run_python.py --function function-ab.pkl --args args.pkl --out result.pkl"
    )
    with pytest.raises(ValueError, match="unknown function language"):
        runners.runner_file("fortran")
    with pytest.raises(ValueError, match="function_file"):
        runners.command_line("python", args_file="a", out_file="o")


def test_envelope_header_is_checked(tmp_path: Path) -> None:
    not_result = tmp_path / "x.pkl"
    not_result.write_bytes(dumps_args((1,)))
    with pytest.raises(ValueError, match="not a batchlaunch result"):
        envelope.read_python_result(not_result)
