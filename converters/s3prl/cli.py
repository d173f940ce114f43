"""``convert-s3prl-checkpoint``: an s3prl downstream checkpoint onto a transformers base model, verified."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from converters.cli_common import add_output_options, run_conversion
from converters.s3prl.convert import read_config

CHECKS = Path(__file__).with_name("checks.py")


@dataclass(frozen=True)
class S3PRLConversion:
    base_model: str
    config: Path
    checkpoint: Path
    staging: Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert-s3prl-checkpoint",
        description="Convert an s3prl downstream checkpoint (SUPERB head) onto a transformers wav2vec2-family "
        "model, writing the output only if every check passes.",
    )
    p.add_argument(
        "--base_model_name",
        required=True,
        help="a local transformers model directory, or a hub name found in the local cache",
    )
    p.add_argument(
        "--config_path", required=True, type=Path, help="the classifier config.json; architectures[0] picks the head"
    )
    p.add_argument("--checkpoint_path", required=True, type=Path, help="the s3prl runner checkpoint")
    p.add_argument("--model_dump_path", required=True, type=Path, help="output directory")
    add_output_options(p)
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_conversion(
        prog="convert-s3prl-checkpoint",
        checks=CHECKS,
        make_conversion=lambda staging: S3PRLConversion(
            args.base_model_name, args.config_path, args.checkpoint_path, staging
        ),
        validate=lambda: read_config(args.config_path),
        target=args.model_dump_path,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        junitxml=args.junitxml,
    )


if __name__ == "__main__":
    raise SystemExit(main())
