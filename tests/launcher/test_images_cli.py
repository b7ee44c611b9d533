"""`batchlaunch images` and the alias catalog agree: every alias `[pool] image` accepts is
listed (whole, even in a narrow pipe), retired aliases say what to use, and the error for an
unknown alias lists exactly the catalog."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import UserError
from launcher.images import CATALOG, RETIRED, resolve_image
from tests.conftest import REPO


@pytest.mark.parametrize("alias", sorted(RETIRED))
def test_retired_aliases_name_their_replacement(alias: str) -> None:
    assert alias not in CATALOG
    with pytest.raises(UserError, match="retired") as info:
        resolve_image(alias)
    assert repr(RETIRED[alias][0]) in str(info.value)


def test_unknown_alias_lists_exactly_the_catalog() -> None:
    with pytest.raises(UserError) as info:
        resolve_image("debian-9")
    listed = re.search(r"use one of (.*?) \(see `batchlaunch images`\)", str(info.value))
    assert listed is not None
    assert listed.group(1).split(", ") == sorted(CATALOG)


def _images(emulator: Any, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BATCHLAUNCH_HOME": str(tmp_path / "home"),
        "AZURE_BATCH_ENDPOINT": emulator.endpoint,
        "AZURE_BATCH_ACCOUNT": emulator.account,
        "AZURE_BATCH_ACCESS_KEY": emulator.key,
        "PYTHONPATH": str(REPO),
        "COLUMNS": "60",  # narrow, and stdout is a pipe
    }
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", "images", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.emulator
def test_images_lists_every_alias_whole(emulator: Any, tmp_path: Path) -> None:
    shown = _images(emulator, tmp_path)
    assert shown.returncode == 0, shown.stderr
    first_cells = {
        line.split("│")[1].strip() for line in shown.stdout.splitlines() if line.count("│") > 2
    }
    assert set(CATALOG) <= first_cells, shown.stdout  # no "ubuntu-22.…"
    assert "…" not in shown.stdout  # other columns fold rather than lose characters
    as_json = _images(emulator, tmp_path, "--json")
    aliases = {row["alias"] for row in json.loads(as_json.stdout)} - {None}
    assert aliases == set(CATALOG)
