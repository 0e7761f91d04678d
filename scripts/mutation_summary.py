"""Per-module figures of the last `make mutation` run, read from mutants/**/*.meta.

python scripts/mutation_summary.py            # table
python scripts/mutation_summary.py --survivors  # and the surviving mutant names
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

COLUMNS = ("killed", "survived", "timeout", "no tests", "not checked")


def main(argv: list[str]) -> int:
    metas = sorted(Path("mutants").glob("**/*.py.meta"))
    if not metas:
        print("no mutants/ results: run `make mutation` first")
        return 1
    print(f"{'module':32s} " + " ".join(f"{c:>11s}" for c in COLUMNS) + "  other")
    survivors = []
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        module = str(meta.relative_to("mutants")).removesuffix(".meta")
        other = sum(n for status, n in counts.items() if status not in COLUMNS)
        print(f"{module:32s} " + " ".join(f"{counts[c]:11d}" for c in COLUMNS) + f"  {other:5d}")
        survivors += sorted(k for k, v in codes.items() if status_by_exit_code[v] == "survived")
    if "--survivors" in argv:
        print("\n".join(["", "survived:", *survivors]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
