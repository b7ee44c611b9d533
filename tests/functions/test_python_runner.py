"""run_python.py executed as a node runs it (subprocess, task dir, AZ_BATCH_* vars, no
batchlaunch and no user files on its sys.path), read back with launcher.envelope."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest

from launcher import envelope, runners
from launcher.pickling import dumps_args, dumps_chunk, dumps_function
from launcher.remote_errors import (
    PayloadLoadError,
    PythonVersionMismatch,
    RemoteError,
    ResultUnreadable,
    TaskCrashed,
    TaskTimedOut,
)
from launcher.runners import run_python as rp

from .node import (
    STALE_MISSING,
    STALE_VERSION,
    finish,
    run_python_task,
    stale_cloudpickle_site,
    start_python_task,
)


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


def where_is_cloudpickle() -> tuple[str, str, int]:
    """Run on the node: which cloudpickle the runner imported, and whether site was off."""
    import sys

    module = sys.modules["cloudpickle"]
    return module.__version__, str(module.__file__), sys.flags.no_site


def test_node_python_without_cloudpickle_uses_the_shipped_zip(tmp_path: Path) -> None:
    # `python -S`, no PYTHONPATH: the node's Python has no cloudpickle at all
    check = subprocess.run(
        [sys.executable, "-S", "-c", "import cloudpickle"], env={}, capture_output=True
    )
    assert check.returncode != 0
    run = run_python_task(tmp_path, "t16", dumps_function(where_is_cloudpickle), dumps_args())
    assert run.exit_code == 0, run.stderr
    version, file, no_site = one(run.outcomes("python")).result()
    assert version == cloudpickle.__version__ and no_site == 1
    assert file.startswith(str(run.wd / runners.CLOUDPICKLE_ZIP) + os.sep)
    header, _ = rp.unpack(run.result.read_bytes())
    assert header["cloudpickle"] == cloudpickle.__version__  # the result says so too


def test_shipped_zip_wins_over_another_installed_version(tmp_path: Path) -> None:
    site = stale_cloudpickle_site(tmp_path)
    run = run_python_task(
        tmp_path, "t17", dumps_function(where_is_cloudpickle), dumps_args(), site=site
    )
    assert run.exit_code == 0, run.stderr
    version, file, _ = one(run.outcomes("python")).result()
    assert version == cloudpickle.__version__ != STALE_VERSION
    assert runners.CLOUDPICKLE_ZIP in file and str(site) not in file


def test_another_version_without_the_zip_keeps_the_runners_hint(tmp_path: Path) -> None:
    """What used to reach the client as a bare AttributeError: a load error whose message
    says what failed to load and why, with the versions on both sides."""
    site = stale_cloudpickle_site(tmp_path)
    run = run_python_task(
        tmp_path, "t18", dumps_function(where_is_cloudpickle), dumps_args(), bundle=False, site=site
    )
    assert run.exit_code == 0, run.stderr
    outcomes = run.outcomes("python", expected=2)
    for outcome in outcomes:  # every call of the task gets it
        with pytest.raises(PayloadLoadError) as info:
            outcome.result()
        err = info.value
        assert isinstance(err, RemoteError) and not isinstance(err, AttributeError)
        assert err.type_name == "AttributeError" and STALE_MISSING in err.message
        text = str(err)
        assert "while loading the function" in text
        assert f"cloudpickle {cloudpickle.__version__}" in text  # the client's
        assert f"cloudpickle {STALE_VERSION} (installed: {site / 'cloudpickle'})" in text
        assert "remote python traceback" in text and "stderr.txt" in text
    assert "nothing ran" in run.stderr and STALE_MISSING in run.stderr


def test_module_missing_on_the_node_names_it(tmp_path: Path, userlib: ModuleType) -> None:
    payload = dumps_function(userlib.scaled, by_reference=[userlib.__name__])
    run = run_python_task(tmp_path, "t19", payload, dumps_args((1,)))
    with pytest.raises(PayloadLoadError) as info:
        one(run.outcomes("python")).result()
    text = str(info.value)
    assert info.value.type_name == "ModuleNotFoundError"
    assert f"module {userlib.__name__!r} is not importable on the node" in text
    assert "[runtime] packages" in text and "(shipped by the client)" in text


def test_node_without_any_cloudpickle_gets_a_clear_error(tmp_path: Path) -> None:
    run = run_python_task(
        tmp_path, "t20", dumps_function(where_is_cloudpickle), dumps_args(), bundle=False
    )
    assert run.exit_code == 0, run.stderr
    with pytest.raises(RemoteError, match="cloudpickle cannot be imported") as info:
        one(run.outcomes("python")).result()
    assert runners.CLOUDPICKLE_ZIP in str(info.value)


def test_cloudpickle_zip_is_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    data = runners.cloudpickle_zip()
    code = (
        "import hashlib, sys; from launcher.runners import cloudpickle_zip; "
        "sys.stdout.write(hashlib.sha256(cloudpickle_zip()).hexdigest())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert other.stdout == hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names == sorted(names) and "cloudpickle/cloudpickle.py" in names
        assert not [n for n in names if n.endswith(".pyc")]
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_runner_parses_as_python_3_8(repo_root: Path) -> None:
    """Older node Pythons must reach the version check, not die on syntax."""
    import ast

    ast.parse((repo_root / "launcher/runners/run_python.py").read_text(), feature_version=(3, 8))
