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

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENTRY_KEYS = {"name", "format", "model"}  # beside the converter's own options, by their manifest keys
MANIFEST = pytest.StashKey[Path]()  # the manifest --conversions names
COLLECTED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conversions", "verifying converted checkpoints (audio-checkpoint-converters)")
    group.addoption(
        "--conversions",
        metavar="MANIFEST",
        default=None,
        help="verify each converted directory a TOML manifest lists against its original checkpoint",
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
    if getattr(config.option, "dist", "no") == "load" and not user_chose:
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
            document = tomllib.loads(self.path.read_text(encoding="utf-8"))
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
        lacking = [o.manifest_key for o in by_key.values() if o.required and o.manifest_key not in table]
        if lacking:
            raise self.CollectError(f"{where} lacks {', '.join(lacking)}")
        base = self.path.parent
        options: dict[str, Any] = {option.dest: None for option in converter.options}
        for key, option in by_key.items():
            if key in table:
                value = table[key]
                local = base / str(value)
                paths = option.role in (Role.SOURCE, Role.INPUT)
                options[option.dest] = local if paths else (str(local) if local.exists() else str(value))
        verified = base / str(table["model"])
        options["verify"] = str(verified) if verified.exists() else str(table["model"])  # else a cached hub name
        return converter, options

    def collect(self) -> Iterator[pytest.Item]:
        """The entry's checks; an entry that cannot be read is one failing item, and the others still run."""
        from converters.cli import checks_modules
        from converters.session import check_names

        try:
            converter, _ = self.options()
        except self.CollectError as error:
            yield Broken.from_parent(self, name="entry", cause=str(error))
            return
        for check in check_names(checks_modules(converter), "verify"):
            item = Check.from_parent(self, name=check)
            item.add_marker(pytest.mark.xdist_group(name=f"{self.path.name}::{self.name}"))
            yield item

    def result(self) -> Any:
        """The entry's verification, run once in this process (an xdist worker runs its own entries')."""
        if self._run is None:
            from converters.cli import Run

            converter, options = self.options()
            self._run = Run(converter, options, [])
            self._run.convert()
        return self._run


class Broken(pytest.Item):
    """A manifest or an entry that cannot be read: one failing item that says why."""

    def __init__(self, *, cause: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cause = cause

    def runtest(self) -> None:
        raise CheckFailed(self.cause)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return self.cause

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, self.cause


class CheckFailed(Exception):
    def __init__(self, cause: str, details: str = "") -> None:
        super().__init__(cause)
        self.cause, self.details = cause, details


class Check(pytest.Item):
    """One check of an entry's verification, reported as the entry's session found it."""

    def runtest(self) -> None:
        entry: Entry = self.parent  # type: ignore[assignment]
        run = entry.result()
        if run.result is None:  # refused before any check ran, or broke: said once, by the entry's first check
            if entry.refused_at is not None:
                pytest.skip(f"not run (the entry was refused: see {entry.refused_at})")
            entry.refused_at = self.name
            raise CheckFailed(run.message)
        outcome = next((o for o in run.result.outcomes if o.check == self.name), None)
        if outcome is None:
            raise CheckFailed(f"{self.name} was not reached: {run.message}")
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
