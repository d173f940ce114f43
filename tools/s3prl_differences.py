"""Per family x head, the largest difference between a converted head and s3prl's on the installed transformers.

``python -m tools.s3prl_differences`` (in a tox environment: ``.tox/py311/bin/python`` for 5.x,
``.tox/transformers4/bin/python`` for 4.57) builds the suite's tiny synthetic cases, converts each as the
command does (config derived from the checkpoint) and prints a Markdown table: the worst stage's difference
over the stages the locator compares, for the base encoder as it is and, where the family has one, its
stable-layer-norm form, with a weighted sum and with the last layer only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import transformers

from converters.errors import ConversionError
from converters.s3prl.checkpoint import read
from converters.s3prl.convert import build_model, convert_head, target_for
from converters.s3prl.example import (
    ALL_CASES,
    TINY,
    write_base_model,
    write_runner_checkpoint,
)
from converters.s3prl.families import FinalNorm
from converters.s3prl.preprocessing import feature_extractor
from converters.s3prl.stages import compare_with_s3prl


def worst(directory: Path, family: object, head: object, stable: bool, weighted: bool) -> str:
    base = write_base_model(directory / "base", family, TINY, stable)  # type: ignore[arg-type]
    path = write_runner_checkpoint(directory / "states.ckpt", base, family, head, TINY, weighted=weighted)  # type: ignore[arg-type]
    try:
        checkpoint = read(path)
        target = target_for(checkpoint, base)
        model = build_model(base, target, convert_head(checkpoint, target))
    except ConversionError as error:
        return f"refused: {error}"
    try:
        divergence = compare_with_s3prl(model, checkpoint, target, feature_extractor(target.extractor)).divergence
    except Exception as error:  # a transformers release that cannot run the head (4.x's SEW)
        return f"{type(error).__name__} in transformers"
    stage = max(divergence.stages, key=lambda s: s.difference)
    return f"{stage.difference:.3g} ({stage.stage})" + ("" if divergence.first is None else " DIVERGES")


def main() -> None:
    print(f"transformers {transformers.__version__}\n")
    print("| family x head | encoder | weighted sum | last layer |")
    print("|---|---|---:|---:|")
    for family, head in ALL_CASES:
        forms = [False, True] if family.final_norm is FinalNorm.STABLE else [False]
        for stable in forms:
            cells = []
            for weighted in (True, False):
                with tempfile.TemporaryDirectory() as directory:
                    cells.append(worst(Path(directory), family, head, stable, weighted))
            encoder = "stable layer norm" if stable else "as configured"
            if family.final_norm is FinalNorm.ALWAYS:
                encoder += " (ends in a LayerNorm)"
            print(f"| {family.model_class(head)} | {encoder} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
