"""The Julia start task against a fake Julia tarball served over HTTP on 127.0.0.1.

The fake `bin/julia` records each call (arguments and JULIA_DEPOT_PATH) in a log, so the
test sees download, checksum, depot, package adds and precompile happen in order.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap import JuliaRuntime, render_start_task
from tests.bootstrap.sandbox import Node

VERSION = "1.10.4"
FAKE_JULIA = """#!/bin/bash
printf 'call depot=%s args=%s\\n' "${JULIA_DEPOT_PATH:-}" "${*//$'\\n'/ }" >> "$FAKE_JULIA_LOG"
if [ "${1:-}" = "--version" ]; then echo "julia version 1.10.4"; fi
# like the real add loop: a package that cannot be added is named in the detail file
for arg in "$@"; do
  if [ "$arg" = "Broken" ]; then
    printf 'package: %s\\n' "$arg" > "$BATCHLAUNCH_DETAIL_FILE"
    exit 1
  fi
done
"""


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = FAKE_JULIA.encode()
        info = tarfile.TarInfo(f"julia-{VERSION}/bin/julia")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, str, list[str]]]:
    """(base URL, sha256 of the tarball, request log) of a loopback mirror."""
    root = tmp_path / "mirror"
    target = root / "linux" / "x64" / "1.10" / f"julia-{VERSION}-linux-x86_64.tar.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(_tarball())
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"http://127.0.0.1:{server.server_address[1]}",
            hashlib.sha256(target.read_bytes()).hexdigest(),
            server.requests,  # type: ignore[attr-defined]
        )
    finally:
        server.shutdown()
        server.server_close()


def test_download_verify_depot_adds_precompile_in_order(
    node: Node, tmp_path: Path, mirror: tuple[str, str, list[str]]
) -> None:
    url, sha, requests = mirror
    log = tmp_path / "julia-calls.log"
    node.extra_env["FAKE_JULIA_LOG"] = str(log)
    spec = JuliaRuntime(
        version=VERSION,
        mirror=url,
        sha256=sha,
        packages=["Example@0.5", "https://github.com/slimgroup/JOLI.jl#master"],
    )
    script = render_start_task(spec)
    run = node.start_task(script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert requests == [f"/linux/x64/1.10/julia-{VERSION}-linux-x86_64.tar.gz"]
    steps = [line.split("step: ")[1] for line in run.stdout.splitlines() if "step: " in line]
    assert steps == [
        "download julia",
        "verify julia checksum",
        "install julia",
        "add julia packages",
        "precompile julia packages",
        "write environment file",
    ]
    depot = node.shared / "batchlaunch" / "julia-depot"
    calls = log.read_text().splitlines()
    assert calls[0] == f"call depot={depot} args=--version"
    assert calls[1].startswith(f"call depot={depot} args=--startup-file=no -e ")
    assert "Pkg.add(url=String(parts[1]), rev=String(parts[2]))" in calls[1]
    # package specs arrive as ARGS, after the Julia code, user's first, JSON3 added
    assert calls[1].endswith(" Example@0.5 https://github.com/slimgroup/JOLI.jl#master JSON3"), (
        calls[1]
    )
    assert calls[2] == f"call depot={depot} args=--startup-file=no -e using Pkg; Pkg.precompile()"
    assert len(calls) == 3

    task = node.task('echo "$JULIA_DEPOT_PATH"; julia --version')
    assert task.returncode == 0, task.stderr
    assert task.stdout.splitlines()[0].endswith(f"/.julia:{depot}")
    assert task.stdout.splitlines()[1] == "julia version 1.10.4"

    again = node.start_task(script)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(requests) == 1, "a rerun must not download again"


def test_wrong_checksum_fails_with_a_clear_line(
    node: Node, tmp_path: Path, mirror: tuple[str, str, list[str]]
) -> None:
    url, sha, _ = mirror
    node.extra_env["FAKE_JULIA_LOG"] = str(tmp_path / "calls.log")
    spec = JuliaRuntime(version=VERSION, mirror=url, sha256="0" * 64)
    run = node.start_task(render_start_task(spec))
    assert run.returncode == 1
    tarball = f"{url}/linux/x64/1.10/julia-{VERSION}-linux-x86_64.tar.gz"
    assert (
        f"batchlaunch: step 'verify julia checksum' failed (checksum mismatch for {tarball}:"
        f" expected sha256 {'0' * 64}, got {sha}; exit 1)"
    ) in run.stderr.splitlines(), run.stderr
    assert not (tmp_path / "calls.log").exists(), "julia must not run from an unverified tarball"
    assert not (node.shared / "batchlaunch" / "env.sh").exists()


def test_download_retries_then_names_the_url(
    node: Node, mirror: tuple[str, str, list[str]]
) -> None:
    url, _, requests = mirror
    node.extra_env.update(BATCHLAUNCH_DOWNLOAD_TRIES="3", BATCHLAUNCH_DOWNLOAD_DELAY="0")
    spec = JuliaRuntime(version="1.9.9", mirror=url)
    run = node.start_task(render_start_task(spec))
    assert run.returncode == 1
    assert len(requests) == 3
    assert "retrying in 0s" in run.stdout
    assert (
        "batchlaunch: step 'download julia' failed (download failed after 3 attempts: "
        f"{url}/linux/x64/1.9/julia-1.9.9-linux-x86_64.tar.gz; exit 1)"
    ) in run.stderr, run.stderr


def test_preinstalled_julia_missing_is_reported(node: Node) -> None:
    node.extra_env["PATH"] = "/usr/bin:/bin"
    run = node.start_task(render_start_task(JuliaRuntime(preinstalled=True), "gallery"))
    assert run.returncode == 1
    assert "batchlaunch: step 'check julia' failed (julia not found on the image's PATH" in (
        run.stderr
    )


def test_failed_package_add_is_named(
    node: Node, tmp_path: Path, mirror: tuple[str, str, list[str]]
) -> None:
    url, sha, _ = mirror
    node.extra_env["FAKE_JULIA_LOG"] = str(tmp_path / "calls.log")
    spec = JuliaRuntime(version=VERSION, mirror=url, sha256=sha, packages=["Example", "Broken"])
    run = node.start_task(render_start_task(spec))
    assert run.returncode == 1
    assert (
        "batchlaunch: step 'add julia packages' failed (package: Broken; exit 1)"
        in run.stderr.splitlines()
    ), run.stderr
    assert "Pkg.precompile" not in (tmp_path / "calls.log").read_text()
