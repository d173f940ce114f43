"""``pytest --conversions MANIFEST``: verify the conversions a manifest lists, from the user's own pytest run.

Registered through the ``pytest11`` entry point: installing the package is enough. Without ``--conversions``
it adds that option and nothing else (importing it costs no more than the standard library).

A manifest is TOML, one ``[[conversion]]`` table per converted directory::

    [[conversion]]
    name = "ast-audioset-10-10"
    format = "ast"                      # a registered converter's name
    checkpoint = "originals/audioset_10_10_0.4593.pth"
    model = "converted/ast-audioset-10-10"   # the directory, or a hub name in the local cache
    model_name = "ast-finetuned-audioset-10-10-0.4593"   # the converter's options, by their manifest keys

Relative paths are relative to the manifest. Each entry's checks become test items
(``MANIFEST::NAME::CHECK``, JUnit class ``MANIFEST.NAME``); an entry's verification runs once in a process, at its
first item, and a failing entry leaves the others running; one refused before its checks ran fails once, at
its first check, the others not run. Under pytest-xdist ``--dist loadscope`` is the default (a ``--dist`` of
the user's own is kept): an entry's items are one scope, so entries are spread across the workers and each
checkpoint is read by one of them.
"""

from __future__ import annotations

import builtins
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# beside the converter's own options, by their manifest keys: the golden record's path, the hub revision
ENTRY_KEYS = {"name", "format", "model", "golden", "revision"}
MANIFEST = pytest.StashKey[Path]()  # the manifest --conversions names
COLLECTED = pytest.StashKey[bool]()
# what the command calls an input, in the manifest's words
MANIFEST_TERMS = {"--verify": "model", "--golden": "golden"}
ORIGINAL, RECORD = "the original", "its golden record"
RECORDING = "golden record written"  # the item that says whether --conversions-record wrote the entry's record
SHARDING = pytest.StashKey[bool]()  # pytest-shard is choosing this job's items: an entry's checks go together


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conversions", "verifying converted checkpoints (audio-checkpoint-converters)")
    group.addoption(
        "--conversions",
        metavar="MANIFEST",
        help="verify each converted directory a TOML manifest lists against its original checkpoint",
    )
    group.addoption(
        "--conversions-record",
        action="store_true",
        help="write each entry's golden record (its `golden` key) once its verification against the original passed",
    )
    group.addoption(
        "--conversions-golden-only",
        action="store_true",
        help="hold each entry with a golden record to its record alone: no original, no reference implementation",
    )


def pytest_configure(config: pytest.Config) -> None:
    manifest = config.getoption("conversions")
    if manifest is None:
        return
    path = Path(manifest).absolute()
    if not path.is_file():
        raise pytest.UsageError(f"--conversions {manifest}: no such file")
    config.stash[MANIFEST] = path
    # collected as pytest collects a file it is given, beside whatever else the run collects (pytest's count
    # of collected items, -k, --collect-only and deselection see the entries' checks)
    config.args.append(str(path))
    config.addinivalue_line("markers", "xdist_group(name): the items pytest-xdist keeps on one worker")
    config.addinivalue_line("markers", "check(order, mode): a conversion check (read off its module, not run here)")
    given = config.invocation_params.args
    user_chose = any(arg == "--dist" or arg.startswith(("--dist=", "-d")) for arg in given)
    if getattr(config.option, "dist", None) == "load" and not user_chose:
        # An entry's checks on one worker: ``loadscope`` schedules by the node id up to its last ``::``, which
        # is ``MANIFEST::ENTRY``. (``loadgroup`` and the ``xdist_group`` marks its items also carry stopped
        # grouping on pytest 9.2, whose node ids xdist 3.8 can no longer suffix: pytest-xdist issue 1386.)
        config.option.dist = "loadscope"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Manifest | None:
    config = parent.config
    if config.stash.get(MANIFEST, None) != file_path or config.stash.get(COLLECTED, False):
        return None
    config.stash[COLLECTED] = True  # once, whether pytest reaches it as an argument or inside a directory
    return Manifest.from_parent(parent, path=file_path)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config) -> None:
    """pytest-shard (``--num-shards``) assigns each item to a job by its node id: the checks' node ids are their
    entries' until every plugin has chosen (``pytest_collection_modifyitems`` below), so an entry is one job's."""
    if config.stash.get(MANIFEST, None) is not None and (getattr(config.option, "num_shards", 1) or 1) > 1:
        config.stash[SHARDING] = True


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_shards_chosen(config: pytest.Config) -> None:
    config.stash[SHARDING] = False


@dataclass
class Held:
    """What the summary says of an entry: what its checks held it to, when its record was made, what was recorded."""

    against: set[str] = field(default_factory=set)
    made: str = ""
    recorded: str = ""


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Each entry, and what it was held to: the original, its golden record (and when that was made), or both. Read
    off the checks' reports, which pytest-xdist's workers send the controller too."""
    held: dict[str, Held] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            properties = dict(getattr(report, "user_properties", ()))
            if not isinstance(report, pytest.TestReport) or not {"against", "recorded"} & set(properties):
                continue  # not an entry's item
            entry = held.setdefault(report.nodeid.rsplit("::", 1)[0], Held())
            if "against" in properties:
                entry.against.add(properties["against"])
            if "record_made" in properties:
                entry.made = properties["record_made"]
            if "recorded" in properties:
                entry.recorded = properties["recorded"]
    if not held:
        return
    terminalreporter.section("conversions")
    for name, entry in sorted(held.items()):
        what = " and ".join(held_to for held_to in (ORIGINAL, RECORD) if held_to in entry.against)
        terminalreporter.write_line(f"{name}: checked against {what}" + (f" ({entry.made})" if entry.made else ""))
        if entry.recorded:
            terminalreporter.write_line(f"  {entry.recorded}")


class Manifest(pytest.File):
    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        """Its entries; a manifest that cannot be read is one failing item that says why (not a collection
        error, which would stop the user's whole run)."""
        try:
            yield from self.entries()
        except pytest.Collector.CollectError as error:
            yield Broken.from_parent(self, name="manifest", cause=str(error))

    def entries(self) -> Iterator[Entry]:
        try:
            with self.path.open("rb") as file:  # TOML is UTF-8, whatever the locale
                document = tomllib.load(file)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise self.CollectError(f"{self.path}: not a readable TOML manifest: {error}") from None
        entries = document.get("conversion")
        if not isinstance(entries, list) or not entries:
            raise self.CollectError(f"{self.path} lists no [[conversion]] entries")
        names = [entry.get("name") for entry in entries if isinstance(entry, dict)]
        repeated = sorted({n for n in names if names.count(n) > 1 and n is not None})
        if repeated:
            raise self.CollectError(f"{self.path}: entry names must be unique; repeated: {', '.join(repeated)}")
        for number, table in enumerate(entries, 1):
            name = table.get("name") if isinstance(table, dict) else None
            yield Entry.from_parent(self, name=str(name or f"entry {number}"), table=table, number=number)


class Entry(pytest.Collector):
    """One ``[[conversion]]``: its converter, its options, and (once, when its first check runs) its result."""

    def __init__(self, *, table: Any, number: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table, self.number = table, number
        self._run: Any = None
        self.refused_at: str | None = None  # the check that reported the entry's refusal (its first)
        self.golden: Path | None = None  # its golden record's path, where the entry names one
        self._made: str | None = None

    def options(self) -> tuple[Any, dict[str, Any]]:
        from converters import registry
        from converters.contract import Role

        table = self.table
        where = f"{self.path} entry {self.number} ({self.name})"
        if not isinstance(table, dict):
            raise self.CollectError(f"{where} is not a table")
        missing = [key for key in ("name", "format", "model") if key not in table]
        if missing:
            raise self.CollectError(f"{where} lacks {', '.join(missing)}")
        try:
            converter = registry.get(str(table["format"]))
        except KeyError:
            raise self.CollectError(
                f"{where}: format {table['format']!r} is no registered converter; registered: "
                f"{', '.join(registry.names())}"
            ) from None
        by_key = {option.manifest_key: option for option in converter.options if option.role is not Role.OUTPUT}
        unknown = sorted(set(table) - ENTRY_KEYS - set(by_key))
        if unknown:
            raise self.CollectError(f"{where}: unknown keys {', '.join(unknown)}; {converter.name} takes "
                                    f"{', '.join(sorted(ENTRY_KEYS | set(by_key)))}")  # fmt: skip
        base = self.path.parent
        options: dict[str, Any] = {option.dest: None for option in converter.options}
        for key, option in by_key.items():
            if key in table:
                value = table[key]
                local = base / str(value)
                paths = option.role in (Role.SOURCE, Role.INPUT)
                options[option.dest] = local if paths else (str(local) if local.exists() else str(value))
        verified = base / str(table["model"])
        options["verify"] = str(verified) if verified.exists() else str(table["model"])  # else a hub name
        options["revision"] = table.get("revision")
        options["golden"] = base / str(table["golden"]) if "golden" in table else None
        options["golden_only"] = bool(self.config.getoption("conversions_golden_only"))
        options["record"] = bool(self.config.getoption("conversions_record")) and options["golden"] is not None
        options["entry"] = self.name
        return converter, options

    def check_required(self, converter: Any) -> None:
        from converters.contract import Role

        lacking = [o.manifest_key for o in converter.options
                   if o.required and o.role is not Role.OUTPUT and o.manifest_key not in self.table]  # fmt: skip
        if lacking:
            raise self.CollectError(f"{self.path} entry {self.number} ({self.name}) lacks {', '.join(lacking)}")

    def modes(self) -> tuple[bool, bool]:
        """(against the original, against the golden record): what this run holds the entry to. Recording, the
        original alone; golden-only, the record alone; else the record where there is one, and the original where
        the run has it (or where there is no record to hold the entry to)."""
        from converters.cli import Run

        converter, options = self.options()
        record = options["golden"]
        if options["record"]:
            return True, False
        if options["golden_only"]:
            if record is None:
                raise self.CollectError(
                    f"{self.path} entry {self.number} ({self.name}) has no golden record (a "
                    "`golden` key): --conversions-golden-only holds entries to their records"
                )
            return False, True
        gate = record is not None and Path(record).is_file()
        return Run(converter, options, []).has_original() or not gate, gate

    def collect(self) -> Iterator[pytest.Item]:
        """The entry's checks; an entry that cannot be read is one failing item, and the others still run."""
        from converters.cli import checks_modules
        from converters.session import GOLDEN_CHECKS, check_names

        try:
            converter, _ = self.options()
            full, gate = self.modes()
            if full:  # the original's side: what a verification against it needs (a gate, only the record)
                self.check_required(converter)
        except self.CollectError as error:
            yield Broken.from_parent(self, name="entry", cause=str(error))
            return
        self.golden = self.options()[1]["golden"]
        names = [(check, ORIGINAL) for check in check_names(checks_modules(converter), "verify")] if full else []
        # a record's checks are the same in every mode
        names += [(check, RECORD) for check in check_names([GOLDEN_CHECKS])] if gate else []
        items: list[pytest.Item] = [Check.from_parent(self, name=check, against=against) for check, against in names]
        if self.options()[1]["record"]:
            items.append(Recording.from_parent(self, name=RECORDING))
        for item in items:
            item.add_marker(pytest.mark.xdist_group(name=f"{self.path.name}::{self.name}"))
            yield item

    def record_made(self) -> str:
        """When the entry's golden record was made (or why it cannot be read): read once."""
        from converters.errors import ConversionError
        from converters.golden import Record

        if self._made is None:
            try:
                self._made = f"record made {Record.made_of(Path(str(self.golden)))}"
            except ConversionError as error:
                self._made = str(error)
        return self._made

    def result(self) -> Any:
        """The entry's verification, run once in this process (an xdist worker runs its own entries')."""
        if self._run is None:
            from converters.cli import Run

            converter, options = self.options()
            self._run = Run(converter, options, [])
            with warnings.catch_warnings():  # what the converter's own session ignores, the user's run does too
                for warning in converter.ignore_warnings:
                    action, message, *rest = warning.split(":")  # -W's: the message a literal prefix
                    category = getattr(builtins, rest[0], Warning) if rest else Warning
                    warnings.filterwarnings(action, re.escape(message), category)  # type: ignore[arg-type]
                self._run.convert()
            self._run.message = manifest_terms(self._run.message, converter, self.name)
        return self._run


def manifest_terms(message: str, converter: Any, entry: str) -> str:
    """A command's message in the manifest's words: each option by its manifest key, the entry named."""
    from converters.contract import Role

    text = message.split(": error: ", 1)[-1].removesuffix("; nothing was written")
    terms = dict(MANIFEST_TERMS)
    terms.update({o.flag: o.manifest_key for o in converter.options if o.role is not Role.OUTPUT})
    for flag, key in terms.items():  # a flag followed by a space: none is another's prefix then
        text = text.replace(f"{flag} ", f"{key} ")
    return f"entry {entry!r}: {text}"


class Broken(pytest.Item):
    """A manifest or an entry that cannot be read: one failing item that says why."""

    def __init__(self, *, cause: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cause = cause

    def runtest(self) -> None:
        raise CheckFailed(self.cause)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, self.cause


class Recording(pytest.Item):
    """``--conversions-record``: the entry's record written once its verification passed (what changed said), or
    why not: the verification failed (not recorded), or the record there is of another original (refused)."""

    def runtest(self) -> None:
        from converters.cli import WRITTEN

        run = self.parent.result()  # type: ignore[union-attr]
        if run.recorded:
            self.user_properties.append(("recorded", run.recorded))
            return
        verified = run.result is not None and run.result.passed
        if run.code == WRITTEN or not verified:
            pytest.skip("not recorded: the verification against the original did not pass")
        raise CheckFailed(run.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"{self.parent.name}: {self.name}"  # type: ignore[union-attr]


class CheckFailed(Exception):
    def __init__(self, cause: str, details: str = "") -> None:
        super().__init__(cause)
        self.cause, self.details = cause, details


class Check(pytest.Item):
    """One check of an entry's verification, reported as the entry's session found it."""

    def __init__(self, *, against: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.against = against  # what the check holds the directory to: the original, or its golden record
        self.user_properties.append(("against", against))
        if against == RECORD:
            self.user_properties.append(("record_made", self.parent.record_made()))  # type: ignore[union-attr]

    @property
    def nodeid(self) -> str:
        """Its own; while pytest-shard assigns items to shards, its entry's, so that an entry is one shard's whole."""
        if self.config.stash.get(SHARDING, False) and self.parent is not None:
            return self.parent.nodeid
        return super().nodeid

    def runtest(self) -> None:
        entry: Entry = self.parent  # type: ignore[assignment]
        run = entry.result()
        if run.result is None:  # refused before any check ran, or broke: said once, by the entry's first check
            if entry.refused_at is not None:
                pytest.skip(f"not run (the entry was refused: see {entry.refused_at})")
            entry.refused_at = self.name
            raise CheckFailed(run.message)
        outcome = next((o for result in run.results for o in result.outcomes if o.check == self.name), None)
        if outcome is None and self.against == RECORD:  # the record was not read: the entry failed before it
            pytest.skip(f"not run (the entry failed before its golden record was read: {run.message})")
        if outcome is None:
            raise CheckFailed(f"{self.name} was not reached: {run.message}")
        if outcome.difference is not None and outcome.tolerance is not None:  # in JUnit, as the command's own
            self.user_properties += [("largest_difference", f"{outcome.difference:.6g}"),
                                     ("tolerance", f"{outcome.tolerance:g}")]  # fmt: skip
        if outcome.result == "skipped":
            pytest.skip(outcome.cause)
        if outcome.result == "not run":
            pytest.skip(f"not run ({outcome.cause})")
        if outcome.result == "internal error":
            raise CheckFailed(f"internal error: {outcome.cause}", outcome.details)
        if outcome.result != "passed":
            raise CheckFailed(outcome.cause, outcome.details)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed):
            return "\n".join(filter(None, [excinfo.value.cause, excinfo.value.details]))
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"{self.parent.name}: {self.name}"  # type: ignore[union-attr]
