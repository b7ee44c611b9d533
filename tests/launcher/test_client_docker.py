"""Docker image upload: names, and the real message when no Docker engine answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from launcher.docker import (
    check_engine,
    package_and_upload_dockerfile,
    target_image,
    upload_docker_image,
)
from launcher.errors import UserError


def test_target_image_names() -> None:
    assert target_image("myregistry", "test-repo", "latest") == (
        "myregistry.azurecr.io/test-repo:latest"
    )
    assert target_image("MyRegistry.azurecr.io", "team/app", "v1.2") == (
        "myregistry.azurecr.io/team/app:v1.2"
    )
    with pytest.raises(UserError, match="registry_name"):
        target_image("my_registry", "repo", "latest")
    with pytest.raises(UserError, match="repo_name"):
        target_image("myregistry", "Repo;rm -rf", "latest")
    with pytest.raises(UserError, match="tag"):
        target_image("myregistry", "repo", "latest:")


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_no_engine_gives_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket path nothing listens on: the real CLI, really failing to reach an engine.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(UserError) as info:
        check_engine()
    message = str(info.value)
    assert "no Docker engine answers" in message and "\n" not in message
    assert str(tmp_path) in message
    with pytest.raises(UserError, match="no Docker engine answers"):
        upload_docker_image("local/app:latest", "myregistry", "test-repo", "latest", env={})
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    with pytest.raises(UserError, match="no Docker engine answers"):
        package_and_upload_dockerfile("myregistry", "test-repo", "latest", dockerfile, env={})


def test_missing_cli_and_dockerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="Dockerfile not found"):
        package_and_upload_dockerfile("myregistry", "repo", "latest", tmp_path / "nope")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="docker CLI is not installed"):
        upload_docker_image("local/app:latest", "myregistry", "repo", env={})
