"""The Python start task executed for real: a PyPI install with uv and with pip, reruns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap import REQUIREMENTS_FILE, PythonRuntime, render_start_task
from tests.bootstrap.sandbox import Node
from tests.conftest import unavailable


def test_system_python_without_packages_is_fast_and_writes_env(node: Node) -> None:
    run = node.start_task(render_start_task(PythonRuntime()))
    assert run.returncode == 0, run.stderr
    assert run.seconds < 5
    env = (node.shared / "batchlaunch" / "env.sh").read_text()
    assert "BATCHLAUNCH_RUNTIME=python" in env and "BATCHLAUNCH_PYTHON=" in env
    assert "VIRTUAL_ENV" not in env
    task = node.task('"$BATCHLAUNCH_PYTHON" -c "import sys; print(sys.version_info[0])"')
    assert task.returncode == 0 and task.stdout.strip() == "3", task.stderr


def test_uv_installs_from_pypi_task_imports_rerun_is_a_noop(node: Node) -> None:
    (node.startup_wd / REQUIREMENTS_FILE).write_text("idna\n")
    spec = PythonRuntime(packages=["six"], requirements=node.startup_wd / REQUIREMENTS_FILE)
    script = render_start_task(spec)
    first = node.start_task(script)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "step: install uv" in first.stdout and "step: install python packages" in first.stdout

    task = node.task("python -c 'import idna, six, sys; print(six.__file__); print(sys.prefix)'")
    assert task.returncode == 0, task.stderr
    venv = node.shared / "batchlaunch" / "python"
    assert task.stdout.splitlines() == [
        str(venv / "lib" / task.stdout.split("/lib/")[1].split("\n")[0]),
        str(venv),
    ]

    again = node.start_task(script)
    assert again.returncode == 0
    assert "nothing to do" in again.stdout and "step:" not in again.stdout
    assert again.seconds < 1.0, f"rerun took {again.seconds:.2f}s"


def test_changed_spec_reinstalls(node: Node) -> None:
    first = node.start_task(render_start_task(PythonRuntime(packages=["six"])))
    assert first.returncode == 0, first.stderr
    second = node.start_task(render_start_task(PythonRuntime(packages=["idna"])))
    assert second.returncode == 0, second.stderr
    assert "spec changed" in second.stdout
    # the venv was rebuilt: six is gone, idna is there
    probe = node.task("python -c 'import idna'; python -c 'import six' 2>/dev/null; echo $?")
    assert probe.stdout.strip() == "1", probe.stdout + probe.stderr


def test_pip_installer(node: Node) -> None:
    if subprocess.run(["python3", "-c", "import ensurepip, venv"]).returncode != 0:
        unavailable("python3 lacks venv/ensurepip (Debian: apt install python3-venv)")
    script = render_start_task(PythonRuntime(packages=["six"], installer="pip"))
    run = node.start_task(script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "install uv" not in run.stdout
    task = node.task("python -c 'import six; print(six.__version__)'")
    assert task.returncode == 0 and task.stdout.strip(), task.stderr
    again = node.start_task(script)
    assert "nothing to do" in again.stdout and again.seconds < 1.0


def test_failing_package_is_named_in_one_line(node: Node) -> None:
    bad = "batchlaunch-no-such-package-zz==0.0.1"
    run = node.start_task(render_start_task(PythonRuntime(packages=["six", bad])))
    assert run.returncode != 0
    assert (
        f"batchlaunch: step 'install python packages' failed (package: {bad}; exit 1)"
        in run.stderr.splitlines()
    ), run.stderr
    assert not (node.shared / "batchlaunch" / "installed.sha256").exists()


@pytest.mark.parametrize("present", [True, False])
def test_preinstalled_only_checks(node: Node, present: bool) -> None:
    # the test venv's python3 stands in for a gallery image with pytest preinstalled
    node.extra_env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    package = "pytest" if present else "batchlaunch-not-on-this-image"
    spec = PythonRuntime(preinstalled=True, packages=[package])
    run = node.start_task(render_start_task(spec, "gallery"))
    if present:
        assert run.returncode == 0, run.stderr
        assert "step: check python" in run.stdout and "step: install" not in run.stdout
    else:
        assert run.returncode == 1
        assert (
            "batchlaunch: step 'check python' failed (package: batchlaunch-not-on-this-image is"
            " not installed on the image (runtime.preinstalled = true); exit 1)"
        ) in run.stderr, run.stderr
