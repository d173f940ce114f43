"""The mutation score of some modules of ``converters/``, whole or from a seeded sample of their mutants.

A whole run takes hours on 2 cores; one module's mutants, or a sample of a large module's, take minutes:

    python tools/mutation_modules.py sample converters.cli 100 > names.txt
    tox -e mutation -- $(cat names.txt)
    python tools/mutation_modules.py score converters.cli --names names.txt

``score`` counts, of the module's mutants (or the sampled ones) that were checked, those killed or timed out;
survivors and mutants no test reaches count against it. mutmut's own total is the whole tree's.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import subprocess
import sys
from pathlib import Path

MUTANT = re.compile(r"def (x\S*?__mutmut_\d+)\(")


def mutants_of(module: str, mutants: Path = Path("mutants")) -> list[str]:
    """Every mutant's name in ``module`` (dotted), as mutmut names it, sorted: read off the module mutmut
    wrote into ``mutants``, or, before any run wrote it, off the module mutmut makes of the source."""
    path = Path(*module.split(".")).with_suffix(".py")
    written = mutants / path
    text = written.read_text(encoding="utf-8") if written.is_file() else mutated(path)
    return sorted({f"{module}.{name}" for name in MUTANT.findall(text)})


def mutated(path: Path) -> str:
    """The module with every mutant mutmut makes of it, as ``mutmut run`` writes it (without running any)."""
    from mutmut.__main__ import write_all_mutants_to_file  # mutmut 3's own step; no public API does this

    out = io.StringIO()
    write_all_mutants_to_file(out=out, source=path.read_text(encoding="utf-8"), filename=path)
    return out.getvalue()


def statuses(results: str) -> dict[str, str]:
    """``mutmut results``' lines (``name: status``): it lists every mutant not killed."""
    found = {}
    for line in results.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def score(names: list[str], results: str) -> tuple[float, dict[str, str], int]:
    """The percentage caught (killed, or timed out) of ``names`` checked; those not caught; how many unchecked."""
    wanted = set(names)
    listed = {name: status for name, status in statuses(results).items() if name in wanted}
    unchecked = sum(status == "not checked" for status in listed.values())
    left = {name: status for name, status in listed.items() if status not in ("not checked", "timeout")}
    checked = len(names) - unchecked
    return (100.0 * (checked - len(left)) / checked if checked else 0.0), left, unchecked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="print N of the module's mutants, drawn with --seed")
    sample.add_argument("module")
    sample.add_argument("n", type=int)
    sample.add_argument("--seed", type=int, default=14)
    sample.add_argument("--exclude", type=Path, nargs="*", default=[], help="drawn from none of these (samples' files)")
    scored = commands.add_parser("score", help="the module's score from `mutmut results`")
    scored.add_argument("module")
    scored.add_argument("--names", type=Path, help="score these mutants only (a sample's file)")
    args = parser.parse_args(argv)
    names = mutants_of(args.module)
    if args.command == "sample":
        drawn = {name for path in args.exclude for name in path.read_text().split()}
        names = [name for name in names if name not in drawn]
        print("\n".join(random.Random(args.seed).sample(names, min(args.n, len(names)))))
        return 0
    if args.names is not None:
        names = [name for name in args.names.read_text().split() if name.startswith(f"{args.module}.")]
    results = subprocess.run([Path(sys.executable).with_name("mutmut"), "results"], capture_output=True, text=True)
    result, left, unchecked = score(names, results.stdout)
    for name, status in sorted(left.items()):
        print(f"{status}: {name}")
    checked = len(names) - unchecked
    print(f"{args.module}: {result:.1f}% of {checked} mutants checked caught ({len(left)} not; {unchecked} unchecked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
