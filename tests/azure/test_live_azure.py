"""Live Azure: the same run the emulator tests make, against a real Batch account.

Skipped unless the environment names an account (the emulator covers everything else):
AZURE_BATCH_ENDPOINT=https://ACCOUNT.REGION.batch.azure.com, AZURE_BATCH_ACCOUNT, and
AZURE_BATCH_ACCESS_KEY (or an Entra ID sign-in), plus
BATCHLAUNCH_TEST_STORAGE_URL=https://ACCOUNT.blob.core.windows.net (with the connection
string, or Entra ID and a user-delegation SAS). It creates a one-node pool named
batchlaunch-live-test and deletes it at the end.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from launcher.cli import main

pytestmark = pytest.mark.azure

ENDPOINT = os.environ.get("AZURE_BATCH_ENDPOINT", "")
STORAGE = os.environ.get("BATCHLAUNCH_TEST_STORAGE_URL", "")


@pytest.mark.skipif(
    not ENDPOINT.startswith("https://") or not STORAGE,
    reason="live Azure: set AZURE_BATCH_ENDPOINT (https), AZURE_BATCH_ACCOUNT and "
    "BATCHLAUNCH_TEST_STORAGE_URL",
)
def test_sweep_on_a_real_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHLAUNCH_HOME", str(tmp_path / "home"))
    params = tmp_path / "params.toml"
    params.write_text(
        textwrap.dedent(
            f"""
            [batch]
            endpoint = "{ENDPOINT}"
            [storage]
            url = "{STORAGE}"
            container = "batchlaunch-live-test"
            [pool]
            id = "batchlaunch-live-test"
            vm_size = "standard_d2s_v3"
            dedicated_nodes = 1
            [job]
            id = "live"
            max_wall_clock_minutes = 30
            [[tasks]]
            id = "t"
            command = "echo {{n}} > out.txt"
            outputs = ["out.txt"]
            sweep = {{ n = [1, 2, 3] }}
            """
        )
    )
    out = tmp_path / "out"
    code = main(["run", str(params), "--run-id", "live1", "--out", str(out), "--delete-pool"])
    assert code == 0
    assert (out / "live1" / "t-2" / "out.txt").read_text().strip() == "3"
