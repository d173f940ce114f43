"""Verifying a manifest of conversions: one worker against two, and against the golden records alone:
``python -m bench.manifest``.

Builds every published AST variant at its published size (a DeiT-base backbone, 88M parameters each) as an
original checkpoint, converts each once with the command, lists the eight in a manifest, and records each
entry's golden record (``--conversions-record``, once). Then times, taking turns, each run a fresh pytest:
``pytest --conversions MANIFEST`` (a full verification) in one process and with ``-n 2`` (pytest-xdist), the
same entries gated on their records alone (``--conversions-golden-only``, one process, in a checkout without the
originals, as ``examples/gate-conversions.yml`` runs), and a process that only imports what they all import (the
baseline both pay once, whatever the number of entries): wall time, and peak
memory of the whole process tree (xdist's workers are processes of their own), summed proportional set sizes
(PSS: a page two processes share counts half in each) sampled every 0.2 s. Prints medians and writes
``bench/manifest.json``.
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
GATED = "gated.toml"  # the same entries, each with its golden record
CI = "ci.toml"  # the gated entries in a checkout without the originals (gate-conversions.yml's)
GOLDEN_ONLY = "golden-only, one process"
BASELINE = "imports alone"
WAYS = {"one process": [], "-n 2": ["-n", "2"], GOLDEN_ONLY: ["--conversions-golden-only"], BASELINE: []}
# What every way imports before its first entry: the process a gate and a verification share.
IMPORTS = ("import pytest, torch, transformers, converters.plugin, converters.cli, converters.golden; "
           "transformers.ASTForAudioClassification, transformers.ASTFeatureExtractor")  # fmt: skip


def build(work: Path) -> Path:
    """The originals, their conversions and the manifest (once: an existing manifest is kept)."""
    manifest = work / "conversions.toml"
    if manifest.exists() and (work / CI).exists():
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
    gated = [
        f'{entry}golden = "goldens/{variant.name}.json"\n' for entry, variant in zip(entries, VARIANTS, strict=True)
    ]
    (work / GATED).write_text("\n".join(gated))
    (work / CI).write_text("\n".join(gated).replace('checkpoint = "originals/', 'checkpoint = "not-checked-out/'))
    measure(pytest_command(work / GATED, ["--conversions-record"]), work)
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


def pytest_command(manifest: Path, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", "--conversions", str(manifest), "-q", "-p", "no:cacheprovider"]
    # the manifest's own directory, no ini file: what a user's repository would run
    return [*command, "-c", os.devnull, "--rootdir", str(manifest.parent), *extra]


def measure(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """One run: (wall seconds, peak PSS of the process tree in MiB, the last line it printed)."""
    start = time.perf_counter()
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the sample audio is not fetched: both ways alike
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=offline)  # fmt: skip
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, sum(pss_mib(pid) for pid in [process.pid, *children(process.pid)]))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[-4:])} failed:\n{output[-3000:]}")
    return wall, peak, (output.strip().splitlines() or [""])[-1]


def command_of(way: str, manifest: Path) -> list[str]:
    if way == BASELINE:
        return [sys.executable, "-c", IMPORTS]
    return pytest_command(manifest.with_name(CI) if way == GOLDEN_ONLY else manifest, WAYS[way])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE.parent / ".bench" / "manifest")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = build(args.work.absolute())
    samples: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}

    for way in WAYS:  # warm-up: page cache
        measure(command_of(way, manifest), manifest.parent)
    for repetition in range(args.runs):
        for way in WAYS:
            wall, peak, summary = measure(command_of(way, manifest), manifest.parent)
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
    one, two, gated, base = (median[way] for way in ("one process", "-n 2", GOLDEN_ONLY, BASELINE))
    print(f"\n-n 2 / one process: wall {two['wall_s'] / one['wall_s']:.2f}x, memory "
          f"{two['peak_pss_mib'] / one['peak_pss_mib']:.2f}x")  # fmt: skip
    print(f"golden-only / full verification (one process each): wall {gated['wall_s'] / one['wall_s']:.2f}x, memory "
          f"{gated['peak_pss_mib'] / one['peak_pss_mib']:.2f}x")  # fmt: skip

    def above(way: dict[str, float], key: str) -> float:
        return way[key] - base[key]

    print(f"the same, above what both import ({base['wall_s']:.1f} s, {base['peak_pss_mib']:.0f} MiB): wall "
          f"{above(gated, 'wall_s') / above(one, 'wall_s'):.2f}x, memory "
          f"{above(gated, 'peak_pss_mib') / above(one, 'peak_pss_mib'):.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
