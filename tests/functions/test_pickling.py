"""Payloads: by value vs by reference, determinism (content addressing), size limits."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from types import ModuleType

import cloudpickle
import pytest

from launcher import pickling
from launcher.errors import UserError
from launcher.pickling import (
    content_hash,
    dumps_args,
    dumps_chunk,
    dumps_function,
    dumps_json_args,
    dumps_json_chunk,
    is_local_module,
)
from launcher.remote_errors import PayloadTooLarge
from launcher.runners import run_python as rp


def make_closure(data: list[float], scale: float):  # type: ignore[no-untyped-def]
    lookup = {str(i): v for i, v in enumerate(data)}
    names = {"x", "y", "z"}

    def f(key: str) -> float:
        return lookup[key] * scale + len(names)

    return f


def test_same_closure_pickles_identically_and_hashes_alike() -> None:
    f = make_closure([1.5, 2.5, 3.5] * 100, 2.0)
    first, second = dumps_function(f), dumps_function(f)
    assert first == second
    assert content_hash(first) == content_hash(second)
    assert len(content_hash(first)) == 64
    # an equal closure built separately is the same content too; different data is not
    assert dumps_function(make_closure([1.5, 2.5, 3.5] * 100, 2.0)) == first
    assert content_hash(dumps_function(make_closure([1.5], 2.0))) != content_hash(first)


def test_local_module_by_value_and_installed_by_reference(userlib: ModuleType) -> None:
    assert is_local_module(userlib)
    assert is_local_module(sys.modules[__name__])  # the tests are not installed either
    assert not is_local_module(json) and not is_local_module(cloudpickle)
    assert not is_local_module(sys)  # builtin
    before = cloudpickle.list_registry_pickle_by_value()
    payload = dumps_function(userlib.scaled)
    assert cloudpickle.list_registry_pickle_by_value() == before  # registry restored
    _, body = rp.unpack(payload)
    assert b"helper" in body and b"SCALE" in body  # the module's code travelled
    _, json_body = rp.unpack(dumps_function(json.dumps))
    assert len(json_body) < 100 and b"json" in json_body  # a reference, not the code


def test_by_reference_override_and_user_registration_kept(userlib: ModuleType) -> None:
    cloudpickle.register_pickle_by_value(userlib)
    try:
        dumps_function(userlib.scaled)
        assert userlib.__name__ in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(userlib)
    _, body = rp.unpack(dumps_function(userlib.scaled, by_reference=[userlib.__name__]))
    assert b"helper" not in body  # forced by reference: only the import path


def test_header_records_the_client_python() -> None:
    header, _ = rp.unpack(dumps_function(make_closure([1.0], 1.0)))
    assert header["kind"] == "function"
    assert rp.python_minor(header["python"]) == rp.python_minor()
    assert header["cloudpickle"] == cloudpickle.__version__
    assert header["name"].endswith("make_closure.<locals>.f")
    chunk_header, chunk_body = rp.unpack(dumps_chunk([((1,), {}), ((2,), {"k": 3})]))
    assert chunk_header["kind"] == "chunk" and chunk_header["count"] == 2
    assert pickle.loads(chunk_body) == [((1,), {}), ((2,), {"k": 3})]
    call_header, call_body = rp.unpack(dumps_args((1, "a"), {"b": None}))
    assert call_header["kind"] == "call" and pickle.loads(call_body) == ((1, "a"), {"b": None})


def test_function_over_the_limit_names_size_variable_and_fix() -> None:
    big = b"x" * (2 * pickling.MB)

    def uses_big() -> int:
        return len(big)

    with pytest.raises(PayloadTooLarge) as info:
        dumps_function(uses_big, limit=pickling.MB)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "2.0 MB" in message and "1.0 MB limit" in message and "`big`" in message
    assert "resource files" in message and "blob" in message
    assert "uses_big" in message
    assert dumps_function(uses_big, limit=4 * pickling.MB)  # under the limit it ships


def test_arguments_over_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match=r"arguments of this call pickles to 11\.0 MB"):
        dumps_args((b"y" * (11 * pickling.MB),))
    with pytest.raises(PayloadTooLarge, match="chunk of 3 calls"):
        dumps_chunk([((bytes([i]) * pickling.MB,), {}) for i in range(3)], limit=2 * pickling.MB)


def test_json_args_for_r_and_julia() -> None:
    assert json.loads(dumps_json_args((1, 2.5, "a"), {"n": [1, 2]})) == {
        "args": [1, 2.5, "a"],
        "kwargs": {"n": [1, 2]},
    }
    assert json.loads(dumps_json_chunk([((1,), {}), ((2,), {"k": True})])) == {
        "calls": [{"args": [1], "kwargs": {}}, {"args": [2], "kwargs": {"k": True}}]
    }
    with pytest.raises(ValueError, match="NaN"):
        dumps_json_args((float("nan"),))
    with pytest.raises(TypeError, match="JSON values"):
        dumps_json_args((object(),))


def test_chunks_cover_every_item_once() -> None:
    ranges = pickling.chunks(500, 10)
    assert len(ranges) == 50 and [i for r in ranges for i in r] == list(range(500))
    assert [len(r) for r in pickling.chunks(7, 3)] == [3, 3, 1]
    with pytest.raises(ValueError):
        pickling.chunks(5, 0)


def test_runner_is_self_contained(repo_root: Path) -> None:
    """run_python.py imports only the standard library and cloudpickle."""
    import ast

    tree = ast.parse((repo_root / "launcher/runners/run_python.py").read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules - set(sys.stdlib_module_names) == {"cloudpickle"}
