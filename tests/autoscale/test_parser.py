"""Syntax errors with positions, static rules and the limits (8 KB, 100 statements)."""

from __future__ import annotations

import pytest

from emulator.autoscale import (
    MAX_FORMULA_BYTES,
    SYNTAX_ERROR,
    TOO_LONG,
    FormulaSyntaxError,
    SampleHistory,
    evaluate_formula,
    nodes,
    parse_formula,
)
from tests.autoscale.histories import NOW

SYNTAX_CASES = [
    # (formula, line, column, words in the message)
    ("$TargetDedicatedNodes = ;", 1, 25, "expected an expression, found ';'"),
    ("a = 1;\nb = (2 + 3;", 2, 11, "expected ')' to close the parenthesis"),
    ("a = 1\nb = 2;", 2, 1, "expected ';' between statements"),
    ("a = 1 ? 2;", 1, 10, "expected ':' in a conditional expression"),
    ("// comment\n  x = avg(1, 2;", 2, 15, "expected ')' to close the arguments"),
    ("x = 3 # 4;", 1, 7, "unexpected character '#'"),
    ('x = time("2026-01-05);', 1, 10, "unterminated string literal"),
    ("x = floor(2.5);", 1, 5, "unknown function floor()"),
    ("x = percentile(1);", 1, 5, "percentile() takes 2 arguments, got 1"),
    ("x = rand(1);", 1, 5, "rand() takes 0 arguments, got 1"),
    ("x = $PendingTasks.GetSamples(1);", 1, 19, "unknown method GetSamples()"),
    ("x = $PendingTasks.GetSample();", 1, 19, "GetSample() takes 1 to 3 arguments, got 0"),
    ("y = 1;\nx = y.GetSample(1);", 2, 7, "can only be called on a sampled"),
    ("x = $CurrentDedicatedNodes.Count();", 1, 28, "can only be called on a sampled"),
    ("x = TimeInterval_Minute.;", 1, 25, "expected a member or method name"),
    ("\n\n   $CPUPercent = 5;", 3, 4, "cannot assign to $CPUPercent"),
    ("$TaskSlotsPerNode = 2;", 1, 1, "read-only service-defined variable"),
    ("$currentdedicated = 2;", 1, 1, "cannot assign to $CurrentDedicated"),
    ("x = (1 + 2", 1, 11, "found end of formula"),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), SYNTAX_CASES,
                         ids=[case[3][:30] for case in SYNTAX_CASES])
def test_syntax_errors_carry_positions(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(FormulaSyntaxError) as caught:
        parse_formula(text)
    error = caught.value
    assert error.code == SYNTAX_ERROR
    assert (error.line, error.column) == (line, column)
    assert words in error.message
    assert str(error) == f"Line {line}, Col {column}: {error.message}"


def test_evaluate_reports_syntax_errors_as_batch_errors() -> None:
    result = evaluate_formula("a = 1;\n$TargetDedicatedNodes = a +;", SampleHistory(), NOW,
                              target_dedicated=2)
    assert result.error is not None
    assert result.error.to_dict() == {
        "code": "AutoScalingFormulaSyntaxError",
        "message": "The specified auto-scaling formula has a syntax error.",
        "values": [{"name": "Message",
                    "value": "Line 2, Col 28: expected an expression, found ';'"}],
    }
    assert result.target_dedicated == 2  # nothing applied


def test_hundred_statements_pass_and_the_hundred_and_first_fails() -> None:
    hundred = "".join(f"v{i} = {i};\n" for i in range(100))
    assert len(parse_formula(hundred).statements) == 100
    with pytest.raises(FormulaSyntaxError) as caught:
        parse_formula(hundred + "v100 = 100;")
    assert caught.value.code == TOO_LONG
    assert (caught.value.line, caught.value.column) == (101, 1)
    assert "more than 100 statements" in caught.value.message


def test_empty_statements_and_comments_do_not_count() -> None:
    text = ";;\n// only a comment\n" + "x = 1;;;\n" * 100
    assert len(parse_formula(text).statements) == 100


def test_eight_kilobytes_pass_and_one_byte_more_fails() -> None:
    statement = "$TargetDedicatedNodes = 1;"
    padding = "// " + "x" * (MAX_FORMULA_BYTES - len(statement) - 4) + "\n"
    exact = padding + statement
    assert len(exact.encode()) == MAX_FORMULA_BYTES
    assert len(parse_formula(exact).statements) == 1
    with pytest.raises(FormulaSyntaxError) as caught:
        parse_formula(" " + exact)
    assert caught.value.code == TOO_LONG
    assert "8193 bytes" in caught.value.message
    # multi-byte characters count as bytes, not characters
    with pytest.raises(FormulaSyntaxError):
        parse_formula("// " + "é" * 4096 + "\n" + statement)


def test_precedence_and_positions_of_the_tree() -> None:
    program = parse_formula("x = 1 + 2 * 3 > 6 && !0 ? -1 : 2;")
    (statement,) = program.statements
    assert statement.target == "x"
    conditional = statement.expr
    assert isinstance(conditional, nodes.Conditional)
    condition = conditional.condition
    assert isinstance(condition, nodes.Binary) and condition.op == "&&"
    comparison = condition.left
    assert isinstance(comparison, nodes.Binary) and comparison.op == ">"
    addition = comparison.left
    assert isinstance(addition, nodes.Binary) and addition.op == "+"
    assert isinstance(addition.right, nodes.Binary) and addition.right.op == "*"
    assert (addition.right.line, addition.right.column) == (1, 9)


def test_statement_text_is_kept_for_error_reports() -> None:
    program = parse_formula("a = 1;\n  b = avg(1,\n      2);  // trailing\n")
    assert [s.text for s in program.statements] == ["a = 1", "b = avg(1, 2)"]
    assert (program.statements[1].line, program.statements[1].column) == (2, 3)


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    # the statement's expression and 39 parentheses inside it parse; a 40th does not
    assert parse_formula("x = " + "(" * 39 + "1" + ")" * 39 + ";")
    with pytest.raises(FormulaSyntaxError, match="nest more than 40 levels") as caught:
        parse_formula("x = " + "(" * 40 + "1" + ")" * 40 + ";")
    assert (caught.value.line, caught.value.column) == (1, 45)
    # a whole 8 KB of '(' or of '-' fails the same way, never with RecursionError
    for char in "(-!":
        with pytest.raises(FormulaSyntaxError, match="nest more than"):
            parse_formula("x = " + char * (MAX_FORMULA_BYTES - 4))
    # long chains of operators build deep trees: 200 levels pass, more are refused
    assert evaluate_formula("x = " + "+".join(["1"] * 200) + ";", SampleHistory(),
                            NOW).results["x"] == 200.0
    with pytest.raises(FormulaSyntaxError, match="too complex") as caught:
        parse_formula("a = 1;\n  x = " + "*".join(["1"] * 202) + ";")
    assert (caught.value.line, caught.value.column) == (2, 3)
