"""Node-side runners, shipped to nodes as resource files (package data).

`run_python.py` (stdlib + cloudpickle), `run.R` (Rscript + jsonlite) and `run.jl` (Julia +
JSON3) share one command line and one result envelope, so the executor treats the three
languages alike: upload `runner_bytes(language)` as the resource file `runner_file(language)`
and run `command_line(...)` (wrapped by `bootstrap.wrap_command` so the runtime's env file is
sourced and `python3`/`Rscript`/`julia` are the runtime's).
"""

from __future__ import annotations

import shlex
from importlib import resources
from typing import Literal

Language = Literal["python", "r", "julia"]

RUNNER_FILES: dict[str, str] = {"python": "run_python.py", "r": "run.R", "julia": "run.jl"}
INTERPRETERS: dict[str, tuple[str, ...]] = {
    "python": ("python3",),
    "r": ("Rscript",),
    "julia": ("julia", "--startup-file=no"),
}


def runner_file(language: str) -> str:
    """The runner's file name in the task working directory."""
    try:
        return RUNNER_FILES[language]
    except KeyError:
        raise ValueError(
            f"unknown function language {language!r}: one of {', '.join(RUNNER_FILES)}"
        ) from None


def runner_bytes(language: str) -> bytes:
    """The runner's source, read from package data (works from a wheel or a checkout)."""
    return resources.files(__name__).joinpath(runner_file(language)).read_bytes()


def command_line(
    language: str,
    *,
    args_file: str,
    out_file: str,
    function_file: str | None = None,
    source_file: str | None = None,
    function_name: str | None = None,
) -> str:
    """The task's command line (without the env-file wrapper), every value shell-quoted.

    Python: `python3 run_python.py --function F --args A --out O`;
    R/Julia: `Rscript run.R --file F --function NAME --args A --out O` (and
    `julia --startup-file=no run.jl ...`).
    """
    argv = [*INTERPRETERS.get(language, ()), runner_file(language)]
    if language == "python":
        if function_file is None:
            raise ValueError("a Python function task needs function_file")
        argv += ["--function", function_file]
    else:
        if source_file is None or function_name is None:
            raise ValueError(f"a {language} function task needs source_file and function_name")
        argv += ["--file", source_file, "--function", function_name]
    argv += ["--args", args_file, "--out", out_file]
    return shlex.join(argv)
