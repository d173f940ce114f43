"""Draw ``bench/scaling.png`` from ``bench/results.json``: wall time and peak memory against parameter count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
STYLE = {"command": "o-", "verify": "D-", "seed": "s--", "core": "^-", "floor": "v:"}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from converters import registry

    results = json.loads((HERE / "results.json").read_text())["cases"]
    kinds = [name for name in registry.names() if any(r["format"] == name for r in results)]  # one column each
    figure, axes = plt.subplots(2, len(kinds), figsize=(5.5 * len(kinds), 8), sharex="col", squeeze=False)
    for column, kind in enumerate(kinds):
        chosen = sorted((r for r in results if r["format"] == kind), key=lambda r: r["parameters"])
        if not chosen:
            continue
        millions = [r["parameters"] / 1e6 for r in chosen]
        for pipeline, style in STYLE.items():
            if any(pipeline not in r["median"] for r in chosen):
                continue
            axes[0][column].plot(millions, [r["median"][pipeline]["wall_s"] for r in chosen], style, label=pipeline)
            axes[1][column].plot(millions, [r["median"][pipeline]["peak_mib"] for r in chosen], style, label=pipeline)
        sizes = ", ".join(r["case"].removeprefix(f"{kind}-") for r in chosen)
        axes[0][column].set_title(f"{kind} example ({sizes})")
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
