"""Estimate pi on the pool: 100 tasks, each counting random points inside the unit circle.

    python examples/python-map/pi.py [PARAMS]

`sample` is pickled once (by value: this file is `__main__`, the nodes do not have it) and
uploaded once; each task gets its own (seed, samples) arguments. The hit counts are summed as
the tasks finish (`reduce_as_completed`, AzureClusterlessHPC's `fetchreduce`).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from launcher import BatchExecutor, reduce_as_completed

TASKS = 100
SAMPLES = 20_000


def sample(seed: int, samples: int) -> int:
    """Points of `samples` uniform draws in the unit square that fall in the quarter circle."""
    rng = random.Random(seed)
    return sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)


def estimate_pi(params: Any, tasks: int = TASKS, samples: int = SAMPLES) -> float:
    """pi ~ 4 * hits / draws, with one task per seed."""
    with BatchExecutor(params) as ex:
        futures = [ex.submit(sample, seed, samples) for seed in range(tasks)]
        hits = reduce_as_completed(lambda total, n: total + n, futures, 0)
    return 4.0 * hits / (tasks * samples)


def main(argv: list[str]) -> None:
    params = Path(argv[0]) if argv else Path(__file__).with_name("params.toml")
    value = estimate_pi(params)
    print(f"pi ~ {value:.5f} from {TASKS} tasks x {SAMPLES} samples")


if __name__ == "__main__":
    main(sys.argv[1:])
