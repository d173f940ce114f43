"""Per family, on a base-size upstream and a large one: how far a converted S3PRL head is from s3prl's pipeline
from a recording, as the command reports it, with the extractor the seed wrote (do_normalize false for every
upstream) and with the one the command derives.

``python -m tools.recording_differences`` (in a tox environment: ``.tox/py311/bin/python``) builds the suite's tiny
synthetic cases (a keyword-spotting head, s3prl's upstream names as the fixtures give them), converts each with the
command, verifies a copy of the written directory whose extractor is the seed's, and prints a Markdown table of
the ``--report``'s input and output stages.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from converters.cli import run
from converters.s3prl.converter import CONVERTER
from converters.s3prl.example import TINY, upstream_name, write_base_model, write_runner_checkpoint
from converters.s3prl.families import FAMILIES, FinalNorm, Head

LAYER_NORMED = {"Data2VecAudio", "Wav2Vec2Conformer"}


def stages(arguments: list[str], report: Path) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run(CONVERTER, [*arguments, "--report", str(report)])
    document = json.loads((report / "report.json").read_text())
    return {stage["stage"]: stage for stage in document["stages"]} | {"first": next(
        (stage["stage"] for stage in document["stages"] if stage["first"]), "none")}  # fmt: skip


def row(directory: Path, family: Any, stable: bool) -> str:
    base = write_base_model(directory / "base", family, TINY, stable)
    checkpoint = write_runner_checkpoint(directory / "states.ckpt", base, family, Head.SEQUENCE, TINY)
    inputs = ["--base_model_name", str(base), "--checkpoint_path", str(checkpoint)]
    after = stages([*inputs, "--model_dump_path", str(directory / "out")], directory / "after")
    seed = directory / "seed"
    shutil.copytree(directory / "out", seed)
    extractor = json.loads((seed / "preprocessor_config.json").read_text())
    (seed / "preprocessor_config.json").write_text(json.dumps({**extractor, "do_normalize": False}))
    before = stages([*inputs, "--verify", str(seed)], directory / "before")
    config = json.loads((base / "config.json").read_text())
    normalizes = json.loads((directory / "out" / "preprocessor_config.json").read_text())["do_normalize"]

    def cells(found: dict[str, Any]) -> str:
        return (f"{found['input waveform']['difference']:.3g} | {found['outputs from the recording']['difference']:.3g}"
                f" | {found['outputs, padded batch']['difference']:.3g} | {found['first']}")  # fmt: skip

    name = upstream_name(family, type("C", (), config)())
    return f"| {family.name} | {name} | {normalizes} | {cells(before)} | {cells(after)} |"


def main() -> None:
    from converters.session import quiet_transformers

    with quiet_transformers():  # the fixtures' save_pretrained shows progress bars
        table()


def table() -> None:
    print(
        "| family | Args.upstream | normalizes | seed's extractor: input | outputs | padded batch | first divergence "
        "| derived extractor: input | outputs | padded batch | first divergence |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|---|")
    for family in FAMILIES:
        if Head.SEQUENCE not in family.heads:
            continue
        forms = [False, True] if family.final_norm is FinalNorm.STABLE else [False]
        for stable in forms:
            with tempfile.TemporaryDirectory() as directory:
                print(row(Path(directory), family, stable), flush=True)


if __name__ == "__main__":
    main()
