"""The R start task executed for real where Rscript exists (no CRAN access needed:
jsonlite comes from Debian's r-cran-jsonlite, which the test command installs)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bootstrap import RRuntime, render_start_task
from tests.bootstrap.sandbox import Node
from tests.conftest import unavailable


@pytest.fixture(autouse=True)
def _need_r() -> None:
    if shutil.which("Rscript") is None:
        unavailable("Rscript not installed (apt install r-base-core r-cran-jsonlite)")
    probe = subprocess.run(
        ["Rscript", "-e", "quit(status = !requireNamespace('jsonlite', quietly = TRUE))"],
        capture_output=True,
    )
    if probe.returncode != 0:
        unavailable("R package jsonlite missing (apt install r-cran-jsonlite)")


def _r_version() -> str:
    out = subprocess.run(
        [
            "Rscript",
            "-e",
            "cat(R.version$major, strsplit(R.version$minor, '.', fixed=TRUE)[[1]][1], sep='.')",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_debian_r_with_jsonlite_installs_and_tasks_use_it(node: Node) -> None:
    spec = RRuntime(source="debian", version=_r_version(), debian_packages=["r-cran-jsonlite"])
    script = render_start_task(spec)
    run = node.start_task(script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Debian packages already installed: r-base-core r-cran-jsonlite" in run.stdout
    assert "R packages ready: jsonlite" in run.stdout

    code = 'cat(jsonlite::toJSON(list(n = 3), auto_unbox = TRUE), Sys.getenv("R_LIBS_USER"))'
    task = node.task(f"Rscript -e '{code}'")
    assert task.returncode == 0, task.stderr
    assert task.stdout == '{"n":3} ' + str(node.shared / "batchlaunch" / "r-library")

    again = node.start_task(script)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert again.seconds < 1.0


def test_wrong_r_version_is_reported(node: Node) -> None:
    run = node.start_task(render_start_task(RRuntime(version="3.1")))
    assert run.returncode == 1
    assert f"failed (R {_r_version()} on the image, runtime.version asks for 3.1; exit 1)" in (
        run.stderr
    )


def test_missing_cran_package_is_named(node: Node) -> None:
    # an unreachable repository on loopback: install.packages fails fast, offline
    spec = RRuntime(packages=["batchlaunchNoSuchPkg"], repo="http://127.0.0.1:9")
    run = node.start_task(render_start_task(spec))
    assert run.returncode == 1
    assert (
        "batchlaunch: step 'install R packages' failed (package: batchlaunchNoSuchPkg"
        " (from http://127.0.0.1:9); exit 1)"
    ) in run.stderr.splitlines(), run.stderr


def test_preinstalled_r_checks_packages(node: Node) -> None:
    ok = node.start_task(render_start_task(RRuntime(preinstalled=True), "gallery"))
    assert ok.returncode == 0, ok.stderr
    missing = Node(node.root.parent / "node2")
    run = missing.start_task(
        render_start_task(RRuntime(preinstalled=True, packages=["batchlaunchNoSuchPkg"]), "gallery")
    )
    assert run.returncode == 1
    assert (
        "failed (package: batchlaunchNoSuchPkg is not installed on the image"
        " (runtime.preinstalled = true); exit 1)" in run.stderr
    )
