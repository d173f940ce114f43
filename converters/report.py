"""What a conversion tells the person who ran it, and what a reviewer attaches to a pull request.

On the terminal: the checks' table (no line over ``WIDTH`` columns: reasons and causes are numbered under it,
each said once), the notes, and one result line. With ``--report DIR``: ``report.md`` and ``report.json``
(the same: the checks, the locator's stages, the versions that ran, digests of the inputs) and
``divergence.png``, each stage's largest difference against its tolerance on a log scale.
"""

from __future__ import annotations

import json
import math
import platform
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

WIDTH = 100
# The packages whose versions fix what every conversion computes; beside them, each registered converter's
# reference packages (``Converter.requires``). Those installed are reported.
VERSIONED = ("torch", "transformers", "safetensors", "numpy")
PLOT_INSTALL = "pip install matplotlib (or the package's [report] extra)"


def wrap(text: str, indent: str = "    ") -> str:
    """``text`` in lines of at most ``WIDTH`` columns, continuations indented; a path is never broken."""
    return "\n".join(
        textwrap.fill(paragraph, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
        for paragraph in text.splitlines()
    )


@dataclass(frozen=True)
class Row:
    check: str
    result: str
    cause: str = ""
    difference: float | None = None
    tolerance: float | None = None


def checks_table(rows: Sequence[Row], said_below: str | None = None) -> str:
    """The table, then the numbered reasons: a skip's, a ``not run``'s, a failure's (except ``said_below``'s,
    whose cause the result line gives)."""
    footnotes: list[str] = []  # each reason once: the checks that share one share its number
    cells = [("check", "result", "difference", "tolerance")]
    for row in rows:
        result = row.result
        if row.cause and row.check != said_below and row.result != "passed":
            if row.cause not in footnotes:
                footnotes.append(row.cause)
            result += f" [{footnotes.index(row.cause) + 1}]"
        cells.append(
            (
                row.check,
                result,
                "" if row.difference is None else f"{row.difference:.3g}",
                "" if row.tolerance is None else f"{row.tolerance:.0e}",
            )
        )
    widths = [max(len(cell[i]) for cell in cells) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [""] + [wrap(f"[{i}] {note}") for i, note in enumerate(footnotes, 1)] if footnotes else []
    return "\n".join(lines)


def versioned() -> list[str]:
    """The distributions a report gives the versions of: the shared ones, then each converter's references."""
    from converters import registry

    names = list(VERSIONED)
    for converter in registry.all_converters():
        for requirement in converter.requires:
            names += [n for n in requirement.distributions or (requirement.module,) if n not in names]
    return names


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in versioned():
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def digest(path: Path) -> dict[str, Any]:
    """A file's size and XXH3-128 digest; a directory's files, each."""
    import xxhash

    if path.is_dir():
        return {"path": str(path), "files": [digest(p) for p in sorted(path.iterdir()) if p.is_file()]}
    hasher = xxhash.xxh3_128()
    with path.open("rb") as file:
        while chunk := file.read(1 << 24):
            hasher.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "xxh3_128": hasher.hexdigest()}


@dataclass
class Report:
    """Everything ``report.md`` and ``report.json`` hold."""

    command: str
    converter: str
    result: str  # written, refused, internal error
    exit_code: int
    message: str  # the result line
    checks: list[Row] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # the locator's: stage, difference, tolerance, ...
    notes: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    fetched: list[dict[str, Any]] = field(default_factory=list)  # address, path, sha256, bytes, how (or cached)
    versions: dict[str, str] = field(default_factory=versions)
    output: str | None = None

    def to_json(self) -> dict[str, Any]:
        """For tools: non-finite differences as the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
        data = asdict(self)
        data["checks"] = [asdict(row) for row in self.checks]
        for item in [*data["checks"], *data["stages"]]:
            for key in ("difference", "tolerance"):
                if isinstance(item[key], float) and not math.isfinite(item[key]):
                    item[key] = str(item[key])
        return data

    def markdown(self) -> str:
        lines = [f"# {self.command}: {self.result}", "", self.message, "", "## Checks", ""]
        lines += ["| check | result | largest difference | tolerance | cause |", "|---|---|---:|---:|---|"]
        for row in self.checks:
            difference = "" if row.difference is None else f"{row.difference:.3g}"
            tolerance = "" if row.tolerance is None else f"{row.tolerance:.0e}"
            lines.append(f"| `{row.check}` | {row.result} | {difference} | {tolerance} | {row.cause} |")
        lines += ["", "## Where the converted model and the original part", ""]
        if self.stages:
            lines += ["| stage | largest difference | tolerance | |", "|---|---:|---:|---|"]
            for stage in self.stages:
                mark = "first divergence" if stage["first"] else stage["note"]
                lines.append(f"| {stage['stage']} | {stage['difference']:.3g} | {stage['tolerance']:.3g} | {mark} |")
        else:
            lines.append("The comparison was not located stage by stage.")
        if self.notes:
            lines += ["", "## Notes", "", "```", *self.notes, "```"]
        lines += ["", "## Versions", "", *(f"- {name} {version}" for name, version in self.versions.items())]
        lines += ["", "## Inputs", ""]
        for item in self.inputs:
            for file in item.get("files", [item]):
                lines.append(f"- `{file['path']}`: {file['bytes']} bytes, XXH3-128 `{file['xxh3_128']}`")
        if self.fetched:
            lines += ["", "## Fetched", "", "What the run read from an address or the hub (pin them: the SHA-256):", ""]
            for item in self.fetched:
                lines.append(f"- {item['address']} ({item['how']}): `{item['path']}`, {item['bytes']} bytes, "
                             f"SHA-256 `{item['sha256']}`")  # fmt: skip
        return "\n".join(lines) + "\n"


def stages_of(divergence: Any) -> list[dict[str, Any]]:
    if divergence is None:
        return []
    first = divergence.first
    return [{"stage": s.stage, "difference": s.difference, "tolerance": s.tolerance, "note": s.note,
             "first": s is first} for s in divergence.stages]  # fmt: skip


def schema() -> dict[str, Any]:
    """The JSON schema ``report.json`` follows (``converters/data/report.schema.json``)."""
    text = resources.files("converters").joinpath("data", "report.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def plot(stages: Iterable[dict[str, Any]], path: Path, title: str) -> None:
    """Each stage's largest difference against its tolerance on a log scale, the first divergence marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = list(stages)
    floor = 1e-16
    names = [s["stage"] for s in chosen]
    # an exact zero has no place on a log scale, nor an infinity or a NaN: drawn at the floor and ceiling
    differences = [min(max(s["difference"], floor), 1e30) if math.isfinite(s["difference"]) else 1e30
                   for s in chosen]  # fmt: skip
    tolerances = [s["tolerance"] for s in chosen]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.45 * len(chosen) + 3), 4.5))
    positions = list(range(len(chosen)))
    colors = ["tab:red" if s["first"] else ("tab:orange" if d > t else "tab:blue")
              for s, d, t in zip(chosen, differences, tolerances, strict=True)]  # fmt: skip
    axes.bar(positions, differences, color=colors, label="largest difference")
    axes.plot(positions, tolerances, "k_", markersize=18, markeredgewidth=2, label="tolerance")
    for x, s in zip(positions, chosen, strict=True):
        if s["first"]:
            axes.annotate("first divergence", (x, differences[x]), textcoords="offset points", xytext=(0, 6),
                          ha="center", color="tab:red")  # fmt: skip
        elif s["difference"] == 0:
            axes.annotate("0", (x, floor), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    axes.set_yscale("log")
    axes.set_ylim(floor / 10, max(differences + tolerances) * 1e4)  # room above the bars for the marks
    axes.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("largest absolute difference")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the plot: no mark under it
    axes.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(report: Report, directory: Path) -> list[str]:
    """Write report.md, report.json and, where matplotlib is installed, divergence.png; returns what it says
    beside them (how to install matplotlib, when it is not)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
    (directory / "report.md").write_text(report.markdown(), encoding="utf-8")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [f"--report: divergence.png needs matplotlib, which is not installed: {PLOT_INSTALL}"]
    if not report.stages:
        return ["--report: no divergence.png: the comparison was not located stage by stage"]
    plot(report.stages, directory / "divergence.png", f"{report.command}: {report.result}")
    return []
