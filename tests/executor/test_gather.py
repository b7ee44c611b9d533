"""`gather` and `reduce_as_completed` over any futures (no server: the standard library's
thread pool), including the orders and error paths the emulator tests do not pin down."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

import pytest

from launcher.fetch import gather, reduce_as_completed


def test_gather_keeps_submission_order_not_completion_order() -> None:
    finished: list[str] = []

    def job(name: str, delay: float) -> str:
        time.sleep(delay)
        finished.append(name)
        return name

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(job, "slow", 0.2), pool.submit(job, "fast", 0.0)]
        assert gather(futures) == ["slow", "fast"]
        assert finished == ["fast", "slow"]


def test_gather_raises_the_first_failure_without_waiting_for_the_rest() -> None:
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        blocked: Future[object] = pool.submit(release.wait, 10)
        failing: Future[object] = pool.submit(lambda: 1 / 0)
        started = time.monotonic()
        with pytest.raises(ZeroDivisionError):
            gather([blocked, failing])
        assert time.monotonic() - started < 5
        release.set()


def test_gather_return_exceptions_and_cancelled() -> None:
    done: Future[int] = Future()
    done.set_result(1)
    failed: Future[int] = Future()
    failed.set_exception(KeyError("k"))
    cancelled: Future[int] = Future()
    cancelled.cancel()
    out = gather([done, failed, cancelled], return_exceptions=True)
    assert out[0] == 1 and isinstance(out[1], KeyError) and isinstance(out[2], CancelledError)
    with pytest.raises(CancelledError):
        gather([done, cancelled])
    with pytest.raises(CancelledError):
        reduce_as_completed(lambda acc, x: acc + x, [done, cancelled], 0)


def test_gather_timeout() -> None:
    never: Future[int] = Future()
    with pytest.raises(TimeoutError, match="1 of 1"):
        gather([never], timeout=0.1)


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_reduce_as_completed_folds_in_completion_order_and_cancels_on_error() -> None:
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_nap, d) for d in (0.3, 0.0, 0.15)]
        start: list[float] = []
        order = reduce_as_completed(lambda acc, x: [*acc, x], futures, start)
        assert order == [0.0, 0.15, 0.3]
    pending: Future[int] = Future()
    bad: Future[int] = Future()
    bad.set_exception(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        reduce_as_completed(lambda acc, x: acc + x, [bad, pending], 0)
    assert pending.cancelled()


def test_package_exports_the_functions_lazily() -> None:
    """`from launcher import gather` is the function however often it is looked up (the
    module is `launcher.fetch`, so no submodule attribute can shadow it)."""
    import launcher

    assert "gather" in launcher.__all__ and "reduce_as_completed" in launcher.__all__
    assert launcher.gather is gather and launcher.gather is gather  # twice: still the function
    assert launcher.reduce_as_completed is reduce_as_completed
