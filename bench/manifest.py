"""Verifying a manifest of conversions, one worker against two: ``python -m bench.manifest``.

Builds every published AST variant at its published size (a DeiT-base backbone, 88M parameters each) as an
original checkpoint, converts each once with the command, and lists the eight in a manifest. Then times
``pytest --conversions MANIFEST`` in one process and with ``-n 2`` (pytest-xdist), taking turns, each run a
fresh pytest: wall time, and peak memory of the whole process tree (xdist's workers are processes of their
own), summed proportional set sizes (PSS: a page two processes share counts half in each) sampled every
0.2 s. Prints medians and writes ``bench/manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
WAYS = {"one process": [], "-n 2": ["-n", "2"]}


def build(work: Path) -> Path:
    """The originals, their conversions and the manifest (once: an existing manifest is kept)."""
    manifest = work / "conversions.toml"
    if manifest.exists():
        return manifest
    from converters.ast.example import FULL, write_checkpoint
    from converters.ast.variants import VARIANTS

    entries = []
    for variant in VARIANTS:
        original = work / "originals" / variant.checkpoint_filename
        original.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(original, variant, FULL)
        converted = work / "converted" / variant.name
        shutil.rmtree(converted, ignore_errors=True)
        converted.parent.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).with_name("convert-ast-checkpoint")), "--checkpoint_path", str(original)]
        command += ["--model_name", variant.name, "--pytorch_dump_folder_path", str(converted)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"converting {variant.name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        entries.append(
            f'[[conversion]]\nname = "{variant.name}"\nformat = "ast"\ncheckpoint = "{original.relative_to(work)}"\n'
            f'model = "{converted.relative_to(work)}"\nmodel_name = "{variant.name}"\n'
        )
    manifest.write_text("\n".join(entries))
    return manifest


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                for child in listed.read().split():
                    found += [int(child), *children(int(child))]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def measure(manifest: Path, extra: list[str]) -> tuple[float, float, str]:
    """One run: (wall seconds, peak PSS of the process tree in MiB, pytest's summary line)."""
    command = [sys.executable, "-m", "pytest", "--conversions", str(manifest), "-q", "-p", "no:cacheprovider"]
    # the manifest's own directory, no ini file: what a user's repository would run
    command += ["-c", os.devnull, "--rootdir", str(manifest.parent), *extra]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=manifest.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, sum(pss_mib(pid) for pid in [process.pid, *children(process.pid)]))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"pytest {' '.join(extra)} failed:\n{output[-3000:]}")
    return wall, peak, output.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE.parent / ".bench" / "manifest")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = build(args.work.absolute())
    samples: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    for extra in WAYS.values():  # warm-up: page cache
        measure(manifest, extra)
    for repetition in range(args.runs):
        for way, extra in WAYS.items():
            wall, peak, summary = measure(manifest, extra)
            samples[way].append((wall, peak))
            print(f"  {way} run {repetition + 1}: {wall:.1f} s, {peak:.0f} MiB ({summary})", file=sys.stderr)
    median = {
        way: {"wall_s": statistics.median(w for w, _ in s), "peak_pss_mib": statistics.median(m for _, m in s)}
        for way, s in samples.items()
    }
    figures = {"runs": args.runs, "samples": samples, "median": median}
    (HERE / "manifest.json").write_text(json.dumps(figures, indent=1))
    print("| verifying 8 AST variants (88M parameters each) | wall (s) | peak PSS of all processes (MiB) |")
    print("|---|---:|---:|")
    for way, m in median.items():
        print(f"| {way} | {m['wall_s']:.1f} | {m['peak_pss_mib']:.0f} |")
    one, two = median["one process"], median["-n 2"]
    print(f"\n-n 2 / one process: wall {two['wall_s'] / one['wall_s']:.2f}x, memory "
          f"{two['peak_pss_mib'] / one['peak_pss_mib']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
