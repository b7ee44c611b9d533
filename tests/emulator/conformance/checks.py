"""Comparisons between an example's response and the emulator's: keys, JSON types, echoes.

`covers` asks "does the emulator's body carry every field the example shows, with the same
JSON type?"; `echoes` asks "did the emulator give back what the request set?"; and
`parse_model` deserializes through the SDK model and reads every field the example names,
which runs the SDK's own converters (dates, durations, nested models) on the emulator's JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from enum import Enum
from typing import Any

import isodate

# Fields Batch documents as absent on Linux nodes (the examples were captured on Windows):
# FileProperties.creationTime "is not returned for files on Linux Compute Nodes".
LINUX_ABSENT = {"properties.creationTime"}

# Secrets Batch never returns, and request-only fields.
NOT_ECHOED = {"password", "accountKey", "sasKey", "sshPrivateKey"}


def json_kind(value: Any) -> str:
    """The JSON type of a decoded value (ints and floats are both numbers)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def covers(expected: Any, actual: Any, path: str = "",
           allow_absent: Iterable[str] = ()) -> list[str]:
    """Problems where `actual` lacks a key of `expected` or has another JSON type there.

    Arrays: every element of the example must be covered by some element of the response
    (the response may hold more elements, in another order).
    """
    allowed = set(allow_absent)
    problems: list[str] = []
    if json_kind(expected) != json_kind(actual):
        return [f"{path or '<body>'}: example has {json_kind(expected)}, "
                f"emulator sent {json_kind(actual)} ({actual!r:.80})"]
    if isinstance(expected, dict):
        for key, value in expected.items():
            child = f"{path}.{key}" if path else key
            if key not in actual:
                if _suffix_allowed(child, allowed):
                    continue
                problems.append(f"{child}: missing (example shows {value!r:.60})")
                continue
            problems.extend(covers(value, actual[key], child, allowed))
    elif isinstance(expected, list):
        for index, item in enumerate(expected):
            if not actual:
                problems.append(f"{path}[{index}]: emulator sent an empty array")
                continue
            attempts = [covers(item, candidate, f"{path}[{index}]", allowed)
                        for candidate in actual]
            if not any(not attempt for attempt in attempts):
                best = min(attempts, key=len)
                problems.extend(best)
    return problems


def _suffix_allowed(path: str, allowed: set[str]) -> bool:
    bare = _strip_indexes(path)
    return any(bare == entry or bare.endswith("." + entry) for entry in allowed)


def _strip_indexes(path: str) -> str:
    out = []
    depth = 0
    for char in path:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


def echoes(sent: Any, got: Any, path: str = "") -> list[str]:
    """Problems where a value the request set does not come back equal.

    Durations and timestamps compare by meaning (`PT15M` equals `PT15M00S`); secrets are
    skipped; an empty array sent may come back absent.
    """
    problems: list[str] = []
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [f"{path or '<body>'}: sent an object, got {got!r:.80}"]
        for key, value in sent.items():
            child = f"{path}.{key}" if path else key
            if key in NOT_ECHOED:
                continue
            if key not in got:
                if value in ([], {}, None):
                    continue
                problems.append(f"{child}: sent {value!r:.60}, not in the response")
                continue
            problems.extend(echoes(value, got[key], child))
        return problems
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [f"{path}: sent {sent!r:.80}, got {got!r:.80}"]
        for index, (one, other) in enumerate(zip(sent, got, strict=True)):
            problems.extend(echoes(one, other, f"{path}[{index}]"))
        return problems
    if not same_value(sent, got, case_insensitive=path.endswith("vmSize")):
        problems.append(f"{path}: sent {sent!r}, got {got!r}")
    return problems


def same_value(sent: Any, got: Any, case_insensitive: bool = False) -> bool:
    """Equality that reads ISO-8601 durations and timestamps by meaning.

    `case_insensitive` is for values Batch normalises (it returns vmSize lowercased).
    """
    if sent == got:
        return True
    if isinstance(sent, str) and isinstance(got, str):
        if sent.startswith("P") and got.startswith("P"):
            try:
                return bool(_duration(sent) == _duration(got))
            except (isodate.ISO8601Error, ValueError):
                return False
        if case_insensitive and sent.lower() == got.lower():
            return True
        try:
            return _timestamp(sent) == _timestamp(got)
        except ValueError:
            return False
    return False


def _duration(text: str) -> dt.timedelta:
    value = isodate.parse_duration(text)
    if isinstance(value, dt.timedelta):
        return value
    converted: dt.timedelta = value.totimedelta(start=dt.datetime(2000, 1, 1))
    return converted


def _timestamp(text: str) -> dt.datetime:
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        raise ValueError(text)
    return stamp


def parse_model(model_cls: type, body: dict[str, Any], example: dict[str, Any]) -> list[str]:
    """Deserialize `body` through the SDK model and read every field `example` names.

    The SDK hands back the raw JSON value when its converter fails (a malformed date stays a
    str), so each field read from the emulator's body must have the Python type the same
    field has when read from the example itself.
    """
    return _read_fields(model_cls(body), model_cls(example), example, model_cls.__name__)


def _python_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.timedelta):
        return "timedelta"
    if isinstance(value, Enum):
        return f"enum {type(value).__name__}"
    return type(value).__name__


def rest_names(model_cls: type) -> set[str]:
    """The JSON names of an SDK model's fields (the SDK builds the table on first use)."""
    model_cls({})
    return {field._rest_name for field in model_cls._attr_to_rest_field.values()}  # type: ignore[attr-defined]


def _read_fields(model: Any, reference: Any, example: dict[str, Any], path: str) -> list[str]:
    fields = getattr(type(model), "_attr_to_rest_field", None)
    if fields is None:
        return []
    by_rest = {field._rest_name: attr for attr, field in fields.items()}
    problems: list[str] = []
    for key, value in example.items():
        child = f"{path}.{key}"
        attr = by_rest.get(key)
        if attr is None:
            problems.append(f"{child}: the SDK model has no such field")
            continue
        read, expected = getattr(model, attr), getattr(reference, attr)
        if read is None:
            continue  # absence is `covers`' business
        if _python_kind(read) != _python_kind(expected):
            problems.append(f"{child}: the SDK reads {read!r:.60} as {_python_kind(read)}, "
                            f"the example's value as {_python_kind(expected)}")
            continue
        if isinstance(value, dict):
            problems.extend(_read_fields(read, expected, value, child))
        elif isinstance(value, list) and value and isinstance(value[0], dict) and expected:
            for item in read:
                problems.extend(_read_fields(item, expected[0], value[0], child + "[]"))
    return problems
