"""Run `simulate` from model.R on the pool for 8 seeds and print the results.

    python examples/r-function/run.py [PARAMS]

`r("model.R", "simulate")` names the file and the function: model.R ships as a resource
file (content-addressed, uploaded once), arguments go as JSON (keyword arguments become
named R arguments) and each result comes back as JSON (an R named list -> a dict).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from launcher import BatchExecutor, r

MODEL = Path(__file__).with_name("model.R")


def run(params: Any, seeds: range = range(1, 9)) -> list[dict[str, Any]]:
    simulate = r(MODEL, "simulate")
    with BatchExecutor(params) as ex:
        futures = [ex.submit(simulate, 1000, rate=2.0, seed=seed) for seed in seeds]
        return [f.result() for f in futures]


def main(argv: list[str]) -> None:
    params = Path(argv[0]) if argv else Path(__file__).with_name("params.toml")
    for row in run(params):
        print(f"seed {row['seed']}: mean {row['mean']:.4f}  p95 {row['p95']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
