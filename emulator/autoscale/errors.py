"""Errors of the formula language, shaped like the Batch service's.

Batch reports a formula problem as an error with a `code`, a `message` and `values`
(name/value pairs); the position goes in a `Message` value as `Line L, Col C: ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SYNTAX_ERROR = "AutoScalingFormulaSyntaxError"
TOO_LONG = "AutoScaleFormulaTooLong"
EVALUATION_ERROR = "AutoScalingFormulaEvaluationError"
INSUFFICIENT_SAMPLES = "InsufficientSampleData"

MESSAGES = {
    SYNTAX_ERROR: "The specified auto-scaling formula has a syntax error.",
    TOO_LONG: "The specified auto-scaling formula exceeds lengths limit.",
    EVALUATION_ERROR: "Autoscale evaluation failed",
    INSUFFICIENT_SAMPLES: "Autoscale evaluation failed due to insufficient sample data",
}


class FormulaSyntaxError(ValueError):
    """The formula cannot be parsed (or breaks a static rule such as the limits).

    `line` and `column` are 1-based and point at the offending token.
    """

    def __init__(self, code: str, message: str, line: int, column: int) -> None:
        super().__init__(f"Line {line}, Col {column}: {message}")
        self.code = code
        self.message = message
        self.line = line
        self.column = column

    def to_error(self) -> AutoScaleError:
        return AutoScaleError(
            code=self.code,
            message=MESSAGES[self.code],
            values=[("Message", str(self))],
            line=self.line,
            column=self.column,
        )


@dataclass(frozen=True)
class AutoScaleError:
    """The `error` of an autoScaleRun: code, message and name/value details.

    `line`/`column` locate the failing expression (also inside the `Message` value) and
    `statement` is the text of the failing statement (also a `Statement` value).
    """

    code: str
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)
    line: int = 0
    column: int = 0
    statement: str = ""

    @property
    def detail(self) -> str:
        """The `Message` value: `Line L, Col C: what went wrong`."""
        for name, value in self.values:
            if name == "Message":
                return value
        return self.message

    def to_dict(self) -> dict[str, object]:
        """The REST shape: `{"code", "message", "values": [{"name", "value"}]}`."""
        return {
            "code": self.code,
            "message": self.message,
            "values": [{"name": name, "value": value} for name, value in self.values],
        }


class FormulaEvaluationError(Exception):
    """Raised inside the evaluator; `evaluate_formula` turns it into an AutoScaleError."""

    def __init__(self, code: str, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line
        self.column = column
