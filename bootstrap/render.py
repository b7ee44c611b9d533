"""Render the start-task script from a runtime spec with the Jinja templates.

Every value interpolated into the script passes through the `q` filter (``shlex.quote``),
`qjoin` (a list of quoted words) or `num` (a validated integer); a unit test parses the
templates and fails on any other `{{ ... }}`. The spec's sha256 goes into the script as the
install marker, so a changed spec (or template) reinstalls and an unchanged one is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from bootstrap.spec import POOL_KINDS, PoolKind, PythonRuntime, RuntimeSpec

BASE_TEMPLATE = "base.sh.j2"
# Where the launcher ships runtime.requirements (a start-task resource file), relative to
# the start task's working directory.
REQUIREMENTS_FILE = "batchlaunch-requirements.txt"
DEFAULT_SIMPLE_INDEX = "https://pypi.org/simple"
# Filters allowed as the last step of every `{{ ... }}` in the templates.
QUOTING_FILTERS = frozenset({"q", "qjoin", "num"})


def quote(value: object) -> str:
    """Shell-quote one value (str, int or path) so bash sees exactly that word."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"refusing to quote {value!r}: render booleans with {{% if %}}")
    return shlex.quote(str(value))


def quote_join(values: Iterable[object]) -> str:
    """Shell-quote each value and join with spaces: a list of argv words."""
    return " ".join(quote(v) for v in values)


def number(value: object) -> str:
    """An integer rendered bare; anything else is a bug in the caller."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"num filter expects an int, got {value!r}")
    return str(value)


@cache
def template_env() -> jinja2.Environment:
    """The Jinja environment: StrictUndefined, no autoescape, the quoting filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dirs()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # bash uses `${#array[@]}`; Jinja comments are `{## ... ##}` instead of `{# #}`.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    env.filters["q"] = quote
    env.filters["qjoin"] = quote_join
    env.filters["num"] = number
    return env


def template_dirs() -> list[Path]:
    """The template package's directories (via ``__path__``, which also works for
    setuptools' editable installs, where importlib.resources fails on this package)."""
    import startup_templates

    return [Path(p) for p in startup_templates.__path__ if Path(p).is_dir()]


def template_names() -> list[str]:
    return sorted({f.name for d in template_dirs() for f in d.glob("*.j2")})


def _load_template(name: str) -> str:
    for d in template_dirs():
        if (d / name).is_file():
            return (d / name).read_text(encoding="utf-8")
    raise FileNotFoundError(name)


def _templates_digest() -> str:
    digest = hashlib.sha256()
    for name in template_names():
        digest.update(name.encode() + b"\0" + _load_template(name).encode() + b"\0")
    return digest.hexdigest()


def spec_hash(runtime: RuntimeSpec, pool_kind: PoolKind) -> str:
    """sha256 of what the script installs: the spec, the pool kind, the requirements
    file's content when it exists locally, and the templates themselves."""
    doc: dict[str, Any] = {
        "runtime": runtime.model_dump(mode="json"),
        "pool_kind": pool_kind,
        "templates": _templates_digest(),
    }
    if isinstance(runtime, PythonRuntime) and runtime.requirements is not None:
        req = runtime.requirements
        doc["requirements_sha256"] = (
            hashlib.sha256(req.read_bytes()).hexdigest() if req.is_file() else None
        )
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def render_start_task(
    runtime: RuntimeSpec,
    pool_kind: PoolKind = "marketplace",
    *,
    simple_index: str | None = None,
) -> str:
    """The start-task script (bash) that installs `runtime` on a node of a `pool_kind` pool.

    `simple_index` is the PEP 503 index uv itself is fetched from (default: the runtime's
    index_url, else PyPI). Raises `jinja2.UndefinedError`/`TypeError` only on a bug.
    """
    if pool_kind not in POOL_KINDS:
        raise ValueError(f"pool_kind must be one of {', '.join(POOL_KINDS)}, got {pool_kind!r}")
    index = simple_index
    package_names: list[str] = []
    if isinstance(runtime, PythonRuntime):
        index = index or runtime.index_url or DEFAULT_SIMPLE_INDEX
        from packaging.requirements import Requirement  # only Python runtimes need it

        package_names = [Requirement(p).name for p in runtime.packages]
    return (
        template_env()
        .get_template(BASE_TEMPLATE)
        .render(
            rt=runtime,
            pool_kind=pool_kind,
            spec_hash=spec_hash(runtime, pool_kind),
            simple_index=(index or DEFAULT_SIMPLE_INDEX).rstrip("/"),
            package_names=package_names,
            requirements_file=REQUIREMENTS_FILE,
        )
    )
