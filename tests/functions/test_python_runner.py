"""run_python.py executed as a node runs it (subprocess, task dir, AZ_BATCH_* vars, no
batchlaunch and no user files on its sys.path), read back with launcher.envelope."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from launcher import envelope
from launcher.pickling import dumps_args, dumps_chunk, dumps_function
from launcher.remote_errors import (
    PythonVersionMismatch,
    RemoteError,
    ResultUnreadable,
    TaskCrashed,
    TaskTimedOut,
)
from launcher.runners import run_python as rp

from .node import finish, run_python_task, start_python_task


def one(outcomes: list[envelope.Outcome]) -> envelope.Outcome:
    assert len(outcomes) == 1
    return outcomes[0]


def test_closure_capturing_local_state(tmp_path: Path) -> None:
    table = {"a": 10, "b": 20}
    factor = 7

    def weighted(key: str, extra: int = 0) -> int:
        return table[key] * factor + extra

    run = run_python_task(
        tmp_path, "t1", dumps_function(weighted), dumps_args(("b",), {"extra": 1})
    )
    assert run.exit_code == rp.EXIT_OK, run.stderr
    assert envelope.read_python_result(run.result).result() == 141
    assert one(run.outcomes("python")).result() == 141


def test_function_from_local_module_not_on_the_node(tmp_path: Path, userlib: ModuleType) -> None:
    run = run_python_task(
        tmp_path, "t2", dumps_function(userlib.scaled), dumps_args((4,), {"offset": 2})
    )
    assert run.exit_code == 0, run.stderr
    assert one(run.outcomes("python")).result() == (4 + 1) * 3 + 2


def test_kwargs_only_and_defaults(tmp_path: Path) -> None:
    def f(a: int, /, b: int = 2, *, c: int, **rest: int) -> tuple[int, int, int, dict[str, int]]:
        return a, b, c, rest

    run = run_python_task(tmp_path, "t3", dumps_function(f), dumps_args((1,), {"c": 3, "z": 9}))
    assert one(run.outcomes("python")).result() == (1, 2, 3, {"z": 9})


def test_chunk_with_one_failing_item_keeps_the_others(tmp_path: Path) -> None:
    def inverse(x: float) -> float:
        return 1 / x

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((x,), {}) for x in (1, 2, 0, 4)]
    run = run_python_task(tmp_path, "t4", dumps_function(inverse), dumps_chunk(calls))
    assert run.exit_code == 0
    outcomes = run.outcomes("python", expected=4)
    assert [o.ok for o in outcomes] == [True, True, False, True]
    assert [outcomes[i].result() for i in (0, 1, 3)] == [1.0, 0.5, 0.25]
    with pytest.raises(ZeroDivisionError) as info:
        outcomes[2].result()
    text = "".join(traceback.format_exception(info.value))
    assert "remote traceback" in text and "in inverse" in text and "return 1 / x" in text
    assert str(run.wd.parent / "stderr.txt") in text  # the log location
    assert "call 2 raised ZeroDivisionError" in run.stderr  # visible in the task's logs


def test_value_error_comes_back_as_itself_with_remote_traceback(tmp_path: Path) -> None:
    def parse(text: str) -> int:
        return int(text)

    run = run_python_task(tmp_path, "t5", dumps_function(parse), dumps_args(("x1",)))
    outcome = one(run.outcomes("python"))
    with pytest.raises(ValueError, match="invalid literal") as info:
        outcome.result()
    assert info.value.args == ("invalid literal for int() with base 10: 'x1'",)
    cause = info.value.__cause__
    assert cause is not None and "in parse" in str(cause) and "return int(text)" in str(cause)
    assert "run_python.py" not in str(cause).split("in parse")[0].splitlines()[-1]


def test_custom_exception_from_local_module_is_the_same_class(
    tmp_path: Path, userlib: ModuleType
) -> None:
    run = run_python_task(tmp_path, "t6", dumps_function(userlib.fails), dumps_args((5,)))
    with pytest.raises(userlib.CustomError, match="bad input 5") as info:
        one(run.outcomes("python")).result()
    assert "in fails" in str(info.value.__cause__)


def test_unpicklable_exception_becomes_remote_error(tmp_path: Path, userlib: ModuleType) -> None:
    run = run_python_task(
        tmp_path, "t7", dumps_function(userlib.fails_unpicklable), dumps_args((8,))
    )
    with pytest.raises(RemoteError) as info:
        one(run.outcomes("python")).result()
    err = info.value
    assert err.type_name.endswith("Unpicklable")
    assert err.message == "holds a lock, input 8"
    assert "fails_unpicklable" in err.traceback
    message = str(err)
    assert "Unpicklable: holds a lock, input 8" in message
    assert "remote python traceback" in message and "in fails_unpicklable" in message
    assert "stderr.txt" in message


def test_exception_that_does_not_unpickle_becomes_remote_error(tmp_path: Path) -> None:
    class TwoArgs(Exception):
        def __init__(self, a: str, b: str) -> None:  # pickles, but cannot be rebuilt
            super().__init__(f"{a}/{b}")

    def boom() -> None:
        raise TwoArgs("left", "right")

    run = run_python_task(tmp_path, "t8", dumps_function(boom), dumps_args())
    with pytest.raises(RemoteError, match="TwoArgs: left/right"):
        one(run.outcomes("python")).result()


def test_system_exit_does_not_stop_the_client(tmp_path: Path) -> None:
    def leave() -> None:
        sys.exit(4)

    run = run_python_task(tmp_path, "t9", dumps_function(leave), dumps_args())
    assert run.exit_code == 0
    with pytest.raises(RemoteError) as info:
        one(run.outcomes("python")).result()
    assert info.value.type_name == "SystemExit" and info.value.message == "4"


def test_none_result_is_a_real_none_and_failures_are_never_none(tmp_path: Path) -> None:
    def nothing() -> None:
        return None

    run = run_python_task(tmp_path, "t10", dumps_function(nothing), dumps_args())
    outcome = one(run.outcomes("python"))
    assert outcome.ok and outcome.result() is None
    missing = envelope.task_outcomes("python", None, expected=3, exit_code=0)
    assert all(not o.ok and o.error is not None for o in missing)


def test_python_minor_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    def f() -> int:
        return 1

    header, body = rp.unpack(dumps_function(f))
    forged = rp.pack({**header, "python": "3.99.1"}, body)
    run = run_python_task(tmp_path, "t11", forged, dumps_args())
    assert run.exit_code == 0, run.stderr  # an envelope was written, not a crash
    with pytest.raises(PythonVersionMismatch) as info:
        one(run.outcomes("python")).result()
    message = str(info.value)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert "Python 3.99.1 on the client" in message and f"Python {here}." in message
    assert '[runtime] version = "' + here + '"' in message


def test_result_that_does_not_unpickle_on_the_client(tmp_path: Path) -> None:
    def node_only_value() -> object:
        import sys
        import types

        module = types.ModuleType("node_only_pkg")
        exec("class Thing:\n    pass\n", module.__dict__)
        sys.modules["node_only_pkg"] = module
        return module.Thing()

    run = run_python_task(tmp_path, "t12", dumps_function(node_only_value), dumps_args())
    with pytest.raises(ResultUnreadable, match="node_only_pkg"):
        one(run.outcomes("python")).result()


def test_runner_crash_without_result_raises_task_crashed(tmp_path: Path) -> None:
    def die() -> None:
        import os
        import sys

        sys.stderr.write("about to die: segfault-like exit\n")
        sys.stderr.flush()
        os._exit(3)

    run = run_python_task(tmp_path, "t13", dumps_function(die), dumps_args())
    assert run.exit_code == 3 and not run.result.exists()
    with pytest.raises(TaskCrashed) as info:
        one(run.outcomes("python")).result()
    assert info.value.exit_code == 3
    assert "about to die: segfault-like exit" in str(info.value)
    assert "exit code 3" in str(info.value) and "stderr.txt" in str(info.value)


def test_sigterm_keeps_finished_items_and_times_out_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "started"

    def slow(x: int) -> int:
        import pathlib
        import time

        if x == 2:
            pathlib.Path(str(marker)).touch()
            time.sleep(60)
        return x * 10

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((x,), {}) for x in range(4)]
    proc, wd = start_python_task(tmp_path, "t14", dumps_function(slow), dumps_chunk(calls))
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)  # what a wall-clock limit or terminate does
    run = finish(proc, wd, envelope.RESULT_PICKLE)
    assert run.exit_code == 128 + signal.SIGTERM
    outcomes = run.outcomes("python", expected=4, timed_out=True)
    assert [o.result() for o in outcomes[:2]] == [0, 10]
    for outcome in outcomes[2:]:
        with pytest.raises(TaskTimedOut, match="wall-clock limit"):
            outcome.result()


def test_usage_error_and_foreign_payload(tmp_path: Path) -> None:
    def f() -> int:
        return 1

    run = run_python_task(tmp_path, "t15", b"not a payload", dumps_args())
    assert run.exit_code == 0
    with pytest.raises(RemoteError, match="BadPayload"):
        one(run.outcomes("python")).result()
    crashed = envelope.task_outcomes("python", tmp_path / "absent.pkl", expected=1, exit_code=137)
    with pytest.raises(TaskCrashed, match="SIGKILL"):
        crashed[0].result()


def test_node_without_cloudpickle_gets_a_clear_error(tmp_path: Path) -> None:
    def f() -> int:
        return 1

    proc, wd = start_python_task(tmp_path, "t16", dumps_function(f), dumps_args())
    run = finish(proc, wd, envelope.RESULT_PICKLE)
    assert run.exit_code == 0
    # the same runner on a node whose Python lacks cloudpickle (no PYTHONPATH, -S)
    argv = [
        sys.executable,
        "-S",
        rp.__file__,
        "--function",
        str(next(wd.glob("function-*"))),
        "--args",
        str(wd / envelope.ARGS_PICKLE),
        "--out",
        str(wd / "bare.pkl"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    bare = subprocess.run(argv, cwd=wd, env=env, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0, bare.stderr
    with pytest.raises(RemoteError, match="cloudpickle is not installed"):
        envelope.read_python_result(wd / "bare.pkl").result()


def test_runner_parses_as_python_3_8(repo_root: Path) -> None:
    """Older node Pythons must reach the version check, not die on syntax."""
    import ast

    ast.parse((repo_root / "launcher/runners/run_python.py").read_text(), feature_version=(3, 8))
