"""Every parameter-file example under examples/ runs (or, where this machine cannot, is
accepted and diagnosed) on the emulator, with its results checked independently."""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.run.conftest import REPO, CliResult

pytestmark = pytest.mark.emulator
EXAMPLES = REPO / "examples"


def test_quickstart_sweep(run_env: dict[str, str], cli: Callable[..., CliResult], tmp_path: Path):
    out = tmp_path / "out"
    params = EXAMPLES / "quickstart" / "params.toml"
    result = cli("run", str(params), "--run-id", "qs", "--out", str(out), "-q")
    assert result.code == 0, result.err
    for index, (seed, size) in enumerate((s, n) for s in (1, 2, 3) for n in (10, 100)):
        rng = random.Random(seed)
        mean = sum(rng.random() for _ in range(size)) / size
        text = (out / "qs" / f"sim-{index}" / "out" / f"result-{seed}-{size}.txt").read_text()
        assert text == f"task=sim-{index} seed={seed} size={size} mean={mean:.6f}\n"


def test_fan_out_reduce(run_env: dict[str, str], cli: Callable[..., CliResult], tmp_path: Path):
    out = tmp_path / "out"
    params = EXAMPLES / "fan-out-reduce" / "params.toml"
    result = cli("run", str(params), "--run-id", "wc", "--out", str(out), "-q")
    assert result.code == 0, result.err
    words = (EXAMPLES / "fan-out-reduce" / "corpus.txt").read_text().lower().split()
    total = json.loads((out / "wc" / "reduce" / "total.json").read_text())
    assert total == dict(collections.Counter(words))
    stdout = (out / "wc" / "reduce" / "logs" / "stdout.txt").read_text()
    assert stdout.startswith("8 chunks,")  # it read all eight parents' outputs


def test_container_pool(
    run_env: dict[str, str], cli: Callable[..., CliResult], tmp_path: Path, batch_client: Any
):
    out = tmp_path / "out"
    params = EXAMPLES / "container-pool" / "params.toml"
    result = cli("run", str(params), "--run-id", "ctr", "--out", str(out), "--keep-pool", "-q")
    assert result.code == 0, result.err
    pool = batch_client.get_pool("container-pool").as_dict()
    config = pool["virtualMachineConfiguration"]
    assert config["containerConfiguration"]["containerImageNames"] == ["python:3.11-slim"]
    assert config["nodeAgentSKUId"] == "batch.node.ubuntu 22.04"
    task = batch_client.get_task("ctr", "version").as_dict()
    assert task["containerSettings"]["imageName"] == "python:3.11-slim"
    assert (out / "ctr" / "version" / "version.txt").read_text().count(".") == 2


def test_gallery_image_pool_is_accepted_and_missing_runtime_is_diagnosed(
    run_env: dict[str, str], cli: Callable[..., CliResult], tmp_path: Path, batch_client: Any
):
    params = EXAMPLES / "gallery-image" / "params.toml"
    created = cli("pool", "create", str(params), "--json")
    assert created.code == 0, created.err
    pool = batch_client.get_pool("gallery-julia").as_dict()
    image = pool["virtualMachineConfiguration"]["imageReference"]
    assert image["virtualMachineImageId"].endswith("/images/julia-1.10/versions/1.0.0")
    result = cli("run", str(params), "--run-id", "gal", "--out", str(tmp_path / "o"), "-q")
    assert result.code == 1
    assert "batchlaunch: step 'check julia' failed (julia not found" in result.err
