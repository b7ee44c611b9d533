"""A tiny simulation for the quickstart: the mean of SIZE pseudo-random numbers."""

import argparse
import os
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    mean = sum(rng.random() for _ in range(args.size)) / args.size
    out = Path("out")
    out.mkdir(exist_ok=True)
    task = os.environ.get("AZ_BATCH_TASK_ID", "local")
    result = out / f"result-{args.seed}-{args.size}.txt"
    result.write_text(f"task={task} seed={args.seed} size={args.size} mean={mean:.6f}\n")
    print(result.read_text(), end="")


if __name__ == "__main__":
    main()
