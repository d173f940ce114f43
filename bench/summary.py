"""The benchmark's figures as Markdown, from ``bench/results.json``: ``python -m bench.summary``.

Per case, each pipeline's median wall time and peak resident memory; then the ratios the command is held to,
each beside its target. ``bench/run.py`` writes the same text to ``bench/results.md`` after a run;
``--readme`` copies the ratios and medians into README.md (between its ``bench:ratios`` and
``bench:medians`` markers), which tests/test_readme_figures.py holds equal to the results.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
README = HERE.parent / "README.md"
# What the command is held to, each a ratio of two pipelines' medians measured side by side in one run.
TARGETS: dict[str, tuple[str, str, str, float]] = {
    # name: (numerator, denominator, measure, at most)
    "command / seed wall": ("command", "seed", "wall_s", 1.0),
    "command / seed memory": ("command", "seed", "peak_mib", 0.85),
    "verify / command wall": ("verify", "command", "wall_s", 0.8),
    "failing / passing verify memory": ("locate", "verify", "peak_mib", 1.3),
    "core / floor wall": ("core", "floor", "wall_s", 1.5),
}


def load(path: Path = HERE / "results.json") -> dict[str, Any]:
    return json.loads(path.read_text())


def ratio(case: dict[str, Any], name: str) -> float | None:
    numerator, denominator, measure, _ = TARGETS[name]
    median = case["median"]
    if numerator not in median or denominator not in median:
        return None  # a format without a seed script
    return float(median[numerator][measure] / median[denominator][measure])


def medians_table(results: dict[str, Any]) -> str:
    lines = ["| case | parameters | pipeline | wall (s) | peak RSS (MiB) |", "|---|---:|---|---:|---:|"]
    for case in results["cases"]:
        for pipeline, median in case["median"].items():
            lines.append(
                f"| {case['case']} | {case['parameters'] / 1e6:.1f}M | {pipeline} | {median['wall_s']:.2f} "
                f"| {median['peak_mib']:.0f} |"
            )
    return "\n".join(lines)


def ratios_table(results: dict[str, Any]) -> str:
    """Each target's ratio per case, with its verdict: met (at most the target) or not."""
    lines = [
        "| case | " + " | ".join(TARGETS) + " |",
        "|---|" + "---:|" * len(TARGETS),
        "| *target* | " + " | ".join(f"*<= {target[3]}*" for target in TARGETS.values()) + " |",
    ]
    for case in results["cases"]:
        cells = []
        for name, (_, _, _, most) in TARGETS.items():
            found = ratio(case, name)
            cells.append("-" if found is None else f"{found:.2f} {'met' if found <= most else 'not met'}")
        lines.append(f"| {case['case']} | " + " | ".join(cells) + " |")
    environment = results["environment"]
    dates = sorted({case.get("date", environment["date"]) for case in results["cases"]})
    lines.append("")
    lines.append(
        f"Medians of {environment['runs']} runs per pipeline, taking turns, on {environment['cpus']} CPUs "
        f"({', '.join(dates)}; torch {environment['torch']}, transformers {environment['transformers']})."
    )
    if len(dates) > 1:
        lines.append("Cases measured on different days: compare ratios within a case, not across cases.")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    return (
        "# Benchmark results\n\nWritten by `tox -e bench` (`bench/run.py`); README.md's performance table is a copy "
        "of the ratios.\n\n## Ratios and targets\n\n"
        + ratios_table(results)
        + "\n\n## Medians\n\n"
        + medians_table(results)
        + "\n"
    )


def readme_blocks(results: dict[str, Any]) -> dict[str, str]:
    """What README.md holds of the results, by the name of its markers (``<!-- bench:NAME -->``)."""
    return {"ratios": ratios_table(results), "medians": medians_table(results)}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def block_pattern(name: str) -> re.Pattern[str]:
    """README's block ``name``: its markers, and what stands between them (group 1)."""
    begin, end = markers(name)
    return re.compile(re.escape(begin) + r"\n(.*?)\n?" + re.escape(end), re.S)


def readme_block(text: str, name: str) -> str:
    """README's copy of one block (between its markers)."""
    found = block_pattern(name).search(text)
    if found is None:
        raise LookupError("README.md has no {} ... {} block".format(*markers(name)))
    return found[1]


def with_blocks(text: str, results: dict[str, Any]) -> str:
    for name, block in readme_blocks(results).items():
        begin, end = markers(name)
        replaced = f"{begin}\n{block}\n{end}".replace("\\", "\\\\")  # a backslash in a table stays one
        text, count = block_pattern(name).subn(replaced, text, count=1)
        if count == 0:
            raise LookupError(f"README.md has no {begin} ... {end} block")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's figures from the results")
    args = parser.parse_args(argv)
    results = load()
    if args.readme:
        README.write_text(with_blocks(README.read_text(), results))
        print(f"rewrote the figures in {README}")
        return 0
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
