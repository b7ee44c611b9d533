"""`fetch`-style helpers over futures, for users of AzureClusterlessHPC and doAzureParallel.

AzureClusterlessHPC's ``fetch(futures)`` returns all results and ``fetchreduce(futures,
op=+)`` folds them as they arrive; doAzureParallel's ``foreach(...) %dopar%`` has
``.combine``. Here they are plain functions over any `concurrent.futures` futures (so they
work with `BatchExecutor` and with the standard library's executors alike). See
docs/functions.md for the side-by-side table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, CancelledError, Future, as_completed, wait
from typing import TypeVar

T = TypeVar("T")
A = TypeVar("A")


def gather(
    futures: Iterable[Future[T]],
    *,
    return_exceptions: bool = False,
    timeout: float | None = None,
) -> list[T | BaseException]:
    """All results, in the order of ``futures`` (AzureClusterlessHPC's ``fetch``).

    The first exception (the first to happen, not the first in order) is raised as soon
    as it is known and the futures not yet done are cancelled, unless
    ``return_exceptions``: then each failed call's exception takes its place in the list.
    ``timeout`` (seconds, for the whole gather) raises `TimeoutError`.
    """
    items = list(futures)
    # A cancelled future that no executor has notified never counts as done for `wait`.
    live = [f for f in items if not f.cancelled()]
    if return_exceptions:
        done, not_done = wait(live, timeout=timeout)
    else:
        done, not_done = wait(live, timeout=timeout, return_when=FIRST_EXCEPTION)
        for fut in done:
            if not fut.cancelled() and fut.exception() is not None:
                for other in not_done:
                    other.cancel()
                raise fut.exception()  # type: ignore[misc]
    if not_done:
        raise TimeoutError(f"{len(not_done)} of {len(items)} futures not done after {timeout} s")
    results: list[T | BaseException] = []
    for fut in items:
        if fut.cancelled():
            if not return_exceptions:
                raise CancelledError()
            results.append(CancelledError())
        elif fut.exception() is not None:
            if not return_exceptions:
                raise fut.exception()  # type: ignore[misc]
            results.append(fut.exception())  # type: ignore[arg-type]
        else:
            results.append(fut.result())
    return results


def reduce_as_completed(
    fn: Callable[[A, T], A],
    futures: Iterable[Future[T]],
    initial: A,
    *,
    timeout: float | None = None,
) -> A:
    """Fold results in the order they finish (AzureClusterlessHPC's ``fetchreduce``):
    ``acc = fn(acc, result)`` starting from ``initial``. Results are consumed as they
    arrive, so nothing but the accumulator is kept; the first failed call raises (and the
    rest are cancelled). ``fn`` must not depend on the order (e.g. sums, merges)."""
    items = list(futures)
    acc = initial
    try:
        if any(f.cancelled() for f in items):
            raise CancelledError()
        for fut in as_completed(items, timeout=timeout):
            acc = fn(acc, fut.result())
    except BaseException:
        for fut in items:
            fut.cancel()
        raise
    return acc


__all__ = ["gather", "reduce_as_completed"]
