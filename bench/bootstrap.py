"""Benchmark: the rendered Python start task with uv vs pip, side by side in one run.

Installs numpy, pandas, scipy, requests and pyyaml from PyPI on two fresh sandbox nodes
(cold caches in each node's shared dir), prints both times and the ratio (target: uv >= 4x
faster), then the rerun (reboot) time of the uv node (target: < 1 s).

    .venv/bin/python bench/bootstrap.py [ROUNDS]
"""

from __future__ import annotations

import statistics
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
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(f"packages: {' '.join(PACKAGES)} (cold caches, from PyPI); {rounds} round(s)")
    ratios, reruns = [], []
    for n in range(1, rounds + 1):
        with tempfile.TemporaryDirectory(prefix="bench-bootstrap-") as tmp:
            root = Path(tmp)
            uv_s, uv_node, uv_script = timed_install("uv", root)
            pip_s, _, _ = timed_install("pip", root)
            rerun = uv_node.start_task(uv_script)
            assert rerun.returncode == 0 and "nothing to do" in rerun.stdout
        ratios.append(pip_s / uv_s)
        reruns.append(rerun.seconds)
        print(
            f"round {n}: uv start task (incl. fetching uv) {uv_s:6.2f} s | pip {pip_s:6.2f} s"
            f" | ratio pip/uv {pip_s / uv_s:.1f}x | rerun {rerun.seconds * 1000:.0f} ms"
        )
    print(f"median ratio pip/uv: {statistics.median(ratios):.1f}x (target >= 4x)")
    print(f"max rerun (reboot): {max(reruns) * 1000:.0f} ms (target < 1000 ms)")


if __name__ == "__main__":
    main()
