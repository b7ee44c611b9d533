"""run.R and run.jl: one CLI, one JSON envelope, read by launcher.envelope.

CASES is the conformance table both runners must satisfy: run.R is executed for real
(Rscript + jsonlite); run.jl cannot run here (no Julia binary), so it is checked statically
and through `julia_envelope`, a mirror of the envelope run.jl builds, fed to the same reader.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from launcher import envelope, runners
from launcher.pickling import dumps_json_args, dumps_json_chunk
from launcher.remote_errors import RemoteError, TaskCrashed

from ..conftest import unavailable
from .node import TaskRun, run_json_task

MODELS = Path(__file__).parent / "models"
RUNNERS = Path(runners.__file__).parent


@dataclass(frozen=True)
class Case:
    """One call (or chunk) and what every runner's envelope must say about it."""

    name: str
    function: str
    calls: list[tuple[list[Any], dict[str, Any]]]
    chunk: bool = False
    # per call: ("ok", value) or ("error", message fragment, traceback fragment)
    expect: list[tuple[Any, ...]] = field(default_factory=list)
    error_type: dict[str, str] = field(default_factory=dict)  # language -> type name


CASES = [
    Case("ok_scalar", "add", [([2, 3], {})], expect=[("ok", 5)]),
    Case(
        "ok_kwargs_exact_double",
        "scale",
        [([3], {"factor": 0.1})],
        expect=[("ok", 0.30000000000000004)],
    ),
    Case("ok_vector", "series", [([3], {"step": 1})], expect=[("ok", [1.5, 2.5, 3.5])]),
    Case("ok_object", "describe", [([2, "x"], {})], expect=[("ok", {"n": 2, "label": "x"})]),
    Case(
        "error_with_traceback",
        "square",
        [([-1], {})],
        expect=[("error", "negative input: -1", "inner")],
        error_type={"r": "simpleError", "julia": "ErrorException"},
    ),
    Case(
        "missing_function",
        "no_such_function",
        [([1], {})],
        expect=[("error", "defines no function `no_such_function`", "no_such_function")],
        error_type={"r": "FunctionNotFound", "julia": "FunctionNotFound"},
    ),
    Case(
        "chunk_one_failing",
        "square",
        [([4], {}), ([-1], {}), ([9], {})],
        chunk=True,
        expect=[("ok", 16), ("error", "negative input: -1", "inner"), ("ok", 81)],
        error_type={"r": "simpleError", "julia": "ErrorException"},
    ),
]


def args_payload(case: Case) -> bytes:
    if case.chunk:
        return dumps_json_chunk([(a, k) for a, k in case.calls])
    [(args, kwargs)] = case.calls
    return dumps_json_args(args, kwargs)


def check_envelope(doc: dict[str, Any], case: Case, language: str, runner: str) -> None:
    """The raw JSON: the keys and statuses every runner writes."""
    for key in envelope.JSON_METADATA_KEYS:
        assert key in doc, f"{runner} envelope lacks {key!r}"
    assert doc[envelope.KEY_RUNNER] == runner and doc[envelope.KEY_LANGUAGE] == language
    if case.name == "missing_function":
        assert doc[envelope.KEY_STATUS] == envelope.STATUS_ERROR
        items = [doc]
    elif case.chunk:
        assert doc[envelope.KEY_STATUS] == envelope.STATUS_CHUNK
        items = doc[envelope.KEY_OUTCOMES]
    else:
        items = [doc]
    for item, expected in zip(items, case.expect, strict=False):
        assert item[envelope.KEY_STATUS] == expected[0]
        if expected[0] == "error":
            for key in envelope.JSON_ERROR_KEYS:
                assert isinstance(item[key], str), (runner, key)
            assert item[envelope.KEY_TYPE] == case.error_type[language]


def check_outcomes(path: Path, case: Case, language: str) -> None:
    """What the futures resolve to, via the client-side reader."""
    outcomes = envelope.read_json_results(path, expected=len(case.calls), log_location="LOGS")
    assert len(outcomes) == len(case.expect)
    for outcome, expected in zip(outcomes, case.expect, strict=True):
        if expected[0] == "ok":
            value = outcome.result()
            assert value == expected[1] and type(value) is type(expected[1])
        else:
            with pytest.raises(RemoteError) as info:
                outcome.result()
            err = info.value
            assert err.type_name == case.error_type[language]
            assert expected[1] in err.message and expected[2] in err.traceback
            assert err.language == language
            assert expected[1] in str(err) and "LOGS" in str(err)


@pytest.fixture(scope="module")
def rscript() -> str:
    path = shutil.which("Rscript")
    if path is None:
        unavailable("Rscript not installed (apt-get install r-base-core r-cran-jsonlite)")
    assert path is not None
    return path


def run_r(root: Path, rscript: str, task: str, function: str, payload: bytes) -> TaskRun:
    return run_json_task(root, "r", task, MODELS / "model.R", function, payload, rscript)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_r_runner_conformance(tmp_path: Path, rscript: str, case: Case) -> None:
    run = run_r(tmp_path, rscript, case.name, case.function, args_payload(case))
    assert run.exit_code == 0, run.stderr
    check_envelope(json.loads(run.result.read_text()), case, "r", "run.R")
    check_outcomes(run.result, case, "r")


def test_r_numbers_round_trip_exactly(tmp_path: Path, rscript: str) -> None:
    values = [0.1 + 0.2, 1 / 3, 1e-300, 2.0**53 + 2, -0.0, 123456.789e10, 5e-324, 7]
    run = run_r(tmp_path, rscript, "nums", "identity_value", dumps_json_args([values]))
    assert envelope.read_json_result(run.result).result() == values
    # NA / NULL / non-finite results have one JSON spelling: null
    run = run_r(tmp_path, rscript, "null", "nothing", dumps_json_args())
    assert envelope.read_json_result(run.result).result() is None


def test_r_kwargs_become_named_arguments(tmp_path: Path, rscript: str) -> None:
    payload = dumps_json_args([[1, 2, 3]], {"b": "text", "c": [True, False]})
    run = run_r(tmp_path, rscript, "kw", "lengths_of", payload)
    assert envelope.read_json_result(run.result).result() == [3, 1, 2]


def test_r_error_traceback_points_at_source_lines(tmp_path: Path, rscript: str) -> None:
    run = run_r(tmp_path, rscript, "tb", "square", dumps_json_args([-1]))
    [outcome] = run.outcomes("r")
    with pytest.raises(RemoteError) as info:
        outcome.result()
    tb = info.value.traceback
    lines = (MODELS / "model.R").read_text().splitlines()
    stop_line = next(i for i, line in enumerate(lines, 1) if "stop(" in line)
    call_line = next(i for i, line in enumerate(lines, 1) if line.startswith("square <-"))
    assert "1: square(-1)" in tb
    assert f"inner(x) at model.R#{call_line}" in tb
    assert f'stop("negative input: ", x) at model.R#{stop_line}' in tb
    assert "do.call" not in tb and "tryCatch" not in tb and "withCallingHandlers" not in tb
    assert "Error in inner(x): negative input: -1" in run.stderr  # visible in the task's logs
    assert "remote r traceback" in str(info.value) and "stderr.txt" in str(info.value)


def test_r_bad_command_line_and_r_crash(tmp_path: Path, rscript: str) -> None:
    import subprocess

    proc = subprocess.run(
        [rscript, str(RUNNERS / "run.R"), "--file", "x.R"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "missing --function" in proc.stderr
    source = tmp_path / "die.R"
    source.write_text('die <- function() { cat("dying\\n", file = stderr()); quit(status = 9) }\n')
    run = run_json_task(tmp_path, "r", "die", source, "die", dumps_json_args(), rscript)
    assert run.exit_code == 9 and not run.result.exists()
    [outcome] = run.outcomes("r")
    with pytest.raises(TaskCrashed, match="dying"):
        outcome.result()


# ---- Julia: static checks of run.jl, and its envelope through the reader ----

JL = (RUNNERS / "run.jl").read_text()
R_SOURCE = (RUNNERS / "run.R").read_text()


def test_runners_share_cli_flags() -> None:
    for source in (JL, R_SOURCE):
        assert re.search(r'for \(?key in c?\("file", "function", "args", "out"\)', source)
    for language in ("r", "julia"):
        command = runners.command_line(
            language,
            source_file="m x",
            function_name="f",
            args_file="args.json",
            out_file="result.json",
        )
        assert "--file 'm x' --function f --args args.json --out result.json" in command
    assert runners.command_line(
        "julia", source_file="m.jl", function_name="f", args_file="a", out_file="o"
    ).startswith("julia ")


def test_julia_runner_writes_the_documented_keys() -> None:
    written = set(re.findall(r'"([a-z_]+)" =>', JL))
    required = {
        envelope.KEY_STATUS,
        envelope.KEY_VALUE,
        envelope.KEY_OUTCOMES,
        *envelope.JSON_ERROR_KEYS,
        *envelope.JSON_METADATA_KEYS,
        envelope.KEY_ELAPSED,
    }
    assert required <= written, required - written
    for status in (envelope.STATUS_OK, envelope.STATUS_ERROR, envelope.STATUS_CHUNK):
        assert f'"status" => "{status}"' in JL
    assert 'const RUNNER = "run.jl"' in JL and '"language" => "julia"' in JL
    assert "using JSON3" in JL and "mv(tmp, path; force = true)" in JL  # atomic write
    assert "Base.invokelatest(fn, args...; kwargs...)" in JL  # kwargs as keywords
    # the R runner writes the same keys (checked for real above, statically here too)
    r_written = set(re.findall(r"\b([a-z_]+) = ", R_SOURCE))
    assert required - {envelope.KEY_OUTCOMES, envelope.KEY_VALUE} <= r_written | {"status"}


def julia_envelope(case: Case) -> dict[str, Any]:
    """The envelope run.jl writes for `case` (its `capture`, `run` and `metadata`),
    with Julia's type names and stacktrace format."""
    meta = {
        "runner": "run.jl",
        "language": "julia",
        "version": "1.10.4",
        "host": "node-0",
        "started": "2026-11-21T20:00:00.000Z",
        "finished": "2026-11-21T20:00:01.000Z",
        "elapsed_seconds": 1.0,
    }
    if case.name == "missing_function":
        return {
            "status": "error",
            "type": "FunctionNotFound",
            "classes": ["FunctionNotFound", "Exception"],
            "message": "model.jl defines no function `no_such_function` (it defines: add, "
            "describe, identity_value, inner, scale, series, square)",
            "traceback": "Error: model.jl defines no function `no_such_function` (...)",
            "warnings": [],
            **meta,
        }

    def outcome(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        if case.function == "square" and args[0] < 0:
            return {
                "status": "error",
                "type": "ErrorException",
                "classes": ["ErrorException", "Exception"],
                "message": f"negative input: {args[0]}",
                "traceback": f"Error: negative input: {args[0]}\n"
                "Stacktrace (innermost first):\n"
                " [1] error(s::String) at ./error.jl:35\n"
                " [2] inner(x::Int64) at /wd/model.jl:6\n"
                " [3] square(x::Int64) at /wd/model.jl:7",
                "elapsed_seconds": 0.01,
                "warnings": [],
            }
        fns: dict[str, Callable[..., Any]] = {
            "add": lambda a, b: a + b,
            "scale": lambda x, factor=1: x * factor,
            "series": lambda n, step=1: [1.5 + i * step for i in range(n)],
            "describe": lambda n, label: {"n": n, "label": label},
            "square": lambda x: x * x,
        }
        return {
            "status": "ok",
            "value": fns[case.function](*args, **kwargs),
            "elapsed_seconds": 0.01,
            "warnings": [],
        }

    items = [outcome(a, k) for a, k in case.calls]
    if case.chunk:
        return {"status": "chunk", "outcomes": items, **meta}
    return {**items[0], **meta}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_julia_envelope_conformance(tmp_path: Path, case: Case) -> None:
    doc = julia_envelope(case)
    path = tmp_path / envelope.RESULT_JSON
    path.write_text(json.dumps(doc))
    check_envelope(doc, case, "julia", "run.jl")
    check_outcomes(path, case, "julia")


def test_julia_model_defines_the_conformance_functions() -> None:
    model = (MODELS / "model.jl").read_text()
    for case in CASES:
        if case.name != "missing_function":
            assert re.search(rf"^{case.function}\(", model, re.M), case.function


def julia_syntax_errors(source: bytes) -> list[str]:
    """ERROR/missing nodes of tree-sitter's Julia grammar (no Julia binary here)."""
    import tree_sitter_julia
    from tree_sitter import Language, Parser

    tree = Parser(Language(tree_sitter_julia.language())).parse(source)
    found: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append(
                f"line {node.start_point[0] + 1}: {source[node.start_byte : node.end_byte][:60]!r}"
            )
        stack.extend(node.children)
    return found


def test_julia_sources_parse() -> None:
    assert julia_syntax_errors(JL.encode()) == []
    assert julia_syntax_errors((MODELS / "model.jl").read_bytes()) == []
    broken = JL.replace("end\n\nfunction metadata()", "\n\nfunction metadata()")
    assert broken != JL and julia_syntax_errors(broken.encode())  # the check can fail
