"""Sample histories: what the Batch service records about a pool every 30 seconds.

A `SampleHistory` holds one time series per metric (`PendingTasks`, `CPUPercent`, ...)
and the node counts (`CurrentDedicatedNodes`, `CurrentLowPriorityNodes`) and
`TaskSlotsPerNode`, whose newest sample is the value a formula reads. Names may be given
with or without the `$`; unknown names are refused so that a typo cannot go unnoticed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from emulator.autoscale.names import METRICS, SCALAR_ALIASES, SCALARS

SAMPLE_PERIOD = timedelta(seconds=30)
KNOWN_NAMES: frozenset[str] = METRICS | frozenset(SCALARS)


def utc(moment: datetime) -> datetime:
    """Timestamps are compared in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def canonical_name(name: str) -> str:
    """`$PendingTasks` or `PendingTasks` -> `PendingTasks`; ValueError for unknown names."""
    bare = name[1:] if name.startswith("$") else name
    bare = SCALAR_ALIASES.get(bare, bare)
    if bare not in KNOWN_NAMES:
        raise ValueError(
            f"unknown metric {name!r}; known metrics: " + ", ".join(sorted(KNOWN_NAMES))
        )
    return bare


class SampleHistory:
    """Per-metric time series of samples, kept in time order (oldest first)."""

    def __init__(
        self,
        series: Mapping[str, Iterable[tuple[datetime, float]]] | None = None,
        period: timedelta = SAMPLE_PERIOD,
    ) -> None:
        self.period = period
        self._times: dict[str, list[datetime]] = {}
        self._values: dict[str, list[float]] = {}
        for name, samples in (series or {}).items():
            for timestamp, value in samples:
                self.add(name, timestamp, value)

    def add(self, metric: str, timestamp: datetime, value: float) -> None:
        """Record one sample; a sample at an existing timestamp replaces it."""
        name = canonical_name(metric)
        moment = utc(timestamp)
        times = self._times.setdefault(name, [])
        values = self._values.setdefault(name, [])
        index = bisect.bisect_left(times, moment)
        if index < len(times) and times[index] == moment:
            values[index] = float(value)
        else:
            times.insert(index, moment)
            values.insert(index, float(value))

    def samples(self, metric: str) -> list[tuple[datetime, float]]:
        """All samples of a metric, oldest first."""
        name = canonical_name(metric)
        return list(zip(self._times.get(name, []), self._values.get(name, []), strict=True))

    def window(self, metric: str, older: datetime, newer: datetime) -> list[float]:
        """Values with `older < timestamp <= newer`, newest first."""
        name = canonical_name(metric)
        times = self._times.get(name, [])
        low = bisect.bisect_right(times, utc(older))
        high = bisect.bisect_right(times, utc(newer))
        return self._values.get(name, [])[low:high][::-1]

    def latest(self, metric: str, at: datetime | None = None) -> float | None:
        """The newest value (at or before `at`, if given), or None without samples."""
        name = canonical_name(metric)
        times = self._times.get(name, [])
        high = len(times) if at is None else bisect.bisect_right(times, utc(at))
        return self._values[name][high - 1] if high else None

    def newest(self, metric: str, count: int, at: datetime | None = None) -> list[float]:
        """Up to `count` newest values at or before `at`, newest first."""
        name = canonical_name(metric)
        times = self._times.get(name, [])
        high = len(times) if at is None else bisect.bisect_right(times, utc(at))
        return self._values.get(name, [])[max(0, high - count) : high][::-1]

    def count(self, metric: str) -> int:
        return len(self._times.get(canonical_name(metric), []))

    def begin_time(self, metric: str) -> datetime | None:
        times = self._times.get(canonical_name(metric), [])
        return times[0] if times else None

    def end_time(self) -> datetime | None:
        """The newest timestamp over all metrics (None for an empty history)."""
        ends = [times[-1] for times in self._times.values() if times]
        return max(ends) if ends else None

    def trim(self, before: datetime) -> None:
        """Forget samples older than `before` (the emulator keeps a bounded history)."""
        cutoff = utc(before)
        for name, times in self._times.items():
            index = bisect.bisect_left(times, cutoff)
            del times[:index]
            del self._values[name][:index]

    def metrics(self) -> list[str]:
        return sorted(name for name, times in self._times.items() if times)

    @classmethod
    def constant(
        cls,
        values: Mapping[str, float],
        span: timedelta = timedelta(minutes=30),
        now: datetime | None = None,
        period: timedelta = SAMPLE_PERIOD,
    ) -> SampleHistory:
        """Every named metric held at one value: one sample per period over `span`, the
        newest at `now` (default: the current time)."""
        end = utc(now or datetime.now(UTC))
        history = cls(period=period)
        count = max(1, int(span / period))
        for name, value in values.items():
            for index in range(count):
                history.add(name, end - index * period, value)
        return history

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[object]]) -> SampleHistory:
        """From `{"PendingTasks": [["2026-01-05T10:00:00Z", 4], ...], ...}`; each sample may
        also be `{"timestamp": ..., "value": ...}`. Raises ValueError on bad input."""
        history = cls()
        for name, samples in data.items():
            if not isinstance(samples, list | tuple):
                raise ValueError(f"{name}: expected a list of [timestamp, value] samples, got "
                                 f"{samples!r}")
            for sample in samples:
                if isinstance(sample, Mapping):
                    stamp, value = sample.get("timestamp"), sample.get("value")
                elif isinstance(sample, list | tuple) and len(sample) == 2:
                    stamp, value = sample
                else:
                    raise ValueError(f"{name}: a sample must be [timestamp, value], got "
                                     f"{sample!r}")
                history.add(name, parse_timestamp(stamp), _number(value, name))
        return history

    def to_dict(self) -> dict[str, list[list[object]]]:
        """The inverse of from_dict (timestamps as ISO 8601 strings)."""
        return {
            name: [[moment.isoformat().replace("+00:00", "Z"), value]
                   for moment, value in self.samples(name)]
            for name in self.metrics()
        }


def parse_timestamp(stamp: object) -> datetime:
    """An ISO 8601 string (a trailing `Z` allowed) or a datetime, as UTC."""
    if isinstance(stamp, datetime):
        return utc(stamp)
    if isinstance(stamp, str):
        try:
            return utc(datetime.fromisoformat(stamp.strip()))
        except ValueError:
            pass
    raise ValueError(f"not an ISO 8601 timestamp: {stamp!r}")


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name}: sample value must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name}: sample value must be a number, got {value!r}") from None
