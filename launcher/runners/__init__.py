"""Node-side runners, shipped to nodes as resource files (package data).

`run_python.py` (stdlib + cloudpickle), `run.R` (Rscript + jsonlite) and `run.jl` (Julia +
JSON3) share one command line and one result envelope, so the executor treats the three
languages alike: upload `runner_bytes(language)` as the resource file `runner_file(language)`
and run `command_line(...)` (wrapped by `bootstrap.wrap_command` so the runtime's env file is
sourced and `python3`/`Rscript`/`julia` are the runtime's).

Python tasks also get `cloudpickle_zip()`, the client's own cloudpickle as a zip, as the
resource file `CLOUDPICKLE_ZIP` beside the runner: the runner imports it first, so nodes need
no cloudpickle of their own and never unpickle with another version than the client's.
"""

from __future__ import annotations

import functools
import io
import shlex
import zipfile
from importlib import metadata, resources
from pathlib import Path
from typing import Literal

from launcher.runners.run_python import CLOUDPICKLE_ZIP

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


#: Fixed metadata for every zip entry, so the same files give the same bytes (and so the
#: same content address) in every process: the blob is uploaded once, ever.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_MODE = 0o644 << 16


@functools.cache
def cloudpickle_zip() -> bytes:
    """The client's installed cloudpickle package (pure Python) as a zip for zipimport:
    its `.py` files (no bytecode: the node compiles them for its own Python) and its
    licence, sorted, with fixed timestamps and modes. Built once per process."""
    import cloudpickle

    package = Path(cloudpickle.__file__).resolve().parent
    entries = {
        f"cloudpickle/{path.relative_to(package).as_posix()}": path.read_bytes()
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    if "cloudpickle/__init__.py" not in entries:
        raise RuntimeError(
            f"cannot ship cloudpickle to the nodes: no cloudpickle/__init__.py under {package} "
            "(installed as an egg or zip?); reinstall it as files: pip install cloudpickle"
        )
    for licence in _licence_files():
        entries[f"cloudpickle-{cloudpickle.__version__}.dist-info/{licence.name}"] = (
            licence.read_bytes()
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = _ZIP_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name], compresslevel=9)
    return buffer.getvalue()


def _licence_files() -> list[Path]:
    """cloudpickle's licence file(s) from its installed metadata (BSD: ship the notice)."""
    try:
        files = metadata.distribution("cloudpickle").files or []
    except metadata.PackageNotFoundError:
        return []
    found = [
        Path(str(f.locate())) for f in files if f.name.upper().startswith(("LICENSE", "LICENCE"))
    ]
    return sorted(p for p in found if p.is_file())


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


__all__ = [
    "CLOUDPICKLE_ZIP",
    "INTERPRETERS",
    "RUNNER_FILES",
    "Language",
    "cloudpickle_zip",
    "command_line",
    "runner_bytes",
    "runner_file",
]
