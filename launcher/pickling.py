"""What a shipped Python function turns into: payload bytes for the node-side runner.

Modules that live outside the Python installation and site-packages (`__main__`, the user's
scripts and packages, editable installs) are pickled *by value*, so a node does not need the
user's source tree; installed packages go *by reference* and must be installed on the node
(`[runtime] packages`). Each payload starts with a header line naming the client's Python
version, checked by the runner before it unpickles anything.

Function payloads are deterministic within a process (same function, same bytes), so
`content_hash` names a content-addressed blob that is uploaded once for any number of tasks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from launcher.remote_errors import PayloadTooLarge
from launcher.runners.run_python import base_header, pack

MB = 1024 * 1024
FUNCTION_LIMIT = 64 * MB
ARGS_LIMIT = 10 * MB

_lock = threading.RLock()
_local_cache: dict[tuple[str, str], bool] = {}


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    """Directories whose modules count as installed (stdlib, site-packages, the prefix)."""
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    roots.update(site.getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        roots.add(user_site)
    return tuple(sorted({os.path.realpath(r) for r in roots}))


def is_local_module(module: ModuleType) -> bool:
    """True for a pure-Python module that is not part of the Python installation or of
    site-packages (so the node cannot import it): these are pickled by value."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return False  # builtin, frozen, namespace package, or a compiled extension
    key = (module.__name__, file)
    if key not in _local_cache:
        real = os.path.realpath(file)
        parts = Path(real).parts
        installed = "site-packages" in parts or "dist-packages" in parts
        installed = installed or any(
            real == root or real.startswith(root + os.sep) for root in _installed_roots()
        )
        _local_cache[key] = not installed
    return _local_cache[key]


_scan_cache: dict[str, Any] = {"key": None, "tops": []}


def _local_tops() -> list[ModuleType]:
    """All local top-level packages; rescanned only when sys.modules changed (its size or
    its newest entry), since a map pickles thousands of argument sets in a row."""
    newest = next(reversed(sys.modules), None)
    key = (len(sys.modules), newest, id(sys.modules.get(newest or "")))
    if _scan_cache["key"] != key:
        tops: dict[str, ModuleType] = {}
        for name, module in list(sys.modules.items()):
            top = name.partition(".")[0]
            if top in ("__main__", "__mp_main__") or top in tops:
                continue
            root = sys.modules.get(top)
            local = isinstance(module, ModuleType) and is_local_module(module)
            if local and isinstance(root, ModuleType):
                tops[top] = root
        _scan_cache.update(key=key, tops=[tops[name] for name in sorted(tops)])
    return list(_scan_cache["tops"])


def local_packages(by_reference: Iterable[str] = ()) -> list[ModuleType]:
    """Top-level packages (in sys.modules) to pickle by value, minus `by_reference` names."""
    skip = set(by_reference)
    with _lock:
        return [module for module in _local_tops() if module.__name__ not in skip]


@contextmanager
def by_value(by_reference: Iterable[str] = (), extra: Iterable[ModuleType] = ()) -> Iterator[None]:
    """Register the user's local packages with cloudpickle for the duration of one dumps,
    then unregister the ones we added (cloudpickle's registry is process-global)."""
    with _lock:
        before = cloudpickle.list_registry_pickle_by_value()
        added: list[ModuleType] = []
        for module in [*local_packages(by_reference), *extra]:
            if module.__name__ not in before and module.__name__ not in {m.__name__ for m in added}:
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        try:
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def _describe(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def _human(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB / 10 else f"{size} bytes"


def _largest_captured(fn: Any) -> str:
    """`name (N MB)` of the biggest value a function closes over or reads as a global."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    sizes: dict[str, int] = {}
    cells = getattr(fn, "__closure__", None) or ()
    candidates: list[tuple[str, Any]] = []
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            candidates.append((name, cell.cell_contents))
        except ValueError:  # empty cell
            continue
    fn_globals = getattr(fn, "__globals__", {})
    candidates += [(n, fn_globals[n]) for n in code.co_names if n in fn_globals]
    for name, value in candidates:
        if isinstance(value, ModuleType) or callable(value):
            continue
        try:
            sizes[name] = len(cloudpickle.dumps(value))
        except Exception:
            continue
    if not sizes:
        return ""
    name = max(sizes, key=lambda n: sizes[n])
    return f"; the largest captured value is `{name}` ({_human(sizes[name])})"


def _check_size(data: bytes, limit: int, what: str, detail: str = "") -> bytes:
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{what} pickles to {_human(len(data))}, above the {_human(limit)} limit{detail}. "
            "Do not ship data inside pickles: put the file in the task's resource files, or "
            "upload it to a blob, pass its path or name as an argument and read it inside "
            "the function (or raise the limit if you really mean it)."
        )
    return data


def dumps_function(
    fn: Callable[..., Any],
    *,
    limit: int = FUNCTION_LIMIT,
    by_reference: Iterable[str] = (),
) -> bytes:
    """The function payload for `run_python.py --function` (header + cloudpickle)."""
    if not callable(fn):
        raise TypeError(f"expected a callable to ship, got {type(fn).__name__}")
    with by_value(by_reference):
        body = cloudpickle.dumps(fn)
    header = base_header("function")
    header["name"] = _describe(fn)
    what = f"function {_describe(fn)}"
    if len(body) > limit:
        _check_size(body, limit, what, _largest_captured(fn))
    return pack(header, body)


def dumps_args(
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    limit: int = ARGS_LIMIT,
    by_reference: Iterable[str] = (),
) -> bytes:
    """The arguments payload of one call for `run_python.py --args`."""
    with by_value(by_reference):
        body = cloudpickle.dumps((tuple(args), dict(kwargs or {})))
    _check_size(body, limit, "the arguments of this call")
    return pack(base_header("call"), body)


def dumps_chunk(
    calls: Sequence[tuple[Sequence[Any], dict[str, Any]]],
    *,
    limit: int = ARGS_LIMIT,
    by_reference: Iterable[str] = (),
) -> bytes:
    """The arguments payload of a chunk (a list of (args, kwargs), e.g. `map(chunksize=N)`):
    the runner returns one outcome per call, so one failing item loses nothing else."""
    items = [(tuple(a), dict(k)) for a, k in calls]
    with by_value(by_reference):
        body = cloudpickle.dumps(items)
    _check_size(body, limit, f"the arguments of this chunk of {len(items)} calls")
    header = base_header("chunk")
    header["count"] = len(items)
    return pack(header, body)


def dumps_json_args(
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    limit: int = ARGS_LIMIT,
) -> bytes:
    """`{"args": [...], "kwargs": {...}}` for run.R / run.jl. NaN and infinities have no JSON
    form, so they are refused here rather than mangled on the node."""
    return _json_payload({"args": list(args), "kwargs": dict(kwargs or {})}, limit, "call")


def dumps_json_chunk(
    calls: Sequence[tuple[Sequence[Any], dict[str, Any]]], *, limit: int = ARGS_LIMIT
) -> bytes:
    """`{"calls": [{"args": [...], "kwargs": {...}}, ...]}`: one outcome per call."""
    items = [{"args": list(a), "kwargs": dict(k)} for a, k in calls]
    return _json_payload({"calls": items}, limit, f"chunk of {len(items)} calls")


def _json_payload(doc: dict[str, Any], limit: int, what: str) -> bytes:
    try:
        data = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise ValueError(
            f"the arguments of this {what} hold NaN or an infinity, which JSON cannot carry "
            "to R/Julia: pass None (null) or a string instead"
        ) from exc
    except TypeError as exc:
        raise TypeError(
            f"the arguments of this {what} must be JSON values (numbers, strings, bools, None, "
            f"lists, dicts with string keys) for R/Julia functions: {exc}"
        ) from exc
    return _check_size(data, limit, f"the arguments of this {what}")


def content_hash(payload: bytes) -> str:
    """sha256 hex digest: the content address of a function payload's blob."""
    return hashlib.sha256(payload).hexdigest()


def chunks(n_items: int, chunksize: int) -> list[range]:
    """Index ranges of `map(chunksize=N)`: ceil(n/N) tasks."""
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    return [
        range(i * chunksize, min(n_items, (i + 1) * chunksize))
        for i in range(math.ceil(n_items / chunksize))
    ]
