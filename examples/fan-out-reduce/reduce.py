"""Add up the word counts of every chunk (DIR/*/counts.json) and write total.json."""

import collections
import json
import sys
from pathlib import Path


def main() -> None:
    parents = Path(sys.argv[1] if len(sys.argv) > 1 else "parents")
    files = sorted(parents.glob("*/counts.json"))
    if not files:
        sys.exit(f"no counts.json under {parents}/: did the count tasks run?")
    total: collections.Counter[str] = collections.Counter()
    for path in files:
        total.update(json.loads(path.read_text()))
    Path("total.json").write_text(json.dumps(dict(total.most_common()), indent=1))
    print(f"{len(files)} chunks, {sum(total.values())} words, {len(total)} distinct")


if __name__ == "__main__":
    main()
