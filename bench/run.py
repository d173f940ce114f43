"""Time the conversion pipelines side by side and print medians and ratios: ``tox -e bench``.

Every run is a fresh process under ``/usr/bin/time -v`` (wall clock, peak resident set size). The
pipelines of a case take turns within each repetition, so that a noisy neighbour slows all of them
alike; one unmeasured run of each warms the page cache first. Results go to ``bench/results.json``
(``bench/plot.py`` draws the scaling plot from it), their tables to ``bench/results.md`` and stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cases import Case, build, cases, parameters
from bench.pipelines import unchecked_of
from bench.summary import load, markdown

PIPELINES = ("command", "verify", "locate", "seed", "core", "floor")
REFUSING = {"locate"}  # exit 1 is what it measures: a verification that fails
HERE = Path(__file__).parent


def environment(runs: int) -> dict[str, object]:
    """Where and with what the figures were measured."""
    import importlib.metadata
    import os

    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "runs": runs,
        "torch": importlib.metadata.version("torch"),
        "transformers": importlib.metadata.version("transformers"),
    }


def measure(pipeline: str, case_dir: Path, scratch: Path, output: Path | None = None) -> tuple[float, float]:
    """One run: (wall seconds, peak resident MiB). ``output``: where it writes (default: removed afterwards)."""
    keep = output is not None
    output = output or scratch / "out"
    shutil.rmtree(output, ignore_errors=True)
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "bench.pipelines", pipeline, str(case_dir), str(output)],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    if not keep:
        shutil.rmtree(output, ignore_errors=True)
    if result.returncode != (1 if pipeline in REFUSING else 0):
        raise SystemExit(f"{pipeline} on {case_dir.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    assert wall and peak, result.stderr[-2000:]
    hours, minutes, seconds = int(wall[1] or 0), int(wall[2]), float(wall[3])
    return hours * 3600 + minutes * 60 + seconds, int(peak[1]) / 1024


def pipelines_of(case: Case) -> list[str]:
    """Every pipeline; the seed's only where the format's example has an unchecked way (the run says so)."""
    return [p for p in PIPELINES if p != "seed" or unchecked_of(case.format) is not None]


def run_case(case: Case, work: Path, runs: int) -> dict[str, object]:
    case_dir = build(case, work / case.name)
    if not (case_dir / "written").is_dir():  # what ``verify`` checks: the command's own output, made once
        measure("command", case_dir, case_dir, output=case_dir / "written")
    scratch = Path(tempfile.mkdtemp(dir=work, prefix="scratch-"))
    pipelines = pipelines_of(case)
    try:
        for pipeline in pipelines:  # warm-up: page cache, .pyc files
            measure(pipeline, case_dir, scratch)
        samples: dict[str, list[tuple[float, float]]] = {p: [] for p in pipelines}
        for repetition in range(runs):
            for pipeline in pipelines:
                samples[pipeline].append(measure(pipeline, case_dir, scratch))
                wall, peak = samples[pipeline][-1]
                print(f"  {case.name} {pipeline} run {repetition + 1}: {wall:.2f} s, {peak:.0f} MiB", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "case": case.name,
        "format": case.format,
        "size": case.size,
        "parameters": parameters(case_dir),
        "runs": runs,
        "date": datetime.date.today().isoformat(),
        "samples": samples,
        "median": {
            p: {"wall_s": statistics.median(w for w, _ in s), "peak_mib": statistics.median(m for _, m in s)}
            for p, s in samples.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per pipeline and case (median)")
    parser.add_argument("--cases", nargs="*", default=None, help="e.g. ast-base s3prl-large (default: every case)")
    parser.add_argument("--work", type=Path, default=HERE.parent / ".bench", help="where the inputs are built")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    fresh = []
    every = cases()
    for case in every:
        if args.cases is None or case.name in args.cases:
            chosen = pipelines_of(case)
            print(f"{case.name}: building inputs (once) and running {args.runs} x {len(chosen)}", file=sys.stderr)
            if "seed" not in chosen:
                print(f"  {case.format}: no seed pipeline (its example has no unchecked way): no command / seed "
                      "ratio", file=sys.stderr)  # fmt: skip
            fresh.append(run_case(case, args.work.absolute(), args.runs))
    # Cases not run this time keep their last figures, so that sizes can be measured in separate runs.
    previous = load(args.results) if args.results.exists() else {}
    kept = previous.get("cases", []) if isinstance(previous, dict) else []  # an older layout: measure again
    measured = {r["case"] for r in fresh}
    order = [c.name for c in every]
    merged = sorted([r for r in kept if r["case"] not in measured] + fresh, key=lambda r: order.index(r["case"]))
    results = {"environment": environment(args.runs), "cases": merged}
    args.results.write_text(json.dumps(results, indent=1))
    (args.results.with_suffix(".md")).write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
