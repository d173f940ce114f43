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
from urllib.parse import urlparse

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
    "--golden": "with --verify: the directory's golden record (a JSON file): the directory is also held to it; "
    "without the original (no source given), only to it (default: none)",
    "--record": "with --verify and --golden: once the verification against the original passed, write the record "
    "(what changed against the one there is printed) (default: off)",
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
            f"{pad}{converter.command} {given} --verify DIR|HUB_NAME [--fix-config OUT] [options]\n"
            f"{pad}{converter.command} --verify DIR|HUB_NAME --golden RECORD [options]")  # fmt: skip


def parser(converter: Converter) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=converter.command, description=converter.description, usage=usage(converter))
    for option in converter.options:
        path = option.role in (Role.INPUT, Role.OUTPUT)
        kind = source_argument if option.role is Role.SOURCE else Path if path else str
        p.add_argument(
            option.flag,
            *option.aliases,
            dest=option.dest,
            required=False,  # said by ``parse``: a gate against a golden record needs none of the original's
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
    p.add_argument("--golden", metavar="RECORD", type=Path, default=None, help=SHARED_HELP["--golden"])
    p.add_argument("--record", action="store_true", help=SHARED_HELP["--record"])
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
    if options.get("record") and (options.get("verify") is None or options.get("golden") is None):
        p.error("--record writes the golden record of a directory --verify checks: give --verify DIR --golden RECORD")
    if options.get("golden") is not None and options.get("verify") is None:
        p.error("--golden holds a directory --verify checks to its record: give --verify DIR")
    (source,) = [o for o in converter.options if o.role is Role.SOURCE]
    gating = options.get("golden") is not None and not options.get("record")  # a gate needs no original
    lacking = [o.flag for o in converter.options
               if o.required and o.role is not Role.OUTPUT and options.get(o.dest) is None]  # fmt: skip
    if lacking and not gating:
        p.error(f"the following arguments are required: {', '.join(lacking)}")
    # a published name stands for the source; whether it names a published model is the run's to say (up front)
    published = bool(converter.default_source) and options.get(converter.default_source_option.lstrip("-")) is not None
    if options.get(source.dest) is None and not published and not gating:
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


def fetch_inputs(converter: Converter, options: Mapping[str, Any], fetcher: Fetcher,
                 gate: bool = False) -> dict[str, Any]:  # fmt: skip
    """Every input an address or a hub name stands for, as a local path: from the caches, else fetched, once and up
    front. What cannot be had is refused in one message, every input named. A ``gate`` (a directory against its
    golden record) needs the directory alone."""
    from converters.fetch import FetchFailure, is_url, refuse, torch_hub_dir

    resolved = dict(options)
    failures = []
    revision = options.get("revision")
    for option in () if gate else converter.options:
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


# the options of a run, not of the conversion: left out of a record's provenance
RUN_OPTIONS = {"overwrite", "push_to_hub", "junitxml", "report", "verbose", "verify", "fix_config", "golden", "record",
               "golden_only", "entry"}  # fmt: skip


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
        self.result: Any = None  # the last session's
        self.conversion: Any = None  # the last session's conversion
        self.references: list[str] = []  # the reference implementation's packages, as the run found them
        self.recorded = ""  # the golden record written, and what changed against the one there
        self.results: list[Any] = []  # every session's: against the original, against the golden record
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

        converter = self.converter
        options = {**self.options, "verify": verify}
        conversion = converter.conversion_class()(options, staging, converter, SafeLoader(remember=True), self.fetcher)
        self.conversion = conversion  # a golden record is measured through the verified conversion's hooks
        self.checked(checks_modules(converter), conversion, f"{converter.name} conversion", references, verify)

    def checked(self, modules: list[Path], conversion: Any, suite: str, references: list[str],
                verify: Path | None = None) -> None:  # fmt: skip
        """A session of ``modules`` on ``conversion``, its table and notes printed; a failure raised as the cause."""
        from converters.session import run_checks

        self.result = result = run_checks(
            modules,
            conversion,
            junitxml=self.options.get("junitxml"),
            suite=suite,
            ignore_warnings=self.converter.ignore_warnings,
            verbose=bool(self.options.get("verbose")),
            progress=terminal_progress(),
        )
        self.results.append(result)
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
        """Check a directory written before: against the original (with --fix-config, a copy with its config set
        right written), and against its golden record (--golden) where there is one; --record writes the record
        once the verification against the original passed."""
        from converters.hub import model_directory

        directory = model_directory(str(self.options["verify"]), what="--verify").absolute()
        given = self.options.get("golden")
        golden = Path(given) if given is not None else None
        recording = bool(self.options.get("record"))
        if golden is not None and not self.has_original():
            self.gate(directory, golden)
            return
        try:
            self.session(directory, references, verify=directory)
        except ConversionError:
            if self.options.get("fix_config") is not None and self.fixable():
                self.fix(directory, references)
                return
            if golden is not None and not recording and golden.is_file():  # the report shows both
                with contextlib.suppress(ConversionError):
                    self.gate(directory, golden)
            raise
        self.code, self.message = WRITTEN, f"{self.prog}: verified {directory}: it computes what the original computes"
        if golden is not None and recording:
            self.record(directory, golden)
        elif golden is not None and golden.is_file():
            verified = self.message
            self.gate(directory, golden)
            self.message = f"{verified}\n{self.message}"

    def has_original(self) -> bool:
        """Whether the run has the original to verify against, unless --golden-only: a source file there, or an
        address's (a published name's original) in the cache or to be fetched (not offline)."""
        from converters.fetch import torch_hub_dir

        if self.options.get("golden_only"):
            return False
        from converters.fetch import is_url

        (source,) = [o for o in self.converter.options if o.role is Role.SOURCE]
        given = self.options.get(source.dest)
        if given is not None and not is_url(given):
            return Path(given).is_file()
        address = given if given is not None else default_source(self.converter, self.options)
        if address is None:
            return False
        cached = torch_hub_dir() / "checkpoints" / os.path.basename(urlparse(str(address)).path)
        return cached.is_file() or not self.fetcher.offline

    def original_sha256(self) -> str | None:
        from converters.fetch import sha256_of

        (source,) = [o for o in self.converter.options if o.role is Role.SOURCE]
        value = self.options.get(source.dest)
        return sha256_of(Path(value)) if value is not None and Path(value).is_file() else None

    def gate(self, directory: Path, record_path: Path) -> None:
        """The directory against its golden record: neither the original nor the reference implementations."""
        from converters.golden import Record
        from converters.golden_gate import Gate
        from converters.safe_load import SafeLoader
        from converters.session import GOLDEN_CHECKS

        record = Record.read(record_path)
        hooks = self.converter.conversion_class()(
            {**self.options, "verify": directory}, directory, self.converter, SafeLoader(), self.fetcher
        )
        gate = Gate(self.converter, hooks, directory, record, record_path, self.original_sha256(),
                    options=dict(self.options))  # fmt: skip
        self.checked([GOLDEN_CHECKS], gate, f"{self.converter.name} golden record", [])
        self.code = WRITTEN
        self.message = f"{self.prog}: {directory} computes what its record holds (made {record.made})"

    def record(self, directory: Path, record_path: Path) -> None:
        """After a verification that passed: the directory's golden record, written (what changed against the one
        there printed); a record of another original there is refused, naming both."""
        from converters.fetch import sha256_of
        from converters.golden import Record, drift, fingerprint_stages, make_record, measure
        from converters.report import versions

        source = next(o for o in self.converter.options if o.role is Role.SOURCE)
        path = Path(self.options[source.dest])
        original = {"file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size}
        fetched = next((f for f in self.fetcher.fetched if Path(f.path) == path), None)
        if fetched is not None:
            original["address"] = fetched.address
        old = Record.read(record_path) if record_path.is_file() else None
        if old is not None and old.provenance["original"]["sha256"] != original["sha256"]:
            raise ConversionError(
                f"record {record_path} was made from another original: SHA-256 {old.provenance['original']['sha256']}"
                f", this run's {original['sha256']} ({path}); remove the record to record this original"
            )
        measured = measure(self.conversion, directory, self.result.fields)
        measured.stages = fingerprint_stages(self.conversion, measured)
        paths = {o.dest for o in self.converter.options if o.role in (Role.SOURCE, Role.INPUT, Role.MODEL)}
        options = {k: os.path.relpath(v, record_path.parent.absolute()) if k in paths and Path(v).exists() else str(v)
                   for k, v in self.given.items() if v is not None and k not in RUN_OPTIONS}  # fmt: skip
        provenance = {"original": original, "reference": self.references, "versions": versions(), "options": options}
        entry = str(self.options.get("entry") or directory.name)
        record = make_record(entry, self.converter.name, measured, self.result.compared, provenance)
        lines = drift(old, record) if old is not None else ["new"]
        record.write(record_path)
        relative = os.path.relpath(record_path)
        shown = str(record_path) if relative.startswith("..") else relative  # inside the working directory: relative
        self.recorded = f"recorded {shown}: " + ("; ".join(lines) or "nothing changed")
        self.message += f"\n{self.prog}: {self.recorded}"

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
            gating = self.options.get("golden") is not None and not self.has_original()
            references = [] if gating else check_references(self.converter)  # a gate runs no reference
            self.references = references
            validate = validator(self.converter)
            if validate is not None and not gating:  # it reads the original's side: a gate has none of it
                validate(self.options)
            verifying = self.options.get("verify") is not None
            if not verifying:
                check_target(self.target, overwrite)  # before any download: an output in the way is refused at once
            self.options = fetch_inputs(self.converter, self.options, self.fetcher, gate=gating)
            if not gating:  # a gate reads the directory and its record alone
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
            self.conversion = None  # it holds the source's loader: nothing of the source outlives the run
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
        sessions = self.results or ([result] if result is not None else [])  # against the original, the record
        written = {WRITTEN: "written", REFUSED: "refused", INTERNAL: "internal error"}[self.code]
        if self.options.get("verify") is not None and self.options.get("fix_config") is None:
            written = {WRITTEN: "verified", REFUSED: "not verified", INTERNAL: "internal error"}[self.code]
        document = report.Report(
            command=self.prog,
            converter=self.converter.name,
            result=written,
            exit_code=self.code,
            message=self.message,
            checks=[row for each in sessions for row in each.rows()],
            stages=report.stages_of(result.divergence) if result is not None else [],
            notes=[note for each in sessions for note in each.notes],
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
    return run(converter, arguments[1:])


if __name__ == "__main__":
    raise SystemExit(main())
