"""A conversion runs as a pytest session whose tests are its checks.

The command hands its inputs to the checks through a plugin (the ``conversion`` fixture), pytest prints
its own report, and the plugin collects each check's outcome, its one-line cause and the differences
it measured. The command publishes its output only if every check passed (skips aside).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from converters.errors import ConversionError


@dataclass
class Outcome:
    check: str
    result: str  # passed, failed, error, skipped
    cause: str = ""
    difference: float | None = None
    tolerance: float | None = None


@dataclass
class SessionResult:
    exit_code: int
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the checks say beside their results

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and any(o.result == "passed" for o in self.outcomes)
            and all(o.result in ("passed", "skipped") for o in self.outcomes)
        )

    @property
    def cause(self) -> str:
        """The first failing check's one-line cause, or why the session did not pass."""
        for outcome in self.outcomes:
            if outcome.result in ("failed", "error"):
                return f"check {outcome.check} failed: {outcome.cause}"
        return f"the check session ended with pytest exit code {self.exit_code}"

    def table(self) -> str:
        rows = [("check", "result", "largest difference", "tolerance")]
        for o in self.outcomes:
            rows.append(
                (
                    o.check,
                    o.result + (f" ({o.cause})" if o.result == "skipped" else ""),
                    "" if o.difference is None else f"{o.difference:.3g}",
                    "" if o.tolerance is None else f"{o.tolerance:.0e}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, [*widths, 0], strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in [*widths, len("tolerance")]))
        return "\n".join(lines)


def _one_line(longrepr: Any) -> str:
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    elif isinstance(longrepr, tuple):  # skips: (file, line, reason)
        text = str(longrepr[-1]).removeprefix("Skipped: ")
    else:  # a collection error: pytest's report, its cause on the last line after an "E" marker
        text = "\n".join(line.removeprefix("E ") for line in str(longrepr).splitlines())
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if crash is not None and lines else (lines[-1] if lines else "")


PLUGIN = pytest.StashKey["ConversionPlugin"]()


@pytest.fixture(scope="session")
def conversion(request: pytest.FixtureRequest) -> object:
    """The inputs of the conversion being checked (a dataclass of the command's)."""
    return request.config.stash[PLUGIN].conversion


@pytest.fixture(scope="session")
def notes(request: pytest.FixtureRequest) -> list[str]:
    """Lines a check adds to the report under the table (where a derived value came from, say)."""
    notes: list[str] = request.config.stash[PLUGIN].notes
    return notes


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Any:
    """``measure(difference, tolerance)`` records a check's largest difference for the report."""
    measured = request.config.stash[PLUGIN].measured

    def record(difference: float, tolerance: float) -> None:
        measured[request.node.name] = (float(difference), float(tolerance))
        request.node.user_properties += [("largest_difference", f"{difference:.6g}"), ("tolerance", f"{tolerance:g}")]

    return record


class ConversionPlugin:
    """Carries a conversion's inputs into its checks and records what they found."""

    def __init__(self, conversion: object) -> None:
        self.conversion = conversion
        self.outcomes: dict[str, Outcome] = {}
        self.measured: dict[str, tuple[float, float]] = {}
        self.notes: list[str] = []

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[PLUGIN] = self

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        # A refusal is an expected outcome with a cause, not a crash: show the cause, not a traceback.
        if call.excinfo is not None and call.excinfo.errisinstance(ConversionError):
            report.longrepr = str(call.excinfo.value)
        return report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # the checks module itself could not be imported (a missing dependency, say)
            self.outcomes[f"collecting {report.nodeid}"] = Outcome(
                f"collecting {report.nodeid}", "error", _one_line(report.longrepr)
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::")[-1]
        if report.when != "call" and report.passed:
            return
        result = report.outcome if report.when == "call" or report.skipped else "error"
        if name in self.outcomes and self.outcomes[name].result != "passed":
            return  # keep the first problem (a teardown error after a failure adds nothing)
        outcome = Outcome(name, result, "" if report.passed else _one_line(report.longrepr))
        if name in self.measured:
            outcome.difference, outcome.tolerance = self.measured[name]
        self.outcomes[name] = outcome


def run_checks(checks: Path, conversion: object, *, junitxml: Path | None = None) -> SessionResult:
    """Run the checks in ``checks`` (a test module) against ``conversion`` in a pytest session of its own.

    ``junitxml``: also write the results there (each check a test case, its measured difference and
    tolerance as properties).

    The session ignores the caller's pytest configuration (ini files, conftest.py, PYTEST_ADDOPTS):
    the checks must be the same wherever the command runs.
    """
    plugin = ConversionPlugin(conversion)
    args = [
        str(checks),
        "-c",
        os.devnull,
        "--rootdir",
        str(checks.parent),
        "--confcutdir",
        str(checks.parent),
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
        "--import-mode=importlib",
        "-v",
        "-rsfE",
        "--tb=short",
        "--no-header",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        # transformers' kaldi mel bank warns about an empty filter on every 128-bin extractor
        "-W",
        "ignore:At least one mel filter has all zero values:UserWarning",
    ]
    if junitxml is not None:
        args += [f"--junitxml={junitxml.absolute()}", "-o", "junit_suite_name=" + checks.parent.name + " conversion"]
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars would drown the report
    # The environment as it was comes back afterwards (patch.dict restores every key it saw changed).
    # Plugins installed beside the command (anyio, hypothesis, ...) have no place in its checks.
    with mock.patch.dict(os.environ, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        os.environ.pop("PYTEST_ADDOPTS", None)
        exit_code = pytest.main(args, plugins=[plugin, sys.modules[__name__]])
    return SessionResult(int(exit_code), list(plugin.outcomes.values()), plugin.notes)
