"""Resource and output files: the local store (`file://`, an emulator extension) and Azurite
(real blob SAS URLs through azure-storage-blob)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as m

from tests.emulator.helpers import make_job, make_pool, read, task, wait_task

pytestmark = pytest.mark.emulator

WRITE_OUTPUTS = (
    "/bin/sh -c 'mkdir -p sub/deeper && echo a > a.csv && echo h > .hidden.csv && echo b > b.tsv"
    " && echo l > sub/deeper/x.log && echo r > res1.csv && cat in.txt inputs/data/one.txt;"
    " exit ${CODE:-0}'"
)


def _outputs(url: str) -> list[Any]:
    def out(pattern: str, path: str, condition: str = "taskcompletion") -> Any:
        return m.OutputFile(
            file_pattern=pattern,
            destination=m.OutputFileDestination(
                container=m.OutputFileBlobContainerDestination(container_url=url, path=path)
            ),
            upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
        )

    return [
        out("*.csv", "csv"),
        out("**/*.log", "logs"),
        out("../std*.txt", "std"),
        out("res?.[ct]sv", "single-ish"),
        out("b.tsv", "renamed.tsv", "tasksuccess"),
        out("a.csv", "on-failure.csv", "taskfailure"),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "inputs" / "data").mkdir(parents=True)
    (root / "inputs" / "in.txt").write_text("input\n")
    (root / "inputs" / "data" / "one.txt").write_text("one\n")
    (root / "inputs" / "skip.txt").write_text("skip\n")
    (root / "outputs").mkdir()
    return root


@pytest.fixture(scope="module")
def pool(batch_client: Any) -> str:
    return make_pool(batch_client, nodes=1, slots=2)


def test_local_store_resource_and_output_files(batch_client: Any, pool: str, store: Path) -> None:
    job_id = make_job(batch_client, pool)
    inputs = (store / "inputs").as_uri()
    batch_client.create_task(
        job_id,
        task(
            "io",
            WRITE_OUTPUTS,
            resource_files=[
                m.ResourceFile(http_url=f"{inputs}/in.txt", file_path="in.txt", file_mode="0600"),
                m.ResourceFile(
                    storage_container_url=inputs, blob_prefix="data/", file_path="inputs"
                ),
            ],
            output_files=_outputs((store / "outputs").as_uri()),
        ),
    )
    done = wait_task(batch_client, job_id, "io")
    assert done.execution_info.result == "success", done.execution_info.failure_info
    assert read(batch_client, job_id, "io") == "input\none\n"
    out = store / "outputs"
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert found == sorted(
        [
            "csv/a.csv",
            "csv/res1.csv",
            "logs/sub/deeper/x.log",
            "std/stdout.txt",
            "std/stderr.txt",
            "single-ish/res1.csv",
            "renamed.tsv",
        ]
    )
    files = {f.name for f in batch_client.list_task_files(job_id, "io", recursive=True)}
    assert "wd/inputs/data/one.txt" in files and "wd/inputs/skip.txt" not in files
    assert "fileuploadout.txt" in files
    log = read(batch_client, job_id, "io", "fileuploadout.txt")
    assert "renamed.tsv" in log
    node_id = done.node_info.node_id
    mode = batch_client.get_task_file_properties(job_id, "io", "wd/in.txt").file_mode
    assert mode.endswith("600"), mode
    assert node_id


def test_failure_condition_and_upload_error(batch_client: Any, pool: str, store: Path) -> None:
    job_id = make_job(batch_client, pool)
    batch_client.create_task(
        job_id,
        task(
            "fails",
            WRITE_OUTPUTS,
            environment_settings=[m.EnvironmentSetting(name="CODE", value="2")],
            resource_files=[m.ResourceFile(storage_container_url=(store / "inputs").as_uri())],
            output_files=_outputs((store / "outputs").as_uri()),
        ),
    )
    assert wait_task(batch_client, job_id, "fails").execution_info.exit_code == 2
    out = store / "outputs"
    assert (out / "on-failure.csv").exists() and not (out / "renamed.tsv").exists()
    missing = (store / "no-such-container").as_uri()
    batch_client.create_task(
        job_id,
        task(
            "uploadfail",
            "/bin/sh -c 'echo x > r.txt'",
            output_files=[
                m.OutputFile(
                    file_pattern="r.txt",
                    destination=m.OutputFileDestination(
                        container=m.OutputFileBlobContainerDestination(container_url=missing)
                    ),
                    upload_options=m.OutputFileUploadConfiguration(
                        upload_condition="taskcompletion"
                    ),
                )
            ],
        ),
    )
    done = wait_task(batch_client, job_id, "uploadfail")
    assert done.execution_info.exit_code == 0
    assert done.execution_info.result == "failure"
    assert done.execution_info.failure_info.code == "FileUploadFailed"
    assert "r.txt" in read(batch_client, job_id, "uploadfail", "fileuploaderr.txt")
    batch_client.create_task(
        job_id,
        task(
            "nofile",
            "true",
            resource_files=[
                m.ResourceFile(http_url=(store / "absent.txt").as_uri(), file_path="x")
            ],
        ),
    )
    failed = wait_task(batch_client, job_id, "nofile")
    assert failed.execution_info.result == "failure"
    assert failed.execution_info.failure_info.category == "usererror"
    assert failed.execution_info.exit_code is None


@pytest.mark.azurite
def test_azurite_sas_resource_and_output_files(batch_client: Any, pool: str, azurite: Any) -> None:
    from azure.storage.blob import (
        BlobServiceClient,
        ContainerSasPermissions,
        generate_blob_sas,
        generate_container_sas,
    )

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = f"emu{os.getpid()}"
    container = service.create_container(name)
    container.upload_blob("in.txt", b"input\n")
    container.upload_blob("data/one.txt", b"one\n")
    container.upload_blob("other/skip.txt", b"skip\n")
    out = service.create_container(f"{name}-out")
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    read_sas = generate_container_sas(
        azurite.account,
        name,
        account_key=azurite.key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=expiry,
    )
    blob_sas = generate_blob_sas(
        azurite.account, name, "in.txt", account_key=azurite.key, permission="r", expiry=expiry
    )
    write_sas = generate_container_sas(
        azurite.account,
        f"{name}-out",
        account_key=azurite.key,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=expiry,
    )
    base = azurite.blob_endpoint
    job_id = make_job(batch_client, pool)
    batch_client.create_task(
        job_id,
        task(
            "blob",
            WRITE_OUTPUTS,
            resource_files=[
                m.ResourceFile(http_url=f"{base}/{name}/in.txt?{blob_sas}", file_path="in.txt"),
                m.ResourceFile(
                    storage_container_url=f"{base}/{name}?{read_sas}",
                    blob_prefix="data/",
                    file_path="inputs",
                ),
            ],
            output_files=_outputs(f"{base}/{name}-out?{write_sas}"),
        ),
    )
    done = wait_task(batch_client, job_id, "blob")
    assert done.execution_info.result == "success", done.execution_info.failure_info
    assert read(batch_client, job_id, "blob") == "input\none\n"
    blobs = sorted(b.name for b in out.list_blobs())
    assert blobs == sorted(
        [
            "csv/a.csv",
            "csv/res1.csv",
            "logs/sub/deeper/x.log",
            "std/stdout.txt",
            "std/stderr.txt",
            "single-ish/res1.csv",
            "renamed.tsv",
        ]
    )
    assert out.download_blob("logs/sub/deeper/x.log").readall() == b"l\n"
    assert "sig=" not in read(batch_client, job_id, "blob", "fileuploadout.txt")
