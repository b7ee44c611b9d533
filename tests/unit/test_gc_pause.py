"""Garbage-collector handling for bulk work and for the console script's exit."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import launcher.cli
from launcher.gc_pause import paused_gc


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_paused_gc_disables_the_collector_and_restores_it(collector_enabled: None) -> None:
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # nested: the inner block must not re-enable it
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("restored on errors too")
    assert gc.isenabled()


def test_paused_gc_leaves_a_disabled_collector_disabled(collector_enabled: None) -> None:
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()


@pytest.mark.parametrize(("outcome", "code"), [(0, 0), (1, 1), (SystemExit(2), 2)])
def test_the_console_script_exits_with_mains_code_and_freezes_the_heap(
    outcome: int | SystemExit, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def main() -> int:
        if isinstance(outcome, SystemExit):
            raise outcome
        return outcome

    monkeypatch.setattr(launcher.cli, "main", main)
    thresholds = gc.get_threshold()
    try:
        with pytest.raises(SystemExit) as exited:
            launcher.cli.entry()
        assert exited.value.code == code
        assert gc.get_freeze_count() > 0  # the interpreter's last full collection is skipped
        assert gc.get_threshold() == launcher.cli.GC_THRESHOLDS
    finally:
        gc.unfreeze()  # this test process keeps running
        gc.set_threshold(*thresholds)
