"""Client pieces that need no server: Batch credentials, image catalog, pool bodies."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import pytest

from launcher.batch import connect
from launcher.client import Client, PoolSpec, spec_hash
from launcher.errors import UserError
from launcher.images import resolve_image
from launcher.storage import LocalStore


def _settings(endpoint: str | None, account: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(endpoint=endpoint, account=account)


def test_batch_credentials_resolution() -> None:
    with pytest.raises(UserError, match="AZURE_BATCH_ENDPOINT") as info:
        connect(_settings(None), env={})
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="not a URL"):
        connect(_settings("batch.example"), env={})
    with pytest.raises(UserError, match="AZURE_BATCH_ACCOUNT"):
        connect(
            _settings("https://acct.westeurope.batch.azure.com"),
            env={"AZURE_BATCH_ACCESS_KEY": "a2V5"},
        )
    with pytest.raises(UserError, match="AZURE_BATCH_ACCESS_KEY"):
        connect(_settings("http://batch.example.org:8080"), env={})
    shared = connect(
        _settings("https://acct.westeurope.batch.azure.com", "acct"),
        env={"AZURE_BATCH_ACCESS_KEY": "a2V5"},
    )
    assert shared.account == "acct" and shared.polling_interval == 5.0 and not shared.emulator
    # No key: Entra ID. Without any sign-in on this machine that is one prompt error, not
    # a minute of retries inside the SDK.
    started = time.monotonic()
    with pytest.raises(UserError, match=r"\[batch\] endpoint: no Entra ID sign-in found"):
        connect(
            None,
            env={
                "AZURE_BATCH_ENDPOINT": "https://acct.westeurope.batch.azure.com",
                "AZURE_BATCH_ACCOUNT": "acct",
            },
        )
    assert time.monotonic() - started < 10
    local = connect(_settings("http://127.0.0.1:9"), env={})
    assert local.account == "devbatch" and local.emulator and local.polling_interval < 1


def test_image_resolution() -> None:
    ref, agent = resolve_image("ubuntu-22.04")
    assert ref == {
        "publisher": "canonical",
        "offer": "0001-com-ubuntu-server-jammy",
        "sku": "22_04-lts",
        "version": "latest",
    }
    assert agent == "batch.node.ubuntu 22.04"
    ref, _ = resolve_image(None, containers=True)
    assert ref["offer"] == "ubuntu-hpc"
    gallery = (
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/"
        "images/julia/versions/1.0.0"
    )
    assert resolve_image({"gallery_image_id": gallery})[0] == {"virtualMachineImageId": gallery}
    explicit = {"publisher": "p", "offer": "o", "sku": "s", "node_agent_sku_id": "batch.node.x"}
    assert resolve_image(explicit) == (
        {"publisher": "p", "offer": "o", "sku": "s", "version": "latest"},
        "batch.node.x",
    )
    for bad in ["ubuntu-9", {"gallery_image_id": "/bad"}, {"publisher": "p"}]:
        with pytest.raises(UserError, match=r"\[pool\] image"):
            resolve_image(bad)


@pytest.fixture
def local_client(tmp_path: Path) -> Client:
    return Client(store=LocalStore("batchlaunch", root=tmp_path / "store"))


def test_pool_body_autoscale_mounts_container(local_client: Client) -> None:
    spec = PoolSpec(
        id="sample-pool",
        container_image="python:3.10",
        mounts=[{"source": "input-test", "target": "input"}, "output-test"],
        autoscale=True,
        max_autoscale_nodes=10,
        cache_blobfuse=False,
        availability_zones="zonal",
        task_scheduling="pack",
    )
    body = local_client.pool_body(spec, start_script="echo hi\n")
    assert body["enableAutoScale"] is True and "targetDedicatedNodes" not in body
    assert "10" in body["autoScaleFormula"] and "$TargetDedicatedNodes" in body["autoScaleFormula"]
    assert body["autoScaleEvaluationInterval"] == "PT900S"
    vm = body["virtualMachineConfiguration"]
    assert vm["containerConfiguration"]["containerImageNames"] == ["python:3.10"]
    assert vm["nodePlacementConfiguration"] == {"policy": "zonal"}
    assert body["taskSchedulingPolicy"] == {"nodeFillType": "pack"}
    mounts = [m["azureBlobFileSystemConfiguration"] for m in body["mountConfiguration"]]
    assert [(m["containerName"], m["relativeMountPath"]) for m in mounts] == [
        ("input-test", "input"),
        ("output-test", "output-test"),
    ]
    assert all(m["blobfuseOptions"] == "-o direct_io" and "accountKey" not in m for m in mounts)
    start = body["startTask"]
    assert start["commandLine"] == "/bin/bash batchlaunch-start.sh" and start["waitForSuccess"]
    assert start["userIdentity"]["autoUser"]["elevationLevel"] == "admin"
    script = Path(unquote(urlparse(start["resourceFiles"][0]["httpUrl"]).path))
    assert script.read_text() == "echo hi\n"
    # Same spec, same digest; a changed script or size changes it.
    again = local_client.pool_body(spec, start_script="echo hi\n")
    assert spec_hash(again) == spec_hash(body)
    assert spec_hash(local_client.pool_body(spec, start_script="echo bye\n")) != spec_hash(body)
    spec.vm_size = "standard_d4s_v3"
    assert spec_hash(local_client.pool_body(spec, start_script="echo hi\n")) != spec_hash(body)


def test_spec_hash_ignores_sas_tokens() -> None:
    a = {
        "id": "p",
        "startTask": {"resourceFiles": [{"httpUrl": "https://x/b?sig=1&se=2"}]},
        "mountConfiguration": [{"azureBlobFileSystemConfiguration": {"sasKey": "sig=1"}}],
    }
    b = {
        "id": "p",
        "startTask": {"resourceFiles": [{"httpUrl": "https://x/b?sig=9&se=8"}]},
        "mountConfiguration": [{"azureBlobFileSystemConfiguration": {"sasKey": "sig=9"}}],
    }
    assert spec_hash(a) == spec_hash(b)
    b["id"] = "q"
    assert spec_hash(a) != spec_hash(b)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", "bad id!", r"\[pool\] id"),
        ("task_scheduling", "random", r"\[pool\] task_scheduling"),
        ("availability_zones", "global", r"\[pool\] availability_zones"),
        ("task_slots_per_node", 0, r"\[pool\] task_slots_per_node"),
        ("mounts", [{"source": "c1", "dest": "x"}], r"\[pool\] mounts"),
        ("mounts", ["Bad_Container"], r"\[pool\] mounts: source"),
        ("mounts", ["ok-name", {"source": "other", "target": "ok-name"}], "targets repeat"),
        ("mounts", [{"source": "cc1", "target": "../etc"}], "simple name"),
    ],
)
def test_pool_spec_errors(local_client: Client, field: str, value: object, message: str) -> None:
    spec = PoolSpec(id="p")
    setattr(spec, field, value)
    with pytest.raises(UserError, match=message):
        local_client.pool_body(spec)


def test_autoscale_interval_bounds(local_client: Client) -> None:
    with pytest.raises(UserError, match="autoscale_interval_minutes"):
        local_client.pool_body(PoolSpec(id="p", autoscale=True, autoscale_interval_minutes=1))
    body = local_client.pool_body(
        PoolSpec(
            id="p",
            autoscale=True,
            autoscale_formula="$TargetDedicatedNodes = 2;",
            autoscale_interval_minutes=5,
        )
    )
    assert body["autoScaleFormula"] == "$TargetDedicatedNodes = 2;"
    assert body["autoScaleEvaluationInterval"] == "PT300S"


def test_client_from_parameter_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    params = tmp_path / "params.toml"
    params.write_text(
        '[batch]\nendpoint = "emulator"\n[storage]\nurl = "local"\n'
        '[pool]\nid = "demo"\ndedicated_nodes = 2\ntask_scheduling = "pack"\n'
        'mounts = ["input-test", {source = "output-test", target = "results"}]\n'
        '[runtime]\nlanguage = "none"\n'
        '[job]\nid = "demo"\n'
        '[[tasks]]\ncommand = "echo hi"\n'
    )
    client = Client(params)
    spec = PoolSpec.from_settings(client.params.pool, vm_size="standard_d8s_v3")
    body = client.pool_body(spec)
    assert body["id"] == "demo" and body["vmSize"] == "standard_d8s_v3"
    assert body["targetDedicatedNodes"] == 2
    assert body["taskSchedulingPolicy"] == {"nodeFillType": "pack"}
    targets = [
        m["azureBlobFileSystemConfiguration"]["relativeMountPath"]
        for m in body["mountConfiguration"]
    ]
    assert targets == ["input-test", "results"]


def test_managed_identity_is_probed_only_when_asked() -> None:
    from launcher.batch import entra_credential

    def kinds(env: dict[str, str]) -> set[str]:
        return {type(c).__name__ for c in entra_credential(env).credentials}

    assert "ManagedIdentityCredential" not in kinds({})
    assert "ManagedIdentityCredential" in kinds({"BATCHLAUNCH_MANAGED_IDENTITY": "1"})
