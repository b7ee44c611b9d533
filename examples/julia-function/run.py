"""Run `simulate` from model.jl on the pool for 8 seeds and print the results.

    python examples/julia-function/run.py [PARAMS]

`julia("model.jl", "simulate")` names the file and the function: model.jl ships as a
resource file, arguments go as JSON (keyword arguments become Julia keyword arguments) and
results come back as JSON (a Dict -> a dict).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from launcher import BatchExecutor, julia

MODEL = Path(__file__).with_name("model.jl")


def submit_all(ex: BatchExecutor, seeds: range = range(1, 9)) -> list[Any]:
    """One task per seed: simulate(10_000; drift = 0.01, seed = s)."""
    simulate = julia(MODEL, "simulate")
    return [ex.submit(simulate, 10_000, drift=0.01, seed=seed) for seed in seeds]


def main(argv: list[str]) -> None:
    params = Path(argv[0]) if argv else Path(__file__).with_name("params.toml")
    with BatchExecutor(params) as ex:
        for fut in submit_all(ex):
            row = fut.result()
            print(f"seed {row['seed']}: final {row['final']:.2f}  max {row['max']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
