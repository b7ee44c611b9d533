"""Runtime values of the formula language and how Batch prints them.

Types: double (`float`), doubleVec (`DoubleVec`), string (`str`), timestamp (`datetime`,
UTC-aware) and timeinterval (`TimeInterval`, whole 100 ns ticks like .NET's TimeSpan, so
that `TimeInterval_100ns` is exact). doubleVecList only exists as function arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

TICKS_PER_SECOND = 10_000_000


@dataclass(frozen=True, order=True)
class TimeInterval:
    """A signed duration in 100 ns ticks."""

    ticks: int

    @classmethod
    def from_seconds(cls, seconds: float) -> TimeInterval:
        return cls(round(seconds * TICKS_PER_SECOND))

    @classmethod
    def from_timedelta(cls, delta: timedelta) -> TimeInterval:
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return cls(micros * 10)

    def to_timedelta(self) -> timedelta:
        return timedelta(microseconds=self.ticks // 10)

    @property
    def seconds(self) -> float:
        return self.ticks / TICKS_PER_SECOND

    def __str__(self) -> str:
        """.NET TimeSpan's constant format: `[-][d.]hh:mm:ss[.fffffff]`."""
        sign = "-" if self.ticks < 0 else ""
        ticks = abs(self.ticks)
        total_seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
        days, rest = divmod(total_seconds, 86_400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        text = f"{sign}{f'{days}.' if days else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
        return text + (f".{fraction:07d}" if fraction else "")


TIME_INTERVAL_CONSTANTS: dict[str, TimeInterval] = {
    "TimeInterval_Zero": TimeInterval(0),
    "TimeInterval_100ns": TimeInterval(1),
    "TimeInterval_Microsecond": TimeInterval(10),
    "TimeInterval_Millisecond": TimeInterval(10_000),
    "TimeInterval_Second": TimeInterval(TICKS_PER_SECOND),
    "TimeInterval_Minute": TimeInterval(60 * TICKS_PER_SECOND),
    "TimeInterval_Hour": TimeInterval(3600 * TICKS_PER_SECOND),
    "TimeInterval_Day": TimeInterval(86_400 * TICKS_PER_SECOND),
    "TimeInterval_Week": TimeInterval(7 * 86_400 * TICKS_PER_SECOND),
    "TimeInterval_Year": TimeInterval(365 * 86_400 * TICKS_PER_SECOND),
}


@dataclass(frozen=True)
class DoubleVec:
    """A vector of doubles (what GetSample returns: newest sample first)."""

    values: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.values)


Value = float | DoubleVec | str | datetime | TimeInterval


def type_name(value: object) -> str:
    """The formula-language name of a value's type, for error messages."""
    if isinstance(value, float):
        return "double"
    if isinstance(value, DoubleVec):
        return "doubleVec"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, TimeInterval):
        return "timeinterval"
    return type(value).__name__


def format_double(value: float) -> str:
    """Batch prints integral doubles without decimals and others with 15 significant digits."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".15g")


def format_timestamp(value: datetime) -> str:
    """W3C-DTF in UTC with milliseconds, as in `$curTime=2016-10-13T19:18:47.805Z`."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_value(value: Value) -> str:
    """How a variable's value appears in Batch's evaluate result string."""
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, DoubleVec):
        return "[" + ",".join(format_double(v) for v in value.values) + "]"
    if isinstance(value, datetime):
        return format_timestamp(value)
    return str(value)
