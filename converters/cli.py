"""The one command-line front of every converter: its options from its record, refusals up front, the checks'
session on a staged output, and the output published only when every check passed.

``convert-ast-checkpoint ...`` and ``convert-s3prl-checkpoint ...`` are ``Converter.main``; ``convert-checkpoint
FORMAT ...`` reaches any registered converter, one installed later included.

Exit codes: 0 the output was written; 1 refused (an input, a check, a write), nothing written; 2 a usage error
(argparse's) or an internal error: a bug in the tool or in a reference implementation, its traceback in a log
file whose path is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.contract import Converter, Role, default_source, validator
from converters.errors import ConversionError, first_line

if TYPE_CHECKING:
    from converters.fetch import Fetcher

WRITTEN, REFUSED, INTERNAL = 0, 1, 2

SHARED_HELP = {
    "--overwrite": "replace a non-empty output directory as a whole (default: refuse one)",
    "--push_to_hub": "upload the output to this hub repository once written; without a name, to one named as the "
    "output directory, under your account (default: none)",
    "--junitxml": "also write the checks' results as JUnit XML (for CI), whether or not they pass (default: none)",
    "--report": "also write report.md, report.json and divergence.png into this directory, for a reviewer "
    "(default: none)",
    "--verbose": "show pytest's own report of the checks' session (default: the table only)",
    "--verify": "instead of converting, check a directory written before (a local model directory, or a hub "
    "name in the local cache) against the original: its tensors, its config, its outputs; nothing is written "
    "(default: none)",
    "--fix-config": "with --verify, when only config fields differ: write a copy of the directory with them set "
    "right into this directory, its weights hard-linked, and verify it (default: none)",
    "--revision": "the revision (branch, tag or commit) of the hub models named, for a reproducible run; NAME@REV "
    "pins one (default: each repository's main)",
}


def source_argument(value: str) -> Path | str:
    """A source option's value: an http(s) address as given, else a path."""
    from converters.fetch import is_url

    return value if is_url(value) else Path(value)


def usage(converter: Converter) -> str:
    """What each mode requires, one line each: converting, and verifying a directory written before."""
    required = []
    for option in converter.options:
        shown = f"{option.flag} {option.metavar or option.dest.upper()}"
        if option.role is Role.SOURCE and converter.default_source is not None:
            required.append(f"({shown} | {converter.default_source_option} NAME)")
        elif option.required and option.role is not Role.OUTPUT:
            required.append(shown)
    (output,) = [o for o in converter.options if o.role is Role.OUTPUT]
    given = " ".join(required)
    pad = " " * len("usage: ")
    return (f"{converter.command} {given} {output.flag} DIR [options]\n"
            f"{pad}{converter.command} {given} --verify DIR|HUB_NAME [--fix-config OUT] [options]")  # fmt: skip


def parser(converter: Converter) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=converter.command, description=converter.description, usage=usage(converter))
    for option in converter.options:
        path = option.role in (Role.INPUT, Role.OUTPUT)
        kind = source_argument if option.role is Role.SOURCE else Path if path else str
        p.add_argument(
            option.flag,
            *option.aliases,
            dest=option.dest,
            required=option.required and option.role is not Role.OUTPUT,  # --verify writes nothing
            default=option.default,
            type=option.type or kind,
            metavar=option.metavar,
            choices=option.choices,
            help=option.help,
        )
    p.add_argument("--overwrite", action="store_true", help=SHARED_HELP["--overwrite"])
    p.add_argument("--push_to_hub", metavar="REPO_ID", nargs="?", const="", default=None,
                   help=SHARED_HELP["--push_to_hub"])  # fmt: skip
    p.add_argument("--junitxml", metavar="PATH", type=Path, default=None, help=SHARED_HELP["--junitxml"])
    p.add_argument("--report", metavar="DIR", type=Path, default=None, help=SHARED_HELP["--report"])
    p.add_argument("--verbose", action="store_true", help=SHARED_HELP["--verbose"])
    p.add_argument("--verify", metavar="DIR", default=None, help=SHARED_HELP["--verify"])
    p.add_argument("--fix-config", metavar="OUT", type=Path, default=None, help=SHARED_HELP["--fix-config"])
    p.add_argument("--revision", metavar="REV", default=None, help=SHARED_HELP["--revision"])
    return p


def parse(converter: Converter, argv: list[str]) -> dict[str, Any]:
    """The options, the output required unless a directory is verified (argparse's errors, exit code 2)."""
    p = parser(converter)
    options = vars(p.parse_args(argv))
    (output,) = [o for o in converter.options if o.role is Role.OUTPUT]
    if options.get("verify") is None:
        if options.get(output.dest) is None:
            p.error(f"the following arguments are required: {output.flag}")
        if options.get("fix_config") is not None:
            p.error("--fix-config writes a fixed copy of a directory --verify checks: give --verify DIR")
    elif options.get(output.dest) is not None or options.get("push_to_hub") is not None:
        p.error(f"--verify checks a directory and writes nothing: {output.flag} and --push_to_hub have no place here")
    (source,) = [o for o in converter.options if o.role is Role.SOURCE]
    if options.get(source.dest) is None and default_source(converter, options) is None:
        named = f", or {converter.default_source_option} NAME (its published original is fetched)" if (
            converter.default_source) else ""  # fmt: skip
        p.error(f"the following arguments are required: {source.flag}{named}")
    return options


def output_of(converter: Converter, options: Mapping[str, Any]) -> Path:
    """Where the run writes: the output directory, or --fix-config's copy (verifying alone writes nowhere)."""
    (option,) = [o for o in converter.options if o.role is Role.OUTPUT]
    value = options.get(option.dest) or options.get("fix_config")
    return Path(value if value is not None else os.devnull)


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


def check_inputs(converter: Converter, options: Mapping[str, Any]) -> None:
    """What the command can judge alone, before any check: each input file exists, is a file and can be read;
    each model names a local directory or a model in the local hub cache."""
    from converters.hub import model_directory

    for option in converter.options:
        value = options.get(option.dest)
        if value is None:
            continue
        if option.role is Role.MODEL:
            model_directory(str(value), what=f"{option.flag}")  # a hub name is a local directory by now
        if option.role not in (Role.SOURCE, Role.INPUT):
            continue
        path = Path(value)
        if not path.exists():
            raise ConversionError(f"{option.flag} {path}: no such file")
        if not path.is_file():
            raise ConversionError(f"{option.flag} {path}: not a file")
        if not os.access(path, os.R_OK):
            raise ConversionError(f"{option.flag} {path}: cannot be read (permission denied)")


def hub_name(value: object) -> bool:
    """Whether ``value`` can name a hub repository (``org/name``, ``name``, with ``@revision``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(value).partition("@")[0])
    except HFValidationError:
        return False
    return True


def fetch_inputs(converter: Converter, options: Mapping[str, Any], fetcher: Fetcher) -> dict[str, Any]:
    """Every input an address or a hub name stands for, as a local path: from the caches, else fetched, once and up
    front. What cannot be had is refused in one message, every input named."""
    from converters.fetch import FetchFailure, is_url, refuse, torch_hub_dir

    resolved = dict(options)
    failures = []
    revision = options.get("revision")
    for option in converter.options:
        value = options.get(option.dest)
        try:
            if option.role is Role.SOURCE:
                address = value if is_url(value) else default_source(converter, options) if value is None else None
                if address is not None:
                    resolved[option.dest] = fetcher.url(str(address), torch_hub_dir() / "checkpoints")
            elif option.role is Role.MODEL and value is not None and not Path(value).is_dir() and hub_name(value):
                resolved[option.dest] = fetcher.hub_model(str(value), option.fetch, revision)
        except FetchFailure as failure:
            if option.role is Role.MODEL:
                failures.append(f"{option.flag} {str(value)!r}: not a local directory, and {failure}")
            elif value is None:  # the published original of the model named
                named = converter.default_source_option
                failures.append(f"{named} {options.get(named.lstrip('-'))}'s original: {failure}")
            else:
                failures.append(f"{option.flag} {value}: {failure}")
    verify = options.get("verify")
    if verify is not None and not Path(verify).is_dir() and hub_name(verify):
        try:
            files = sorted(name for name in converter.files if not name.endswith(WEIGHT_SUFFIXES))
            resolved["verify"] = str(fetcher.hub_model(str(verify), files, revision))
        except FetchFailure as failure:
            failures.append(f"--verify {verify!r}: not a local directory, and {failure}")
    refuse(failures)
    return resolved


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def check_report_dir(directory: Path | None, target: Path) -> None:
    if directory is None:
        return
    directory = directory.absolute()
    if directory.exists() and not directory.is_dir():
        raise ConversionError(f"--report {directory}: exists and is not a directory")
    if directory == target or target in directory.parents:
        raise ConversionError(f"--report {directory}: inside the output directory, which is replaced as a whole")


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


def terminal_progress() -> Callable[[str], None] | None:
    """A status line rewritten in place on a terminal (the check running); nothing in a log or a pipe."""
    if not sys.stderr.isatty():
        return None
    fd = os.dup(sys.stderr.fileno())  # the session captures the standard streams; this bypasses it

    def show(text: str) -> None:
        columns = os.get_terminal_size(fd).columns if os.isatty(fd) else 80
        os.write(fd, ("\r\x1b[K" + text[: columns - 1]).encode())

    return show


def log_internal_error(prog: str, argv: list[str], what: str, details: str) -> Path:
    """The traceback of a bug, with what ran, in a log file of its own; its path for the message."""
    from converters.report import versions

    fd, name = tempfile.mkstemp(prefix=f"{prog}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as log:
        log.write(f"{prog} {' '.join(argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")
        log.write(" ".join(f"{k} {v}" for k, v in versions().items()) + "\n\n")
        log.write(f"internal error in {what}\n\n{details}\n")
    return Path(name)


class Run:
    """One command run: its options, what happened, and the message it ends with."""

    def __init__(self, converter: Converter, options: Mapping[str, Any], argv: list[str]) -> None:
        from converters.fetch import Fetcher

        self.converter, self.options, self.argv = converter, options, argv
        self.given = dict(options)  # as given: addresses and hub names, before they are fetched
        self.prog = converter.command
        self.target = output_of(converter, options).absolute()
        self.result: Any = None  # the session's
        self.notes: list[str] = []
        self.code = REFUSED
        self.message = ""
        self.fetcher = Fetcher()
        self.notes_said = 0  # of the fetcher's lines

    def refuse(self, cause: str) -> None:
        self.code, self.message = REFUSED, f"{self.prog}: error: {cause}; nothing was written"

    def internal(self, what: str, cause: str, details: str, whose: str) -> None:
        log = log_internal_error(self.prog, self.argv, what, details)
        self.code = INTERNAL
        self.message = (
            f"{self.prog}: internal error in {what}: {cause}; nothing was written. This is a bug in {whose}, not a "
            f"fault of your files; the traceback is in {log}"
        )

    def session(self, staging: Path, references: list[str], verify: Path | None = None) -> None:
        """The checks on ``staging`` (written into it, or, ``verify``ing, read from that directory)."""
        from converters.safe_load import SafeLoader
        from converters.session import run_checks

        converter = self.converter
        options = {**self.options, "verify": verify}
        conversion = converter.conversion_class()(options, staging, converter, SafeLoader(remember=True), self.fetcher)
        self.result = result = run_checks(
            checks_modules(converter),
            conversion,
            junitxml=self.options.get("junitxml"),
            suite=f"{converter.name} conversion",
            ignore_warnings=converter.ignore_warnings,
            verbose=bool(self.options.get("verbose")),
            progress=terminal_progress(),
        )
        result.notes.extend(f"reference: {found}" for found in references)
        result.notes.extend(self.fetched_notes())
        from converters.report import wrap

        print(("\n" if self.options.get("verbose") else "") + result.table())
        if result.notes:
            print("\n" + "\n".join(wrap(note, "      ") for note in result.notes))
        failure = result.failure
        if failure is not None and failure.result == "internal error":
            raise _Internal(failure.check, failure.cause, failure.details + "\n\n" + result.output)
        for outcome in result.outcomes:
            if outcome.result == "failed" and outcome.details:
                print("\n" + outcome.details)  # the locator's table, beneath the table of checks
        if not result.passed:
            raise ConversionError(result.cause + (FIXABLE if verify is not None and self.fixable() else "")
                                  + self.forget_refused_download())  # fmt: skip

    def fetched_notes(self) -> list[str]:
        """What the fetcher said (a host it could not reach, once) and what it downloaded, not said yet."""
        said = self.notes_said
        lines = [*self.fetcher.notes, *(f"fetched {f.address} into {f.path} (sha256 {f.sha256})"
                                        for f in self.fetcher.fetched if f.how == "downloaded")]  # fmt: skip
        self.notes_said = len(lines)
        return lines[said:]

    def forget_refused_download(self) -> str:
        """A source fetched from an address that the loader refused (truncated, corrupted, hostile) is removed from
        the cache, so that a later run fetches it anew rather than take it for the file; said in the cause."""
        failure = self.result.failure
        if failure is None or failure.check != "test_source_loads_safely":
            return ""
        for fetched in self.fetcher.fetched:
            if fetched.address.startswith(("http://", "https://")):
                Path(fetched.path).unlink(missing_ok=True)
                return f"; the file fetched from {fetched.address} was removed from the cache ({fetched.path})"
        return ""

    def fixable(self) -> bool:
        """Only the config differs (the outputs may differ for it): the weights are the converter's."""
        result = self.result
        mended = {
            "test_the_config_computes_what_the_original_computes",
            "test_outputs_match_the_original_implementation",
        }
        return bool(result.settings) and all(o.result in ("passed", "skipped") or o.check in mended
                                             for o in result.outcomes)  # fmt: skip

    def verify(self, references: list[str]) -> None:
        """Check a directory written before; with --fix-config, write a copy with its config set right."""
        from converters.hub import model_directory

        directory = model_directory(str(self.options["verify"]), what="--verify").absolute()
        try:
            self.session(directory, references, verify=directory)
        except ConversionError:
            if self.options.get("fix_config") is None or not self.fixable():
                raise
            self.fix(directory, references)
            return
        self.code, self.message = WRITTEN, f"{self.prog}: verified {directory}: it computes what the original computes"

    def fix(self, directory: Path, references: list[str]) -> None:
        from converters.output import check_target, clean_stale, discard, make_staging, publish, write_fault
        from converters.settings import fixed

        changes = self.result.settings
        overwrite = bool(self.options.get("overwrite"))
        check_target(self.target, overwrite)
        clean_stale(self.target)
        staging = make_staging(self.target)
        try:
            try:
                link_files(directory, staging, skip={change.file for change in changes})
                fixed(directory, changes, staging)
            except OSError as error:
                raise write_fault(error, "writing a fixed copy into", staging) from None
            print(f"\nverifying the fixed copy ({'; '.join(c.described() for c in changes)}):\n")
            self.session(staging, references, verify=staging)
            publish(staging, self.target, overwrite)
        finally:
            if staging.exists():
                discard(staging)
        fields = ", ".join(f"{change.field}" for change in changes)
        self.code, self.message = (
            WRITTEN,
            f"{self.prog}: wrote {self.target}: {directory} with {fields} set as the "
            + ("original computes; verified"),
        )

    def convert(self) -> None:
        from converters.output import check_target, clean_stale, discard, make_staging, publish, write_fault

        overwrite = bool(self.options.get("overwrite"))
        staging: Path | None = None
        try:
            check_report_dir(self.options.get("report"), self.target)  # first: any later refusal is reported there
            references = check_references(self.converter)
            validate = validator(self.converter)
            if validate is not None:
                validate(self.options)
            verifying = self.options.get("verify") is not None
            if not verifying:
                check_target(self.target, overwrite)  # before any download: an output in the way is refused at once
            self.options = fetch_inputs(self.converter, self.options, self.fetcher)
            check_inputs(self.converter, self.options)
            if verifying:
                self.verify(references)
                return
            clean_stale(self.target)
            try:
                staging = make_staging(self.target)
            except OSError as error:
                raise write_fault(error, "creating a staging directory in", self.target.parent) from None
            self.session(staging, references)
            try:
                publish(staging, self.target, overwrite)
            except OSError as error:
                raise write_fault(error, "publishing the output into", self.target.parent) from None
            staging = None
            self.code, self.message = WRITTEN, f"{self.prog}: wrote {self.target}"
        except ConversionError as error:
            self.refuse(str(error))
        except _Internal as error:
            self.internal(f"check {error.check}", error.cause, error.details, "the tool or a reference implementation")
        except Exception as error:  # a bug of the harness itself, outside any check
            self.internal(self.prog, first_line(error), traceback.format_exc(), "the tool")
        finally:
            if staging is not None:
                discard(staging)

    def write_report(self) -> None:
        from converters import report

        directory = self.options.get("report")
        if directory is None:
            return
        try:
            check_report_dir(directory, self.target)
        except ConversionError:
            return  # the run was refused for it before anything ran: nothing is written there either
        inputs = [
            report.digest(Path(value))
            for option in self.converter.options
            if option.role in (Role.SOURCE, Role.INPUT, Role.MODEL)
            and (value := self.options.get(option.dest)) is not None
            and Path(value).exists()
        ]
        result = self.result
        written = {WRITTEN: "written", REFUSED: "refused", INTERNAL: "internal error"}[self.code]
        if self.options.get("verify") is not None and self.options.get("fix_config") is None:
            written = {WRITTEN: "verified", REFUSED: "not verified", INTERNAL: "internal error"}[self.code]
        document = report.Report(
            command=self.prog,
            converter=self.converter.name,
            result=written,
            exit_code=self.code,
            message=self.message,
            checks=result.rows() if result is not None else [],
            stages=report.stages_of(result.divergence) if result is not None else [],
            notes=result.notes if result is not None else [],
            inputs=inputs,
            fetched=[asdict(fetched) for fetched in self.fetcher.fetched],
            output=str(self.target) if self.code == WRITTEN and written != "verified" else None,
        )
        try:
            self.notes += report.write(document, Path(directory))
        except OSError as error:
            self.notes.append(f"--report: {os.strerror(error.errno or 0).lower()} while writing into {directory}")

    def push(self) -> None:
        repo_id = self.options.get("push_to_hub")
        if repo_id is None or self.code != WRITTEN:
            return
        repo_id = repo_id or self.target.name  # --push_to_hub alone, as the seed script took it
        try:
            push(self.target, repo_id)
        except Exception as error:  # network, auth, hub-side refusals: all end the same way here
            self.code = REFUSED
            self.message = f"{self.prog}: error: {self.target} was written, but pushing it to {repo_id} failed: " + (
                first_line(error)
            )
            return
        self.message += f"\n{self.prog}: pushed {self.target} to {repo_id}"


FIXABLE = "; the weights are the converter's: set those fields (--fix-config OUT writes a fixed copy)"


def link_files(directory: Path, into: Path, skip: set[str]) -> None:
    """Every file of ``directory`` but ``skip`` into ``into``: hard-linked (the hub cache's symlinks followed),
    copied where a link cannot be made (another file system)."""
    import shutil

    for path in sorted(directory.iterdir()):
        if path.name in skip or not path.is_file():
            continue
        real = path.resolve()
        try:
            os.link(real, into / path.name)
        except OSError:
            shutil.copy2(real, into / path.name)


class _Internal(Exception):
    def __init__(self, check: str, cause: str, details: str) -> None:
        super().__init__(cause)
        self.check, self.cause, self.details = check, cause, details


def convert(converter: Converter, options: Mapping[str, Any], argv: list[str] | None = None) -> int:
    """Run the checks on a conversion staged beside the output; publish it only if all passed.

    Returns the exit code: 0 if and only if the output was written (and pushed, when asked).
    """
    from converters.report import wrap

    run_ = Run(converter, options, argv or [])
    run_.convert()
    run_.write_report()
    run_.push()
    for note in [*run_.fetched_notes(), *run_.notes]:
        print(wrap(note), file=sys.stderr)
    print(wrap(run_.message), file=sys.stdout if run_.code == WRITTEN else sys.stderr)
    return run_.code


def run(converter: Converter, argv: list[str] | None = None) -> int:
    """A converter's command: parse its options, convert (or verify)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return convert(converter, parse(converter, arguments), arguments)


def exit_now(code: int) -> None:
    """End a console script's process with ``code`` once its output is flushed, skipping the interpreter's
    teardown: with torch, transformers and timm loaded, that tears down torch's operator registry one
    registration at a time (1.2 s), which nothing after the command needs. The command's files are durable
    (fsynced) by now, and what it printed is flushed here."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    logging.shutdown()
    os._exit(code)


def script() -> None:
    """``convert-checkpoint``'s console script."""
    exit_now(main())


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
