"""The syntax tree of a formula. Every node keeps the position of its first token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    line: int
    column: int


@dataclass(frozen=True)
class Number(Node):
    value: float


@dataclass(frozen=True)
class String(Node):
    value: str


@dataclass(frozen=True)
class Name(Node):
    """A variable, a `TimeInterval_*` constant or a deallocation keyword."""

    name: str


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Conditional(Node):
    condition: Node
    if_true: Node
    if_false: Node


@dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class MethodCall(Node):
    """`$Metric.Method(args)`: only service-defined sampled metrics have methods."""

    metric: str
    method: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Member(Node):
    """`expr.hour` and the other members of a timestamp."""

    target: Node
    member: str


@dataclass(frozen=True)
class Statement:
    """One `;`-separated statement: `target = expr` or a bare expression."""

    target: str | None
    expr: Node
    line: int
    column: int
    text: str


@dataclass(frozen=True)
class Program:
    statements: tuple[Statement, ...]
    source: str
