"""Small helpers shared by the service: time stamps, ETags, durations."""

from __future__ import annotations

import functools
import itertools
import time
from datetime import UTC, datetime, timedelta

import isodate

INFINITE = "P10675199DT2H48M5.4775807S"
_etags = itertools.count(int(time.time() * 1000))


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    """RFC 3339 with a Z, as Batch writes times."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def http_date(moment: datetime | None = None) -> str:
    return (moment or now()).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def etag() -> str:
    return f"0x8DC{next(_etags):013X}"


@functools.lru_cache(maxsize=1024)
def _parse_seconds(duration: str) -> float | None:
    try:
        value = isodate.parse_duration(duration)
    except (isodate.ISO8601Error, ValueError, OverflowError):
        raise ValueError(f"not an ISO 8601 duration: {duration!r}") from None
    if not isinstance(value, timedelta):
        value = value.totimedelta(start=datetime(2000, 1, 1))
    total = value.total_seconds()
    return None if total >= 10**11 else total


def seconds(duration: str | None, default: float | None = None) -> float | None:
    """An ISO 8601 duration in seconds; None for Batch's "infinite" or an absent value."""
    if not duration:
        return default
    return _parse_seconds(duration)
