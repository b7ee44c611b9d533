"""Putting container images where pools can pull them: Azure Container Registry via docker.

Uses the docker CLI (build, tag, login, push) against ``REGISTRY.azurecr.io/REPO:TAG``.
The engine is checked first so a machine without Docker gets one clear line, not a push
failure halfway. Registry passwords, when used, go to ``docker login --password-stdin``,
never a command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from launcher.errors import UserError

USERNAME_ENV = "AZURE_CONTAINER_REGISTRY_USERNAME"
PASSWORD_ENV = "AZURE_CONTAINER_REGISTRY_PASSWORD"

_REGISTRY = re.compile(r"^[a-zA-Z0-9]{5,50}$")
_REPO = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def registry_server(registry_name: str) -> str:
    """``myreg`` -> ``myreg.azurecr.io``; a full ``*.azurecr.io`` name is kept."""
    name = registry_name.strip().lower()
    if name.endswith(".azurecr.io"):
        name = name[: -len(".azurecr.io")]
    if not _REGISTRY.match(name):
        raise UserError(
            f"registry_name: {registry_name!r} is not an Azure Container Registry name; "
            "use 5-50 letters and digits (the part before .azurecr.io)"
        )
    return f"{name}.azurecr.io"


def target_image(registry_name: str, repo_name: str, tag: str) -> str:
    """``REGISTRY.azurecr.io/REPO:TAG`` after validating each part."""
    if not _REPO.match(repo_name):
        raise UserError(
            f"repo_name: {repo_name!r} is not a repository name; use lowercase letters, digits "
            "and . _ - separators"
        )
    if not _TAG.match(tag):
        raise UserError(f"tag: {tag!r} is not a Docker tag; use letters, digits, _ . -")
    return f"{registry_server(registry_name)}/{repo_name}:{tag}"


def _docker(args: Sequence[str], *, stdin: str | None = None, timeout: float = 3600) -> str:
    exe = shutil.which("docker")
    if exe is None:
        raise UserError("docker: the docker CLI is not installed; install Docker and retry")
    proc = subprocess.run(
        [exe, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit code {proc.returncode}"
        raise UserError(f"docker {args[0]}: failed: {detail}")
    return proc.stdout


def check_engine() -> None:
    """One line naming the problem when no Docker engine answers."""
    exe = shutil.which("docker")
    if exe is None:
        raise UserError("docker: the docker CLI is not installed; install Docker and retry")
    proc = subprocess.run(
        [exe, "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no answer"
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise UserError(
            f"docker: no Docker engine answers at {host} ({detail}); start Docker "
            "(or set DOCKER_HOST to a running engine) and retry"
        )


def _login(server: str, env: Mapping[str, str]) -> None:
    """Log in with a registry token from the environment, else `az acr login`, else as is."""
    user, password = env.get(USERNAME_ENV), env.get(PASSWORD_ENV)
    if user and password:
        _docker(["login", server, "--username", user, "--password-stdin"], stdin=password)
        return
    az = shutil.which("az")
    if az is not None:
        proc = subprocess.run(
            [az, "acr", "login", "--name", server.split(".")[0]],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise UserError(
                f"az acr login: failed for {server}; run `az login`, or set {USERNAME_ENV} "
                f"and {PASSWORD_ENV}"
            )
    # Otherwise rely on an existing `docker login`; push says so if there is none.


def upload_docker_image(
    image_name: str,
    registry_name: str,
    repo_name: str,
    tag: str = "latest",
    *,
    env: Mapping[str, str] | None = None,
) -> str:
    """Tag a local image as ``REGISTRY.azurecr.io/REPO:TAG`` and push it; return that name."""
    target = target_image(registry_name, repo_name, tag)
    if not image_name.strip():
        raise UserError("image_name: empty; give a local image such as myimage:latest")
    check_engine()
    _docker(["image", "inspect", "--format", "{{.Id}}", image_name], timeout=60)
    _docker(["tag", image_name, target], timeout=60)
    _login(target.split("/")[0], os.environ if env is None else env)
    _docker(["push", target])
    return target


def package_and_upload_dockerfile(
    registry_name: str,
    repo_name: str,
    tag: str = "latest",
    path_to_dockerfile: str | Path = "./Dockerfile",
    *,
    context: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Build the Dockerfile into ``REGISTRY.azurecr.io/REPO:TAG`` and push it."""
    target = target_image(registry_name, repo_name, tag)
    dockerfile = Path(path_to_dockerfile)
    if not dockerfile.is_file():
        raise UserError(f"{dockerfile}: Dockerfile not found; pass path_to_dockerfile")
    build_context = Path(context) if context is not None else dockerfile.parent
    check_engine()
    _docker(["build", "--tag", target, "--file", str(dockerfile), str(build_context)])
    _login(target.split("/")[0], os.environ if env is None else env)
    _docker(["push", target])
    return target
