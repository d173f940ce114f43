"""``convert-s3prl-checkpoint``: an s3prl downstream checkpoint onto a transformers base model, verified."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from converters.cli_common import add_output_options, run_conversion

CHECKS = Path(__file__).with_name("checks.py")


@dataclass(frozen=True)
class S3PRLConversion:
    base_model: str
    config: Path | None
    checkpoint: Path
    staging: Path
    labels: Path | None = None


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
        "--config_path",
        type=Path,
        default=None,
        help="a hand-written classifier config.json, checked against what the checkpoint implies (default: none; "
        "the config is derived from the checkpoint and the base model)",
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        type=Path,
        default=None,
        help="class names, one per line in output order (default: s3prl's own list where it fixes one, else LABEL_i)",
    )
    p.add_argument("--checkpoint_path", required=True, type=Path, help="the s3prl runner checkpoint")
    p.add_argument("--model_dump_path", required=True, type=Path, help="output directory")
    add_output_options(p)
    return p  # fmt: skip


def validate(args: argparse.Namespace) -> None:
    """What the command can refuse before any check: no reference to compare with, an unreadable config."""
    from converters.s3prl.convert import read_config
    from converters.s3prl.derive import read_labels
    from converters.s3prl.reference import require

    require()
    if args.config_path is not None:
        read_config(args.config_path)
    if args.labels is not None:
        read_labels(args.labels)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_conversion(
        prog="convert-s3prl-checkpoint",
        checks=CHECKS,
        make_conversion=lambda staging: S3PRLConversion(
            args.base_model_name, args.config_path, args.checkpoint_path, staging, args.labels
        ),
        validate=lambda: validate(args),
        target=args.model_dump_path,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        junitxml=args.junitxml,
    )


if __name__ == "__main__":
    raise SystemExit(main())
