"""Sample histories for the autoscale tests, built newest sample first like GetSample."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from emulator.autoscale import SampleHistory

DATA = Path(__file__).parent / "data"
# Monday 5 January 2026, 10:00 UTC.
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
PERIOD = timedelta(seconds=30)


def formula(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def history(now: datetime = NOW, **series: Sequence[float] | float) -> SampleHistory:
    """`history(PendingTasks=[3, 5, 5])`: samples at now, now-30s, now-60s (newest first);
    a bare number is that value held for 30 minutes (60 samples)."""
    result = SampleHistory()
    for metric, values in series.items():
        listed = [float(values)] * 60 if isinstance(values, int | float) else list(values)
        for index, value in enumerate(listed):
            result.add(metric, now - index * PERIOD, value)
    return result


def gap_history(metric: str, values: Sequence[float], skip: int,
                now: datetime = NOW) -> SampleHistory:
    """Like history() but the newest `skip` samples are missing (delayed or lost)."""
    result = SampleHistory()
    for index, value in enumerate(values):
        result.add(metric, now - (index + skip) * PERIOD, value)
    return result
