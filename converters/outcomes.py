"""What a check session found: each check's outcome (its result, its one-line cause, the difference it measured)
and the session's result, as the command's table, report and JUnit say them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASSED, FAILED, SKIPPED, NOT_RUN, INTERNAL = "passed", "failed", "skipped", "not run", "internal error"


@dataclass
class Outcome:
    check: str
    result: str  # passed, failed, skipped, not run, internal error
    cause: str = ""  # failed: why; skipped: the reason; not run: the check it needs; internal error: the error
    difference: float | None = None
    tolerance: float | None = None
    details: str = ""  # a failure's whole text beyond its cause line (a locator's table); a bug's traceback


@dataclass
class SessionResult:
    exit_code: int
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the checks say beside their results
    divergence: Any = None  # the locator's stages, where the comparison located them
    settings: list[Any] = field(default_factory=list)  # JSON fields that differ from the original's (a fix)
    output: str = ""  # pytest's own report of the session (shown with --verbose; kept for a bug's log)
    fields: dict[str, Any] = field(default_factory=dict)  # the function's fields, per file (what a record holds)
    compared: dict[str, tuple[float, float]] = field(default_factory=dict)  # each output: difference, tolerance

    @property
    def internal(self) -> Outcome | None:
        """The first internal error: the session could not judge the conversion."""
        return next((o for o in self.outcomes if o.result == INTERNAL), None)

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and any(o.result == PASSED for o in self.outcomes)
            and all(o.result in (PASSED, SKIPPED) for o in self.outcomes)
        )

    @property
    def failure(self) -> Outcome | None:
        """The first check that failed or broke: the one the result line names."""
        return next((o for o in self.outcomes if o.result in (FAILED, INTERNAL)), None)

    @property
    def cause(self) -> str:
        """The first failing check's one-line cause, or why the session did not pass."""
        failure = self.failure
        if failure is not None:
            return f"check {failure.check} failed: {failure.cause}"
        return f"the check session ended with pytest exit code {self.exit_code}"

    def rows(self) -> list[Any]:
        from converters.report import Row

        return [Row(o.check, o.result, o.cause, o.difference, o.tolerance) for o in self.outcomes]

    def table(self) -> str:
        """The checks, each cause said once: the first failure's is the result line's, the others numbered."""
        from converters.report import checks_table

        failure = self.failure
        return checks_table(self.rows(), said_below=failure.check if failure is not None else None)


def one_line(longrepr: Any) -> str:
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    elif isinstance(longrepr, tuple):  # skips: (file, line, reason)
        text = str(longrepr[-1]).removeprefix("Skipped: ")
    else:  # a collection error: pytest's report, its cause on the last line after an "E" marker
        text = "\n".join(line.removeprefix("E ") for line in str(longrepr).splitlines())
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if crash is not None and lines:
        cause = next((line for line in lines if not line.endswith(":")), lines[-1])
        # a check's own failure says what differs; its exception type adds nothing to read
        return cause.removeprefix("Failed: ").removeprefix("AssertionError: ")
    return lines[-1] if lines else ""
