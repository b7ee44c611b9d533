"""`BatchExecutor` with real blob storage (Azurite): nodes fetch the runner, the function and
the arguments through read SAS URLs and upload results through a create+write SAS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launcher.executor import BatchExecutor
from tests.executor.conftest import write_params

pytestmark = [pytest.mark.emulator, pytest.mark.azurite]


def test_map_and_errors_over_azurite(
    emulator: Any, azurite: Any, fx_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    params = write_params(
        fx_home / "azurite.toml",
        emulator.endpoint,
        pool_id="fx-azurite",
        nodes=1,
        slots=4,
    )
    text = params.read_text().replace('url = "local"', 'url = "azurite"')
    params.write_text(text.replace('container = "batchlaunch"', 'container = "fx-azurite"'))
    secret = {"threshold": 3}

    def classify(x: int) -> str:
        if x < 0:
            raise ValueError(f"negative {x}")
        return "big" if x > secret["threshold"] else "small"

    with BatchExecutor(params, keep_pool=False) as ex:
        assert list(ex.map(classify, range(6), chunksize=2)) == ["small"] * 4 + ["big"] * 2
        bad = ex.submit(classify, -1)
        with pytest.raises(ValueError, match="negative -1"):
            bad.result(timeout=60)
        task = ex.client.batch.get_task(ex.job_id, bad.task_id)
        body = json.dumps(task.as_dict())
        assert azurite.key not in body  # nodes get SAS tokens, never the account key
        for rf in task.resource_files:
            assert rf.http_url.startswith(azurite.blob_endpoint) and "sig=" in rf.http_url
            assert "sp=r&" in rf.http_url or "sp=r" in rf.http_url.split("&")
        for out in task.output_files:
            assert "sig=" in out.destination.container.container_url
        names = ex.store.list(f"functions/{ex.job_id}/{bad.task_id}/")
        assert {Path(n).name for n in names} >= {"args.pkl", "result.pkl", "stderr.txt"}
