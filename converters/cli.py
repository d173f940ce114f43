"""The one command-line front of every converter: its options from its record, refusals up front, the checks'
session on a staged output, and the output published only when every check passed.

``convert-ast-checkpoint ...`` and ``convert-s3prl-checkpoint ...`` are ``Converter.main``; ``convert-checkpoint
FORMAT ...`` reaches any registered converter, one installed later included.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.contract import Converter, Role, validator
from converters.errors import ConversionError, first_line

SHARED_HELP = {
    "--overwrite": "replace a non-empty output directory as a whole",
    "--push_to_hub": "upload the output to this hub repository once written",
    "--junitxml": "also write the checks' results as JUnit XML (for CI), whether or not they pass",
}


def parser(converter: Converter) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=converter.command, description=converter.description)
    for option in converter.options:
        path = option.role in (Role.SOURCE, Role.INPUT, Role.OUTPUT)
        p.add_argument(
            option.flag,
            required=option.required,
            default=option.default,
            type=Path if path else str,
            metavar=option.metavar,
            help=option.help,
        )
    p.add_argument("--overwrite", action="store_true", help=SHARED_HELP["--overwrite"])
    p.add_argument("--push_to_hub", metavar="REPO_ID", default=None, help=SHARED_HELP["--push_to_hub"])
    p.add_argument("--junitxml", metavar="PATH", type=Path, default=None, help=SHARED_HELP["--junitxml"])
    return p


def output_of(converter: Converter, options: Mapping[str, Any]) -> Path:
    (option,) = [o for o in converter.options if o.role is Role.OUTPUT]
    return Path(options[option.dest])


def check_references(converter: Converter) -> list[str]:
    """The reference implementation's packages, each ``"<distribution> <version>"``; a missing one is refused."""
    found = []
    for requirement in converter.requires:
        installed = requirement.installed()
        if installed is None:
            raise ConversionError(
                f"{requirement.module} is not installed; the reference implementation needs it. Install it: "
                f"{requirement.install}"
            )
        found.append(installed)
    return found


def checks_modules(converter: Converter) -> list[Path]:
    """The generic checks, then the converter's own (modules by name, or paths to ``.py`` files)."""
    from converters.session import GENERIC_CHECKS

    modules = [GENERIC_CHECKS]
    for name in converter.checks:
        spec = None if name.endswith(".py") else importlib.util.find_spec(name)
        modules.append(Path(name if spec is None or spec.origin is None else spec.origin))
    return modules


def push(directory: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=str(directory), repo_id=repo_id)


def convert(converter: Converter, options: Mapping[str, Any]) -> int:
    """Run the checks on a conversion staged beside the output; publish it only if all passed.

    Returns the exit code: 0 if and only if the output was written (and pushed, when asked).
    """
    from converters.output import check_target, clean_stale, discard, make_staging, publish

    prog = converter.command
    target = output_of(converter, options).absolute()
    staging: Path | None = None
    try:
        references = check_references(converter)
        validate = validator(converter)
        if validate is not None:
            validate(options)
        check_target(target, options.get("overwrite", False))
        clean_stale(target)
        staging = make_staging(target)
        result = run_session(converter, options, staging, references)
        if not result.passed:
            raise ConversionError(result.cause)
        publish(staging, target, options.get("overwrite", False))
        staging = None
        print(f"{prog}: wrote {target}")
    except ConversionError as error:
        print(f"{prog}: error: {error}; nothing was written", file=sys.stderr)
        return 1
    finally:
        if staging is not None:
            discard(staging)
    repo_id = options.get("push_to_hub")
    if repo_id:
        try:
            push(target, repo_id)
        except Exception as error:  # network, auth, hub-side refusals: all end the same way here
            print(f"{prog}: error: {target} was written, but pushing it to {repo_id} failed: {first_line(error)}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"{prog}: pushed {target} to {repo_id}")
    return 0


def run_session(converter: Converter, options: Mapping[str, Any], staging: Path, references: list[str]) -> Any:
    from converters.safe_load import SafeLoader
    from converters.session import run_checks

    conversion = converter.conversion_class()(options, staging, converter, SafeLoader(remember=True))
    result = run_checks(
        checks_modules(converter),
        conversion,
        junitxml=options.get("junitxml"),
        suite=f"{converter.name} conversion",
        ignore_warnings=converter.ignore_warnings,
    )
    result.notes.extend(f"reference: {found}" for found in references)
    print("\n" + result.table())
    if result.notes:
        print("\n" + "\n".join(result.notes))
    return result


def run(converter: Converter, argv: list[str] | None = None) -> int:
    """A converter's command: parse its options, convert."""
    return convert(converter, vars(parser(converter).parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    """``convert-checkpoint FORMAT OPTIONS...``: any registered converter's command."""
    from converters import registry

    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        formats = ", ".join(f"{name} ({registry.get(name).command})" for name in registry.names())
        print(f"usage: convert-checkpoint FORMAT [options]\n\nformats: {formats}\n"
              f"FORMAT --help lists a format's options.")  # fmt: skip
        return 0 if arguments else 2
    try:
        converter = registry.get(arguments[0])
    except KeyError:
        print(f"convert-checkpoint: error: unknown format {arguments[0]!r}; registered: "
              f"{', '.join(registry.names())}", file=sys.stderr)  # fmt: skip
        return 2
    return converter.main(arguments[1:])


if __name__ == "__main__":
    raise SystemExit(main())
