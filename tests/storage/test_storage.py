"""The blob stores: the local directory store and Azurite through the real blob SDK."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from launcher.azurite import KEY, connection_string
from launcher.errors import UserError
from launcher.storage import (
    BlobStore,
    LocalStore,
    Store,
    check_blob_name,
    open_store,
)


class RequestLog:
    """An azure-core per-call hook: records (method, path) of every request sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request: Any) -> None:
        http = request.http_request
        self.calls.append((http.method, urllib.parse.urlparse(http.url).path))


@pytest.fixture(params=["local", "azurite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    container = f"t{abs(hash(request.node.name)) % 10**8:08d}-store"
    if request.param == "local":
        s: Store = LocalStore(container)
    else:
        azurite = request.getfixturevalue("azurite")
        s = BlobStore(container, connection_string=azurite.connection_string)
    s.ensure_container()
    s.ensure_container()  # idempotent
    return s


def _http(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _sas_fields(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(url).query).items()}


@pytest.mark.azurite
def test_roundtrip_list_and_download(store: Store, tmp_path: Path) -> None:
    store.upload_bytes(b"alpha", "run1/a.txt")
    src = tmp_path / "b.bin"
    src.write_bytes(b"\x00\x01" * 1000)
    store.upload_file(src, "run1/sub/b.bin")
    store.upload_bytes(b"other", "run2/c.txt")
    assert store.list("run1/") == ["run1/a.txt", "run1/sub/b.bin"]
    assert store.exists("run2/c.txt") and not store.exists("run2/missing")
    out = store.download("run1/sub/b.bin", tmp_path / "dl" / "b.bin")
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.azurite
def test_content_addressed_upload_is_skipped_when_present(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "sim.py"
    src.write_text("print('hi')\n")
    uploads: list[str] = []
    real_upload = store.upload_file

    def counting_upload(path: Path, blob_name: str) -> str:
        uploads.append(blob_name)
        return real_upload(path, blob_name)

    store.upload_file = counting_upload  # type: ignore[method-assign]
    first = store.put_content_addressed(src)
    second = store.put_content_addressed(src)
    assert first == second
    assert first.startswith("cas/") and first.endswith("/sim.py") and len(first.split("/")[1]) == 64
    assert uploads == [first]
    src.write_text("print('changed')\n")
    third = store.put_content_addressed(src)
    assert third != first and uploads == [first, third]
    by_bytes = store.put_content_addressed(b"print('changed')\n", "sim.py")
    assert by_bytes == third and len(uploads) == 2


@pytest.mark.azurite
def test_content_addressed_recheck_costs_one_head_request(azurite: Any, tmp_path: Path) -> None:
    log = RequestLog()
    store = BlobStore(
        "cas-requests", connection_string=azurite.connection_string, raw_request_hook=log
    )
    store.ensure_container()
    blob = store.put_content_addressed(b"payload", "p.bin")
    modified = store.client.get_blob_client(blob).get_blob_properties().last_modified
    log.calls.clear()
    assert store.put_content_addressed(b"payload", "p.bin") == blob
    assert [m for m, _ in log.calls] == ["HEAD"]
    assert store.client.get_blob_client(blob).get_blob_properties().last_modified == modified


@pytest.mark.azurite
def test_download_prefix_skips_existing_files(store: Store, tmp_path: Path) -> None:
    for i in range(12):
        store.upload_bytes(f"out {i}".encode(), f"runs/r1/t{i:02d}/out.txt")
    store.upload_bytes(b"x", "runs/r2/t00/out.txt")
    dest = tmp_path / "collect"
    got = store.download_prefix("runs/r1/", dest)
    assert len(got) == 12
    assert (dest / "t03" / "out.txt").read_text() == "out 3"
    assert not (dest / "r2").exists()
    assert store.download_prefix("runs/r1/", dest) == []
    (dest / "t05" / "out.txt").unlink()
    (dest / "t07" / "out.txt").write_text("truncated")  # wrong size: fetched again
    again = sorted(p.relative_to(dest).as_posix() for p in store.download_prefix("runs/r1/", dest))
    assert again == ["t05/out.txt", "t07/out.txt"]
    assert (dest / "t07" / "out.txt").read_text() == "out 7"
    forced = store.download_prefix("runs/r1/", dest, skip_existing=False)
    assert len(forced) == 12


@pytest.mark.azurite
def test_read_sas_reads_but_cannot_write(azurite: Any) -> None:
    store = BlobStore("sas-read", connection_string=azurite.connection_string)
    store.ensure_container()
    store.upload_bytes(b"input data", "in/data.txt")
    url = store.read_url("in/data.txt", timedelta(minutes=30))
    assert KEY not in url and "sig=" in url
    fields = _sas_fields(url)
    assert fields["sp"] == "r"
    expiry = datetime.fromisoformat(fields["se"].replace("Z", "+00:00"))
    assert abs((expiry - datetime.now(UTC)) - timedelta(minutes=30)) < timedelta(minutes=1)
    assert _http(url) == (200, b"input data")
    status, _ = _http(url, "PUT", b"overwritten")
    assert status == 403
    assert store.client.download_blob("in/data.txt").readall() == b"input data"
    # A blob SAS is for that blob only.
    other = url.replace("in/data.txt", "in/other.txt")
    assert _http(other, "PUT", b"x")[0] == 403


@pytest.mark.azurite
def test_container_sas_permissions_are_least(azurite: Any) -> None:
    store = BlobStore("sas-container", connection_string=azurite.connection_string)
    store.ensure_container()
    store.upload_bytes(b"existing", "logs/old.txt")
    write = store.container_write_url(timedelta(hours=2))
    assert _sas_fields(write)["sp"] == "cw"
    base, query = write.split("?", 1)
    assert _http(f"{base}/logs/new.txt?{query}", "PUT", b"task output")[0] == 201
    assert store.client.download_blob("logs/new.txt").readall() == b"task output"
    assert _http(f"{base}/logs/old.txt?{query}")[0] == 403  # cannot read
    assert _http(f"{base}?restype=container&comp=list&{query}")[0] == 403  # cannot list
    assert _http(f"{base}/logs/old.txt?{query}", "DELETE")[0] == 403  # cannot delete
    read = store.container_read_url(timedelta(hours=2))
    assert _sas_fields(read)["sp"] == "rl"
    rbase, rquery = read.split("?", 1)
    status, body = _http(f"{rbase}?restype=container&comp=list&{rquery}")
    assert status == 200 and b"logs/old.txt" in body
    assert _http(f"{rbase}/logs/x.txt?{rquery}", "PUT", b"x")[0] == 403


def test_local_store_urls_and_names(tmp_path: Path) -> None:
    store = LocalStore("inputs", root=tmp_path)
    store.ensure_container()
    blob = store.put_content_addressed(b"abc", "my file.txt")
    url = store.read_url(blob, timedelta(hours=1))
    assert url.startswith(f"file://{tmp_path.resolve()}/inputs/cas/")
    assert urllib.parse.unquote(urllib.parse.urlparse(url).path).endswith("/my file.txt")
    assert Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).read_bytes() == b"abc"
    assert store.container_write_url(timedelta(hours=1)) == (tmp_path / "inputs").as_uri()
    for bad in ["../escape", "/abs", "a/../../b", ""]:
        with pytest.raises(UserError):
            check_blob_name(bad)
    with pytest.raises(UserError):
        store.upload_bytes(b"x", "../../etc/passwd")


def test_open_store_choices_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path))
    local = open_store("local", "batchlaunch", env={})
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "store").resolve()
    # with a connection string nothing is started (tests/storage/test_azurite_autostart.py)
    azurite = open_store(
        "azurite",
        "batchlaunch",
        env={"AZURE_STORAGE_CONNECTION_STRING": connection_string(10000)},
    )
    assert isinstance(azurite, BlobStore) and azurite.account_name == "devstoreaccount1"
    conn = (
        "DefaultEndpointsProtocol=https;AccountName=mystore;"
        "AccountKey=a2V5;EndpointSuffix=core.windows.net"
    )
    env = {"AZURE_STORAGE_CONNECTION_STRING": conn}
    azure = open_store("https://mystore.blob.core.windows.net", "data", env=env)
    assert isinstance(azure, BlobStore) and azure.account_name == "mystore"
    with pytest.raises(UserError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_store(
            "https://other.blob.core.windows.net",
            "data",
            env={"AZURE_STORAGE_CONNECTION_STRING": conn},
        )
    with pytest.raises(UserError, match=r"\[storage\] url"):
        open_store("s3://bucket", "data", env={})
    with pytest.raises(UserError, match=r"\[storage\] container"):
        open_store("local", "Bad_Name", env={})


@pytest.mark.azurite
def test_delete_prefix_removes_only_that_prefix(azurite: Any, tmp_path: Path) -> None:
    for store in (
        LocalStore("deleteme", root=tmp_path),
        BlobStore("deleteme", connection_string=azurite.connection_string),
    ):
        store.ensure_container()
        for name in ("runs/r/a/x.txt", "runs/r/a/logs/stdout.txt", "runs/r/ab/y.txt"):
            store.upload_bytes(b"1", name)
        assert store.delete_prefix("runs/r/a/") == 2
        assert store.list() == ["runs/r/ab/y.txt"]
