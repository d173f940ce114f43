"""Draw ``bench/scaling.png`` from ``bench/results.json``: wall time and peak memory against parameter count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
TITLES = {"ast": "AST 10-10 (tiny, base, large backbone)", "s3prl": "S3PRL XVector on wav2vec2 (tiny, base, large)"}
STYLE = {"command": "o-", "verify": "D-", "seed": "s--", "core": "^-", "floor": "v:"}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((HERE / "results.json").read_text())["cases"]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    for column, kind in enumerate(("ast", "s3prl")):
        chosen = sorted((r for r in results if r["format"] == kind), key=lambda r: r["parameters"])
        if not chosen:
            continue
        millions = [r["parameters"] / 1e6 for r in chosen]
        for pipeline, style in STYLE.items():
            if any(pipeline not in r["median"] for r in chosen):
                continue
            axes[0][column].plot(millions, [r["median"][pipeline]["wall_s"] for r in chosen], style, label=pipeline)
            axes[1][column].plot(millions, [r["median"][pipeline]["peak_mib"] for r in chosen], style, label=pipeline)
        axes[0][column].set_title(TITLES[kind])
        axes[0][column].set_ylabel("wall time, median (s)")
        axes[1][column].set_ylabel("peak resident memory, median (MiB)")
        axes[1][column].set_xlabel("parameters (millions)")
        for row in axes:
            row[column].grid(True, alpha=0.3)
            row[column].legend()
    figure.tight_layout()
    figure.savefig(HERE / "scaling.png", dpi=90)
    print(f"wrote {HERE / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
