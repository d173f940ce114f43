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
first item, and a failing entry leaves the others running. Under pytest-xdist, an entry's items are one
``xdist_group``, and ``--dist loadgroup`` is the default (a ``--dist`` of the user's own is kept), so that
entries are spread across the workers and each checkpoint is read by one of them.
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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conversions", "verifying converted checkpoints (audio-checkpoint-converters)")
    group.addoption(
        "--conversions",
        metavar="MANIFEST",
        default=None,
        help="verify each converted directory a TOML manifest lists against its original checkpoint",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("conversions") is None:
        return
    config.addinivalue_line("markers", "xdist_group(name): the items pytest-xdist keeps on one worker")
    config.addinivalue_line("markers", "check(order, mode): a conversion check (read off its module, not run here)")
    given = config.invocation_params.args
    user_chose = any(arg == "--dist" or arg.startswith(("--dist=", "-d")) for arg in given)
    if getattr(config.option, "dist", "no") == "load" and not user_chose:
        config.option.dist = "loadgroup"  # xdist's own grouping: an entry's checks on one worker


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    manifest = config.getoption("conversions")
    if manifest is None:
        return
    path = Path(manifest).absolute()
    if not path.is_file():
        raise pytest.UsageError(f"--conversions {manifest}: no such file")
    collector = Manifest.from_parent(session, path=path)
    try:
        entries = list(collector.collect())
    except pytest.Collector.CollectError as error:
        items.append(Broken.from_parent(collector, name="manifest", cause=str(error)))
        return
    for entry in entries:
        try:
            items.extend(entry.collect())
        except pytest.Collector.CollectError as error:  # this entry only: the others still run
            items.append(Broken.from_parent(entry, name="entry", cause=str(error)))


class Manifest(pytest.File):
    def collect(self) -> Iterator[Entry]:
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

    def collect(self) -> Iterator[Check]:
        from converters.cli import checks_modules
        from converters.session import check_names

        converter, _ = self.options()
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
        run = self.parent.result()  # type: ignore[union-attr]
        if run.result is None:  # refused before any check ran, or broke
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
