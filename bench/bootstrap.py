"""Benchmark: the rendered Python start task with uv vs pip, side by side in one run.

Installs numpy, pandas, scipy, requests and pyyaml from PyPI on two fresh sandbox nodes
(cold caches in each node's shared dir), prints both times and the ratio (target: uv >= 4x
faster), then the rerun (reboot) time of the uv node (target: < 1 s).

    .venv/bin/python bench/bootstrap.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bootstrap import PythonRuntime, render_start_task
from tests.bootstrap.sandbox import Node

PACKAGES = ["numpy", "pandas", "scipy", "requests", "pyyaml"]


def timed_install(installer: str, root: Path) -> tuple[float, Node, str]:
    node = Node(root / installer)
    script = render_start_task(PythonRuntime(packages=PACKAGES, installer=installer))  # type: ignore[arg-type]
    run = node.start_task(script, timeout=1800)
    if run.returncode != 0:
        sys.exit(f"{installer} start task failed:\n{run.stdout}\n{run.stderr}")
    check = node.task("python -c 'import numpy, pandas, scipy, requests, yaml'")
    if check.returncode != 0:
        sys.exit(f"{installer}: packages do not import: {check.stderr}")
    return run.seconds, node, script


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-bootstrap-") as tmp:
        root = Path(tmp)
        uv_s, uv_node, uv_script = timed_install("uv", root)
        pip_s, _, _ = timed_install("pip", root)
        rerun = uv_node.start_task(uv_script)
        assert rerun.returncode == 0 and "nothing to do" in rerun.stdout
        print(f"packages: {' '.join(PACKAGES)} (cold caches, from PyPI)")
        print(f"uv  start task (incl. fetching uv): {uv_s:7.2f} s")
        print(f"pip start task:                     {pip_s:7.2f} s")
        print(f"ratio pip/uv: {pip_s / uv_s:.1f}x (target >= 4x)")
        print(f"rerun (reboot) of the uv node: {rerun.seconds * 1000:.0f} ms (target < 1000 ms)")


if __name__ == "__main__":
    main()
