"""The OData subset Batch list operations take: `$filter` and `$select`.

Filters are compiled once into a predicate over the REST JSON of an item: comparisons
(`eq ne gt ge lt le`) on a property path (`executionInfo/exitCode`), `and`, `or`, `not`,
parentheses and `startswith(prop, 'x')`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from emulator.errors import BatchError

Predicate = Callable[[dict[str, Any]], bool]
_TOKEN = re.compile(
    r"\s*(?:(\()|(\))|(,)|'((?:[^']|'')*)'|([A-Za-z_$][\w/.$-]*)|(-?\d+(?:\.\d+)?))"
)
_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b,
    "ge": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "le": lambda a, b: a is not None and a <= b,
}


def _bad(text: str) -> BatchError:
    return BatchError(
        "InvalidQueryParameterValue",
        values={"QueryParameterName": "$filter", "QueryParameterValue": text},
    )


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise _bad(text)
        pos = m.end()
        lp, rp, comma, string, name, number = m.groups()
        if lp:
            out.append(("(", None))
        elif rp:
            out.append((")", None))
        elif comma:
            out.append((",", None))
        elif string is not None:
            out.append(("lit", string.replace("''", "'")))
        elif number is not None:
            out.append(("lit", float(number) if "." in number else int(number)))
        elif name in ("true", "false"):
            out.append(("lit", name == "true"))
        else:
            out.append(("name", name))
    return out


def lookup(item: dict[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.split("/"):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def compile_filter(text: str | None) -> Predicate | None:
    if not text or not text.strip():
        return None
    toks = _tokens(text)
    pos = 0

    def peek() -> tuple[str, Any] | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> tuple[str, Any]:
        nonlocal pos
        if pos >= len(toks):
            raise _bad(text)
        pos += 1
        return toks[pos - 1]

    def expr() -> Predicate:
        left = term()
        while (t := peek()) and t == ("name", "or"):
            take()
            right = term()
            left = (lambda a, b: lambda it: a(it) or b(it))(left, right)
        return left

    def term() -> Predicate:
        left = factor()
        while (t := peek()) and t == ("name", "and"):
            take()
            right = factor()
            left = (lambda a, b: lambda it: a(it) and b(it))(left, right)
        return left

    def factor() -> Predicate:
        t = take()
        if t == ("name", "not"):
            inner = factor()
            return lambda it: not inner(it)
        if t[0] == "(":
            inner = expr()
            if take()[0] != ")":
                raise _bad(text)
            return inner
        if t == ("name", "startswith"):
            if take()[0] != "(":
                raise _bad(text)
            prop = take()
            take()
            lit = take()
            if take()[0] != ")" or prop[0] != "name" or lit[0] != "lit":
                raise _bad(text)
            path, prefix = prop[1], str(lit[1]).lower()
            return lambda it: str(lookup(it, path) or "").lower().startswith(prefix)
        if t[0] != "name":
            raise _bad(text)
        op = take()
        value = take()
        if op[0] != "name" or op[1] not in _OPS or value[0] != "lit":
            raise _bad(text)
        fn, path, want = _OPS[op[1]], t[1], _norm(value[1])
        return lambda it: bool(fn(_norm(lookup(it, path)), want))

    predicate = expr()
    if pos != len(toks):
        raise _bad(text)
    return predicate


def select(item: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]
