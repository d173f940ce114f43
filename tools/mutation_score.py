"""Print the mutation score of the last ``mutmut run`` and fail under a minimum.

Reads the counts ``mutmut export-cicd-stats`` writes. The score counts as caught what the tests
killed or timed out on, over every mutant (mutants no test reaches count as survivors).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def score(stats: dict[str, int]) -> float:
    tested = stats["total"] - stats["skipped"]
    return 100.0 * (stats["killed"] + stats["timeout"]) / tested if tested else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", type=Path, default=Path("mutants/mutmut-cicd-stats.json"))
    parser.add_argument("--minimum", type=float, default=90.0, help="lowest passing score, in percent")
    args = parser.parse_args(argv)
    stats = json.loads(args.stats.read_text())
    counts = ", ".join(f"{name} {value}" for name, value in stats.items() if isinstance(value, int) and value)
    result = score(stats)
    print(f"mutation score {result:.1f}% ({counts}); minimum {args.minimum:.0f}%")
    return 0 if result >= args.minimum else 1


if __name__ == "__main__":
    sys.exit(main())
