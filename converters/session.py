"""A conversion runs as a pytest session whose tests are its checks.

The harness hands a ``Conversion`` to the checks through this module's plugin, beside the generic fixtures
(``converters/session_fixtures.py``): it orders the checks, skips a check whose needed checks did not pass, and
records each check's outcome (``converters/outcomes.py``) with its one-line cause and the difference it measured.
A check fails on a refusal (``ConversionError``) or a difference (an assertion); any other exception is an
internal error: a bug in the tool or in a reference implementation, not the user's file.
"""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from converters import session_fixtures
from converters.errors import ConversionError
from converters.outcomes import FAILED, INTERNAL, NOT_RUN, PASSED, SKIPPED, Outcome, SessionResult, one_line
from converters.session_fixtures import PLUGIN, Concurrent, NotRun

# -- the plugin -----------------------------------------------------------------------------------------------------


def check_order(item: pytest.Item) -> float:
    marker = item.get_closest_marker("check")
    return float(marker.kwargs.get("order", 50)) if marker else 50.0


def check_mode(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("check")
    return marker.kwargs.get("mode") if marker else None


class ConversionPlugin:
    """Carries a conversion into its checks, orders them, and records what they found."""

    def __init__(self, conversion: Any, progress: Callable[[str], None] | None = None) -> None:
        self.conversion = conversion
        self.progress = progress  # told each check's name as it starts, and "" at the end
        self.divergence: Any = None
        self.outcomes: dict[str, Outcome] = {}
        self.measured: dict[str, tuple[float, float]] = {}
        self.notes: list[str] = []
        self.settings: list[Any] = []  # verifying: the JSON fields that differ from what the original computes with
        self.fields: dict[str, Any] = {}  # the function's fields, per file, as the config check compared them
        self.compared: dict[str, tuple[float, float]] = {}  # each output the comparison measured
        self.order: dict[str, float] = {}  # each check's place (the check marker's order)
        self.concurrent: Concurrent | None = None  # the reference, where it is computed alongside the checks
        self.flushing: list[Any] = []  # threads writing the staged files back to disk, joined at the end
        self._first_to_raise: dict[int, tuple[str, BaseException]] = {}  # a failed fixture: the check it failed

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[PLUGIN] = self
        config.addinivalue_line("markers", "check(order, needs): a check's place, and the checks it needs passed")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # a check of one mode only (converting: what was written; verifying: what a directory holds)
        mode = "verify" if getattr(self.conversion, "verifying", False) else "convert"
        items[:] = [item for item in items if check_mode(item) in (None, mode)]
        items.sort(key=check_order)  # stable: definition order within an order number
        self.order = {item.name: check_order(item) for item in items}

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.progress is not None:
            done = len(self.outcomes)
            self.progress(f"checking {done + 1}/{len(self.order)}: {nodeid.split('::')[-1]}")

    def pytest_sessionfinish(self) -> None:
        for thread in self.flushing:
            thread.join()
        if self.progress is not None:
            self.progress("")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker("check")
        for need in marker.kwargs.get("needs", ()) if marker else ():
            found = self.outcomes.get(need)
            if found is not None and found.result not in (PASSED, SKIPPED):
                raise NotRun(need)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        excinfo = call.excinfo
        if excinfo is None:
            return report
        # The report holds the traceback as text now. Its frames' locals (views of the source, a model) would
        # stay alive in a reference cycle through pytest's cached fixture error, the file mapped, until a
        # garbage collection; a run of many conversions in one process (the manifest plugin) would pile them up.
        traceback.clear_frames(excinfo.tb)
        error = excinfo.value
        name = item.name
        if isinstance(error, NotRun):
            report.user_properties.append(("not_run", error.need))
        elif report.when == "setup" and not excinfo.errisinstance(pytest.skip.Exception):
            first = self._first_to_raise.setdefault(id(error), (name, error))[0]
            if first != name:  # the fixture failed already, for the check that needed it first: not run, as JUnit says
                report.user_properties.append(("not_run", first))
                report.outcome = "skipped"
                report.longrepr = (str(item.path), 0, f"not run: needs {first}")
                return report
        if excinfo.errisinstance(ConversionError):  # a refusal: its cause, not a traceback
            report.longrepr = str(error)
        kind = _kind(excinfo)
        report.user_properties.append(("kind", kind))
        if kind == FAILED:
            report.user_properties.append(("message", str(getattr(error, "msg", error))))
        return report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # the checks module itself could not be imported (a missing dependency, say)
            name = f"collecting {Path(report.nodeid).name}"
            self.outcomes[name] = Outcome(name, INTERNAL, one_line(report.longrepr), details=str(report.longrepr))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::")[-1]
        if report.passed and report.when != "call":
            return
        if name in self.outcomes and self.outcomes[name].result != PASSED:
            return  # keep the first problem (a teardown error after a failure adds nothing)
        properties = dict(report.user_properties)
        if "not_run" in properties:
            outcome = Outcome(name, NOT_RUN, f"needs {properties['not_run']}")
        elif report.passed:
            outcome = Outcome(name, PASSED)
        elif report.skipped:
            outcome = Outcome(name, SKIPPED, one_line(report.longrepr))
        else:
            kind = str(properties.get("kind", FAILED))
            cause = one_line(report.longrepr)
            message = str(properties.get("message", ""))
            beyond = message.split("\n", 1)[1].strip("\n") if "\n" in message else ""
            outcome = Outcome(name, kind, cause, details=str(report.longrepr) if kind == INTERNAL else beyond)
        if name in self.measured:
            outcome.difference, outcome.tolerance = self.measured[name]
        self.outcomes[name] = outcome


def _kind(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """A refusal or a measured difference fails the check; anything else is a bug, ours or a reference's."""
    if excinfo.errisinstance((ConversionError, AssertionError, pytest.fail.Exception)):
        return FAILED
    if excinfo.errisinstance(pytest.skip.Exception):
        return SKIPPED
    return INTERNAL


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off (the report says what matters), restored afterwards."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        (logging.enable_progress_bar if bars else logging.disable_progress_bar)()


GENERIC_CHECKS = Path(__file__).with_name("checks.py")
GOLDEN_CHECKS = Path(__file__).with_name("golden_checks.py")


def check_names(modules: Sequence[Path], mode: str | None = None) -> list[str]:
    """The checks a session of ``mode`` runs, in its order, read off the modules (imported, not run); without a
    mode, those every session runs (the checks that name no mode)."""
    import importlib.util

    found: list[tuple[float, int, str]] = []
    for index, path in enumerate(modules):
        spec = importlib.util.spec_from_file_location(f"_listed_checks_{index}_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, function in vars(module).items():
            if not name.startswith("test_") or not callable(function):
                continue
            marks = [m for m in getattr(function, "pytestmark", []) if m.name == "check"]
            kwargs = marks[0].kwargs if marks else {}
            if kwargs.get("mode") in (None, mode):
                found.append((float(kwargs.get("order", 50)), len(found), name))
    return [name for _, _, name in sorted(found)]


def run_checks(
    checks: Sequence[Path] | Path,
    conversion: object,
    *,
    junitxml: Path | None = None,
    suite: str = "conversion",
    ignore_warnings: Sequence[str] = (),
    verbose: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SessionResult:
    """Run the checks in ``checks`` (test modules) against ``conversion`` in a pytest session of its own.

    ``junitxml``: also write the results there (each check a test case, its measured difference and
    tolerance as properties), as the suite ``suite``. ``verbose``: pytest's own report on stdout (else kept in
    the result's ``output``); ``progress``: told each check's name as it starts.

    The session ignores the caller's pytest configuration (ini files, conftest.py, PYTEST_ADDOPTS): the
    checks must be the same wherever the command runs.
    """
    modules = [checks] if isinstance(checks, Path) else list(checks)
    plugin = ConversionPlugin(conversion, progress)
    root = Path(os.path.commonpath([str(m.parent.absolute()) for m in modules]))
    args = [
        *map(str, modules),
        "-c",
        os.devnull,
        "--rootdir",
        str(root),
        "--confcutdir",
        str(root),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-p",
        "no:randomly",
        "-p",
        "no:debugging",  # no pdb: a conversion is not debugged through its checks, and pdb's import costs
        "-p",
        "no:unraisableexception",  # its teardown runs the garbage collector over the models several times
        # plugins the checks have no use for, each paid for on every check (logging's handlers most)
        "-p",
        "no:logging",
        "-p",
        "no:doctest",
        "-p",
        "no:stepwise",
        "-p",
        "no:pastebin",
        "--import-mode=importlib",
        "-v",
        "-rsfE",
        "--tb=native",  # a bug's whole traceback, for its log
        "--no-header",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    ]
    for warning in ignore_warnings:
        args += ["-W", warning]
    if junitxml is not None:
        args += [f"--junitxml={junitxml.absolute()}", "-o", f"junit_suite_name={suite}"]
    # The environment as it was comes back afterwards (patch.dict restores every key it saw changed).
    # Plugins installed beside the command (anyio, hypothesis, ...) have no place in its checks.
    shown = io.StringIO()
    with quiet_transformers(), mock.patch.dict(os.environ, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        os.environ.pop("PYTEST_ADDOPTS", None)
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(shown):
            exit_code = pytest.main(args, plugins=[plugin, session_fixtures])
    result = SessionResult(int(exit_code), list(plugin.outcomes.values()), plugin.notes, plugin.divergence)
    result.settings = plugin.settings
    result.fields, result.compared = plugin.fields, plugin.compared
    result.output = shown.getvalue()
    return result
