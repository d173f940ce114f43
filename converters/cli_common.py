"""What every conversion command does around its checks: refuse early, stage, verify, publish, report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from converters.errors import ConversionError, first_line
from converters.output import check_target, clean_stale, discard, make_staging, publish
from converters.safe_load import archives_checked_once
from converters.session import run_checks


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """The options every command shares after its output directory."""
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory as a whole")
    parser.add_argument(
        "--push_to_hub", metavar="REPO_ID", default=None, help="upload the output to this hub repository once written"
    )
    parser.add_argument(
        "--junitxml",
        metavar="PATH",
        type=Path,
        default=None,
        help="also write the checks' results as JUnit XML (for CI), whether or not they pass",
    )


def push(directory: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=str(directory), repo_id=repo_id)


def run_conversion(
    *,
    prog: str,
    checks: Path,
    make_conversion: Callable[[Path], object],
    validate: Callable[[], object],
    target: Path,
    overwrite: bool,
    push_to_hub: str | None,
    junitxml: Path | None = None,
) -> int:
    """Run ``checks`` on a conversion staged beside ``target``; publish it only if all passed.

    Returns the exit code: 0 if and only if ``target`` was written (and pushed, when asked).
    """
    target = target.absolute()
    staging: Path | None = None
    try:
        validate()
        check_target(target, overwrite)
        clean_stale(target)
        staging = make_staging(target)
        with archives_checked_once():  # the checks load the source several times: read its CRCs once
            result = run_checks(checks, make_conversion(staging), junitxml=junitxml)
        print("\n" + result.table())
        if result.notes:
            print("\n" + "\n".join(result.notes))
        if not result.passed:
            raise ConversionError(result.cause)
        publish(staging, target, overwrite)
        staging = None
        print(f"{prog}: wrote {target}")
    except ConversionError as error:
        print(f"{prog}: error: {error}; nothing was written", file=sys.stderr)
        return 1
    finally:
        if staging is not None:
            discard(staging)
    if push_to_hub:
        try:
            push(target, push_to_hub)
        except Exception as error:  # network, auth, hub-side refusals: all end the same way here
            print(
                f"{prog}: error: {target} was written, but pushing it to {push_to_hub} failed: {first_line(error)}",
                file=sys.stderr,
            )
            return 1
        print(f"{prog}: pushed {target} to {push_to_hub}")
    return 0
