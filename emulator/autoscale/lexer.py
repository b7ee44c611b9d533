"""Tokens of the formula language, each with its 1-based line and column."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulator.autoscale.errors import SYNTAX_ERROR, FormulaSyntaxError


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "string", "name", "op", "eof"
    text: str
    line: int
    column: int
    offset: int


# Longest operators first so that `<=` wins over `<`.
_OPERATORS = ("&&", "||", "<=", ">=", "==", "!=", "+", "-", "*", "/", "<", ">", "!", "?",
              ":", "=", "(", ")", ",", ";", ".")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")


def tokenize(source: str) -> list[Token]:
    """Split a formula into tokens; `//` comments and whitespace are dropped."""
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    length = len(source)
    while pos < length:
        char = source[pos]
        column = pos - line_start + 1
        if char == "\n":
            pos += 1
            line, line_start = line + 1, pos
            continue
        if char in " \t\r\f\v":
            pos += 1
            continue
        if source.startswith("//", pos):
            end = source.find("\n", pos)
            pos = length if end < 0 else end
            continue
        if char == '"':
            end = source.find('"', pos + 1)
            newline = source.find("\n", pos + 1)
            if end < 0 or 0 <= newline < end:
                raise FormulaSyntaxError(SYNTAX_ERROR, "unterminated string literal", line, column)
            tokens.append(Token("string", source[pos + 1 : end], line, column, pos))
            pos = end + 1
            continue
        match = _NUMBER.match(source, pos)
        if match and (char.isdigit() or char == "."):
            tokens.append(Token("number", match.group(), line, column, pos))
            pos = match.end()
            continue
        match = _NAME.match(source, pos)
        if match:
            tokens.append(Token("name", match.group(), line, column, pos))
            pos = match.end()
            continue
        for op in _OPERATORS:
            if source.startswith(op, pos):
                tokens.append(Token("op", op, line, column, pos))
                pos += len(op)
                break
        else:
            raise FormulaSyntaxError(SYNTAX_ERROR, f"unexpected character {char!r}", line, column)
    column = pos - line_start + 1
    tokens.append(Token("eof", "", line, column, pos))
    return tokens
