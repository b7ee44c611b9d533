"""Unit tests (no server): OData filters, SharedKey verification against the SDK's own signer,
Batch glob patterns, and the store's batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from emulator import auth, files, odata
from emulator.config import DEFAULT_ACCOUNT, DEFAULT_KEY
from emulator.errors import BatchError
from emulator.store import Store

TASK = {"id": "t0007", "state": "completed", "executionInfo": {"exitCode": 3, "result": "failure"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state eq 'completed'", True),
        ("state eq 'COMPLETED'", True),
        ("state ne 'completed'", False),
        ("executionInfo/exitCode gt 2 and executionInfo/result eq 'failure'", True),
        ("executionInfo/exitCode le 2 or id eq 't0007'", True),
        ("not (state eq 'active')", True),
        ("startswith(id, 't00') and (state eq 'active' or state eq 'completed')", True),
        ("startswith(id, 'x')", False),
        ("nodeInfo/poolId eq 'p'", False),
    ],
)
def test_filters(text: str, expected: bool) -> None:
    predicate = odata.compile_filter(text)
    assert predicate is not None
    assert predicate(TASK) is expected


@pytest.mark.parametrize("text", ["state eq", "state xx 'a'", "(state eq 'a'", "state eq 'a' and"])
def test_bad_filters(text: str) -> None:
    with pytest.raises(BatchError) as exc:
        odata.compile_filter(text)
    assert exc.value.code == "InvalidQueryParameterValue" and exc.value.status == 400


def _signed(
    method: str, url: str, headers: dict[str, str], body: bytes | None = None
) -> HttpRequest:
    request = HttpRequest(method, url, headers=headers, content=body)
    policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(DEFAULT_ACCOUNT, DEFAULT_KEY))
    policy.on_request(PipelineRequest(request, PipelineContext(None)))
    return request


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        (
            "GET",
            "http://h/pools?api-version=2025-06-01&$filter=state%20eq%20%27active%27",
            {},
            None,
        ),
        (
            "POST",
            "http://h/jobs/j/addtaskcollection?api-version=2025-06-01",
            {"content-type": "application/json; odata=minimalmetadata", "Content-Length": "2"},
            b"{}",
        ),
        (
            "GET",
            "http://h/jobs/j/tasks/t/files/wd%2Fout%20dir%2Fx.txt?api-version=2025-06-01",
            {"ocp-range": "bytes=0-9"},
            None,
        ),
        ("DELETE", "http://h/pools/p?api-version=2025-06-01&timeOut=30", {}, None),
    ],
)
def test_sharedkey_matches_the_sdk_signer(
    method: str, url: str, headers: dict[str, str], body: bytes | None
) -> None:
    request = _signed(method, url, headers, body)
    path, _, query = request.url.split("//", 1)[1].partition("/")[2].partition("?")
    sent = {k.lower(): v for k, v in request.headers.items()}
    assert auth.verify(method, "/" + path, query, sent, DEFAULT_ACCOUNT, DEFAULT_KEY)
    assert not auth.verify(
        method, "/" + path, query, sent, DEFAULT_ACCOUNT, "d3Jvbmcta2V5LXdyb25nLWtleQ=="
    )
    assert not auth.verify(method, "/" + path, query, sent, "someoneelse", DEFAULT_KEY)
    tampered = dict(sent, **{"ocp-date": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert not auth.verify(method, "/" + path, query, tampered, DEFAULT_ACCOUNT, DEFAULT_KEY)


def test_output_file_patterns(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    (wd / "sub" / "deep").mkdir(parents=True)
    for name in (
        "a.csv",
        ".hidden.csv",
        "b.tsv",
        "sub/c.csv",
        "sub/deep/d.log",
        "r1.csv",
        "ra.csv",
    ):
        (wd / name).write_text(name)
    (tmp_path / "stdout.txt").write_text("out")

    def names(pattern: str) -> list[str]:
        return sorted(rel for _, rel in files.match(pattern, wd))

    assert names("*.csv") == ["a.csv", "r1.csv", "ra.csv"]
    assert names("**/*.csv") == ["a.csv", "r1.csv", "ra.csv", "sub/c.csv"]
    assert names("sub/**/*") == ["c.csv", "deep/d.log"]
    assert names("r?.csv") == ["r1.csv", "ra.csv"]
    assert names("r[0-9].csv") == ["r1.csv"]
    assert names("../std*.txt") == ["stdout.txt"]
    assert names("b.tsv") == ["b.tsv"]
    assert names("nothing*") == []


def test_store_keeps_the_latest_row_and_survives_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.mark("task", "j/a", lambda: {"v": 1})
    store.take()  # taken for a write that never happened (cancelled): flush must still write it
    store.mark("task", "j/b", lambda: {"v": 2})
    store.forget("task", "j/b")
    store.mark("task", "j/c", lambda: {"v": 3})
    store.flush()
    store.close()
    again = Store(tmp_path / "s.sqlite")
    assert dict(again.load("task")) == {"j/a": {"v": 1}, "j/c": {"v": 3}}
    again.close()


def test_store_reads_the_json_rows_of_an_older_state_dir(tmp_path: Path) -> None:
    import sqlite3

    Store(tmp_path / "s.sqlite").close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute(
            "INSERT INTO objects (kind, key, body) VALUES ('job', 'j', ?)",
            ('{"data": {"id": "j", "state": "active"}, "seq": 4}',),
        )
    store = Store(tmp_path / "s.sqlite")
    store.mark("job", "k", lambda: {"data": {"id": "k"}, "seq": 5})
    store.flush()
    assert dict(store.load("job")) == {
        "j": {"data": {"id": "j", "state": "active"}, "seq": 4},
        "k": {"data": {"id": "k"}, "seq": 5},
    }
    store.close()


@pytest.fixture
def gc_thresholds() -> Any:
    import gc

    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_old_generation_is_collected_when_idle_not_mid_request(gc_thresholds: Any) -> None:
    import gc
    import time

    from emulator.server import OldGenerationCollector

    collector = OldGenerationCollector(idle_after=1.0, max_interval=300.0)
    assert gc.get_threshold()[2] >= 1_000_000  # CPython never starts one by itself
    gc.collect()
    assert not collector.tick(last_request=0.0)  # nothing new in the old generation
    gc.collect(1)  # a young collection promotes survivors: the old generation is due
    assert gc.get_count()[2] > 0
    assert not collector.tick(last_request=time.monotonic())  # busy: not now
    assert collector.tick(last_request=time.monotonic() - 2.0)  # idle for 2 s: now
    assert gc.get_count()[2] == 0
    gc.collect(1)
    collector.last -= 301.0  # under constant load, still at least every max_interval
    assert collector.tick(last_request=time.monotonic())


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("task-0001_a", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("tâche", True),  # str.isalnum, as before the ASCII fast path
        ("a b", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_ids_are_checked_the_same_with_or_without_the_ascii_fast_path(value: str, ok: bool) -> None:
    from emulator.service import _require_id

    if ok:
        assert _require_id({"id": value}, "id") == value
    else:
        with pytest.raises(BatchError):
            _require_id({"id": value}, "id")
