"""Count the words of one chunk of corpus.txt (lines i, i+N, i+2N, ...)."""

import argparse
import collections
import json
from pathlib import Path


def count_chunk(text: str, chunk: int, chunks: int) -> dict[str, int]:
    lines = text.splitlines()[chunk::chunks]
    return dict(collections.Counter(word.lower() for line in lines for word in line.split()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunk", type=int, required=True)
    parser.add_argument("--chunks", type=int, required=True)
    args = parser.parse_args()
    counts = count_chunk(Path("corpus.txt").read_text(), args.chunk, args.chunks)
    Path("counts.json").write_text(json.dumps(counts, sort_keys=True))
    print(f"chunk {args.chunk}: {sum(counts.values())} words")


if __name__ == "__main__":
    main()
