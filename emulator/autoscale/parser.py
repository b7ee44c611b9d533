"""Recursive-descent parser: formula text -> `Program`, or `FormulaSyntaxError`.

Precedence, lowest first: `?:`, `||`, `&&`, comparisons, `+ -`, `* /`, unary `- ! +`,
postfix `.member` / `.Method(...)`. Statements are separated by `;` (the last may omit it).
Static rules are checked here so that they fail before anything runs, as Batch does when
a formula is set: the limits, unknown functions and methods, argument counts, and
assignments to read-only service-defined variables.
"""

from __future__ import annotations

from functools import lru_cache

from emulator.autoscale import nodes
from emulator.autoscale.errors import SYNTAX_ERROR, TOO_LONG, FormulaSyntaxError
from emulator.autoscale.lexer import Token, tokenize
from emulator.autoscale.names import FUNCTIONS, METHODS, canonical, is_read_only, metric_name

MAX_FORMULA_BYTES = 8192
MAX_STATEMENTS = 100
# Bounds that keep parsing and evaluation (both recursive) far from Python's recursion
# limit; real formulas nest a handful of levels.
MAX_NESTING = 40
MAX_TREE_DEPTH = 200

_COMPARISONS = ("<", "<=", "==", ">=", ">", "!=")


def _describe(token: Token) -> str:
    return "end of formula" if token.kind == "eof" else repr(token.text)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.nesting = 0

    # --- token helpers -------------------------------------------------------------------
    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def at_op(self, *ops: str) -> bool:
        return self.token.kind == "op" and self.token.text in ops

    def error(self, message: str, token: Token | None = None) -> FormulaSyntaxError:
        token = token or self.token
        return FormulaSyntaxError(SYNTAX_ERROR, message, token.line, token.column)

    def expect_op(self, op: str, context: str) -> Token:
        if not self.at_op(op):
            raise self.error(f"expected '{op}' {context}, found {_describe(self.token)}")
        return self.advance()

    # --- statements ----------------------------------------------------------------------
    def program(self) -> nodes.Program:
        statements: list[nodes.Statement] = []
        while self.token.kind != "eof":
            if self.at_op(";"):
                self.advance()
                continue
            start = self.token
            statement = self.statement()
            statements.append(statement)
            if len(statements) > MAX_STATEMENTS:
                raise FormulaSyntaxError(
                    TOO_LONG,
                    f"the formula has more than {MAX_STATEMENTS} statements",
                    start.line,
                    start.column,
                )
            if self.token.kind != "eof":
                self.expect_op(";", "between statements")
        return nodes.Program(tuple(statements), self.source)

    def statement(self) -> nodes.Statement:
        start = self.token
        target: str | None = None
        if (
            start.kind == "name"
            and self.tokens[self.pos + 1].kind == "op"
            and self.tokens[self.pos + 1].text == "="
        ):
            target = canonical(start.text)
            if is_read_only(target):
                raise self.error(
                    f"cannot assign to {target}: it is a read-only service-defined variable",
                    start,
                )
            self.pos += 2
        expr = self.expression()
        if _depth(expr) > MAX_TREE_DEPTH:
            raise self.error(f"the statement is too complex (more than {MAX_TREE_DEPTH} "
                             "nested operations); split it into several statements", start)
        end = self.token.offset
        text = " ".join(self.source[start.offset : end].split())
        return nodes.Statement(target, expr, start.line, start.column, text)

    # --- expressions ---------------------------------------------------------------------
    def expression(self) -> nodes.Node:
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise self.error(f"expressions nest more than {MAX_NESTING} levels deep")
            return self.conditional()
        finally:
            self.nesting -= 1

    def conditional(self) -> nodes.Node:
        condition = self.logical_or()
        if self.at_op("?"):
            self.advance()
            if_true = self.expression()
            self.expect_op(":", "in a conditional expression")
            if_false = self.expression()
            return nodes.Conditional(condition.line, condition.column, condition, if_true,
                                     if_false)
        return condition

    def _binary(self, ops: tuple[str, ...], operand: str) -> nodes.Node:
        parse = getattr(self, operand)
        left: nodes.Node = parse()
        while self.at_op(*ops):
            op = self.advance().text
            right = parse()
            left = nodes.Binary(left.line, left.column, op, left, right)
        return left

    def logical_or(self) -> nodes.Node:
        return self._binary(("||",), "logical_and")

    def logical_and(self) -> nodes.Node:
        return self._binary(("&&",), "comparison")

    def comparison(self) -> nodes.Node:
        return self._binary(_COMPARISONS, "additive")

    def additive(self) -> nodes.Node:
        return self._binary(("+", "-"), "multiplicative")

    def multiplicative(self) -> nodes.Node:
        return self._binary(("*", "/"), "unary")

    def unary(self) -> nodes.Node:
        if self.at_op("-", "!", "+"):
            token = self.advance()
            self.nesting += 1
            try:
                if self.nesting > MAX_NESTING:
                    raise self.error(f"expressions nest more than {MAX_NESTING} levels deep")
                operand = self.unary()
            finally:
                self.nesting -= 1
            if token.text == "+":
                return operand
            return nodes.Unary(token.line, token.column, token.text, operand)
        return self.postfix()

    def postfix(self) -> nodes.Node:
        expr = self.primary()
        while self.at_op("."):
            self.advance()
            member = self.token
            if member.kind != "name" or member.text.startswith("$"):
                raise self.error(f"expected a member or method name after '.', found "
                                 f"{_describe(member)}")
            self.advance()
            if self.at_op("("):
                expr = self.method_call(expr, member)
            else:
                expr = nodes.Member(expr.line, expr.column, expr, member.text)
        return expr

    def method_call(self, target: nodes.Node, method: Token) -> nodes.Node:
        if not isinstance(target, nodes.Name) or metric_name(target.name) is None:
            raise self.error(
                f"method {method.text}() can only be called on a sampled service-defined "
                "variable such as $PendingTasks",
                method,
            )
        if method.text not in METHODS:
            raise self.error(f"unknown method {method.text}(); known methods: "
                             + ", ".join(METHODS), method)
        args = self.arguments()
        low, high = METHODS[method.text]
        if not low <= len(args) <= high:
            raise self.error(f"{method.text}() takes {_arity(low, high)}, got {len(args)}",
                             method)
        return nodes.MethodCall(target.line, target.column, target.name, method.text, args)

    def arguments(self) -> tuple[nodes.Node, ...]:
        self.expect_op("(", "to start the arguments")
        args: list[nodes.Node] = []
        if not self.at_op(")"):
            args.append(self.expression())
            while self.at_op(","):
                self.advance()
                args.append(self.expression())
        self.expect_op(")", "to close the arguments")
        return tuple(args)

    def primary(self) -> nodes.Node:
        token = self.token
        if token.kind == "number":
            self.advance()
            return nodes.Number(token.line, token.column, float(token.text))
        if token.kind == "string":
            self.advance()
            return nodes.String(token.line, token.column, token.text)
        if token.kind == "name":
            self.advance()
            if self.at_op("("):
                if token.text not in FUNCTIONS:
                    raise self.error(f"unknown function {token.text}(); known functions: "
                                     + ", ".join(sorted(FUNCTIONS)), token)
                args = self.arguments()
                low, high = FUNCTIONS[token.text]
                if len(args) < low or (high is not None and len(args) > high):
                    raise self.error(
                        f"{token.text}() takes {_arity(low, high)}, got {len(args)}", token
                    )
                return nodes.Call(token.line, token.column, token.text, args)
            return nodes.Name(token.line, token.column, canonical(token.text))
        if self.at_op("("):
            self.advance()
            expr = self.expression()
            self.expect_op(")", "to close the parenthesis")
            return expr
        raise self.error(f"expected an expression, found {_describe(token)}")


def _children(node: nodes.Node) -> tuple[nodes.Node, ...]:
    if isinstance(node, nodes.Unary):
        return (node.operand,)
    if isinstance(node, nodes.Binary):
        return (node.left, node.right)
    if isinstance(node, nodes.Conditional):
        return (node.condition, node.if_true, node.if_false)
    if isinstance(node, nodes.Call | nodes.MethodCall):
        return node.args
    if isinstance(node, nodes.Member):
        return (node.target,)
    return ()


def _depth(root: nodes.Node) -> int:
    """Depth of a tree, without recursion (a long `a + b + ...` chain is deep)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def _arity(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def parse_formula(formula: str) -> nodes.Program:
    """Parse a formula; raise FormulaSyntaxError(code, message, line, column) if invalid.

    Formulas over 8 KB (8192 bytes of UTF-8) or with more than 100 statements fail with
    code `AutoScaleFormulaTooLong`; everything else with `AutoScalingFormulaSyntaxError`.
    """
    size = len(formula.encode("utf-8"))
    if size > MAX_FORMULA_BYTES:
        raise FormulaSyntaxError(
            TOO_LONG,
            f"the formula is {size} bytes; the limit is {MAX_FORMULA_BYTES} bytes (8 KB)",
            1,
            1,
        )
    return _Parser(formula).program()


@lru_cache(maxsize=256)
def parse_cached(formula: str) -> nodes.Program:
    """parse_formula for a pool re-evaluated every interval: programs are immutable."""
    return parse_formula(formula)
