"""``convert-ast-checkpoint``: an original AST checkpoint to a verified transformers model directory."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from converters.ast.labels import cached_hub_file
from converters.ast.variants import AUDIOSET_SAMPLE, BY_NAME, Variant, variant
from converters.cli_common import add_output_options, run_conversion

CHECKS = Path(__file__).with_name("checks.py")
SAMPLE_REPO = "nielsr/audio-spectogram-transformer-checkpoint"


@dataclass(frozen=True)
class ASTConversion:
    """What the checks session needs: the inputs of one conversion and where to stage its output."""

    variant: Variant
    checkpoint: Path
    staging: Path
    sample_audio: Path | None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert-ast-checkpoint",
        description="Convert an original Audio Spectrogram Transformer checkpoint (YuanGongND/ast) to "
        "transformers' ASTForAudioClassification, writing the output only if every check passes.",
    )
    p.add_argument(
        "--model_name",
        default="ast-finetuned-audioset-10-10-0.4593",
        metavar="NAME",
        help=f"the published variant the checkpoint is of: {', '.join(BY_NAME)}",
    )
    p.add_argument(
        "--checkpoint_path",
        required=True,
        type=Path,
        help="the original .pth file (see README for each variant's download address)",
    )
    p.add_argument("--pytorch_dump_folder_path", required=True, type=Path, help="output directory")
    p.add_argument(
        "--sample_audio",
        type=Path,
        default=None,
        help="the 16 kHz recording the published logits were measured on; checks them when given",
    )
    add_output_options(p)
    return p


def resolve_sample(given: Path | None, chosen: Variant) -> Path | None:
    """The sample audio: as given, else the AudioSet sample if the local hub cache holds it."""
    if given is not None or chosen.sample_audio != AUDIOSET_SAMPLE:
        return given
    return cached_hub_file(SAMPLE_REPO, AUDIOSET_SAMPLE)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def conversion(staging: Path) -> ASTConversion:
        chosen = variant(args.model_name)
        return ASTConversion(chosen, args.checkpoint_path, staging, resolve_sample(args.sample_audio, chosen))

    return run_conversion(
        prog="convert-ast-checkpoint",
        checks=CHECKS,
        make_conversion=conversion,
        validate=lambda: variant(args.model_name),
        target=args.pytorch_dump_folder_path,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        junitxml=args.junitxml,
    )


if __name__ == "__main__":
    raise SystemExit(main())
