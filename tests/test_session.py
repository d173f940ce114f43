"""The checks' pytest session: what it records of each check, when it passes, and what it keeps out.

Each test runs a small checks module of its own through ``run_checks``, as the commands run theirs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from converters.outcomes import Outcome, SessionResult, one_line
from converters.session import ConversionPlugin, run_checks
from converters.session_fixtures import PLUGIN, require


def checks_module(tmp_path: Path, request: pytest.FixtureRequest, text: str) -> Path:
    # A name of its own: pytest's importlib mode caches a module by its name relative to the rootdir.
    path = tmp_path / ("checks_" + re.sub(r"\W", "_", request.node.name) + ".py")
    path.write_text(text)
    return path


def test_the_report_table_aligns_each_check_and_says_each_reason_once_beneath_it() -> None:
    """The first failure's cause is the result line's; every other reason is numbered under the table, once."""
    result = SessionResult(1, [Outcome("test_logits", "passed", "", 1.23456e-05, 1e-4),
                               Outcome("test_published_slice", "skipped", "no --sample_audio given"),
                               Outcome("test_keys", "failed", "missing key 'x'"),
                               Outcome("test_shapes", "failed", "x has shape (2,)"),
                               Outcome("test_written", "not run", "needs test_keys"),
                               Outcome("test_reloaded", "not run", "needs test_keys")])  # fmt: skip
    assert result.table() == "\n".join([
        "check                 result       difference  tolerance",
        "--------------------  -----------  ----------  ---------",
        "test_logits           passed       1.23e-05    1e-04",
        "test_published_slice  skipped [1]",
        "test_keys             failed",
        "test_shapes           failed [2]",
        "test_written          not run [3]",
        "test_reloaded         not run [3]",
        "",
        "[1] no --sample_audio given",
        "[2] x has shape (2,)",
        "[3] needs test_keys",
    ])  # fmt: skip
    assert result.cause == "check test_keys failed: missing key 'x'"


OUTCOMES = """
import pytest
from converters.errors import ConversionError

@pytest.fixture
def breaks_on_teardown():
    yield
    raise ConversionError("teardown broke")

@pytest.fixture
def refuses():
    raise ConversionError("fixture refused")

def test_measured(conversion, measure):
    assert conversion == "the conversion"
    measure(1.5e-05, 1e-04)

def test_passes_then_teardown_fails(breaks_on_teardown):
    pass

def test_fails_then_teardown_fails(breaks_on_teardown):
    raise ConversionError("first problem")

def test_setup_error(refuses):
    pass

def test_skipped():
    pytest.skip("nothing to compare")

def test_assertion():
    assert 1 == 2, "differs"
"""


def test_each_checks_outcome_is_recorded_with_its_first_one_line_cause(
    tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_checks(checks_module(tmp_path, request, OUTCOMES), "the conversion")
    assert [(o.check, o.result, o.cause, o.difference, o.tolerance) for o in result.outcomes] == [
        ("test_measured", "passed", "", 1.5e-05, 1e-04),
        ("test_passes_then_teardown_fails", "failed", "teardown broke", None, None),
        ("test_fails_then_teardown_fails", "failed", "first problem", None, None),  # the first problem is kept
        ("test_setup_error", "failed", "fixture refused", None, None),
        ("test_skipped", "skipped", "nothing to compare", None, None),
        ("test_assertion", "failed", "differs", None, None),
    ]
    # beyond a one-line cause there is nothing to show beneath the table; pytest's explanation is kept
    assert [o.details for o in result.outcomes] == ["", "", "", "", "", "assert 1 == 2"]
    assert (result.exit_code, result.passed) == (1, False)
    assert result.cause == "check test_passes_then_teardown_fails failed: teardown broke"
    assert re.search(r"^ERROR \S+::test_setup_error\b", capsys.readouterr().out, re.MULTILINE)  # errors summarised
    assert one_line(" \n ") == ""


def test_a_checks_module_that_cannot_be_imported_is_one_error_naming_the_missing_module(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What a missing dependency of the checks (timm, s3prl) looks like to the user."""
    checks = checks_module(tmp_path, request, "import no_such_module_for_checks\n")
    result = run_checks(checks, object())
    assert [(o.check, o.result, o.cause) for o in result.outcomes] == [
        (f"collecting {checks.name}", "internal error",
         "ModuleNotFoundError: No module named 'no_such_module_for_checks'")
    ]  # fmt: skip
    # pytest writes the path relative to the working directory where that is shorter: the file's name and line
    assert f"{checks.name}:1: in <module>\n    import no_such_module_for_checks\n" in result.outcomes[0].details
    assert (result.exit_code, result.passed) == (2, False)


@pytest.mark.parametrize(
    ("text", "exit_code"),
    [("import pytest\ndef test_s(): pytest.skip('nothing to check')\n", 0),
     ("import pytest\ndef test_a(): pass\ndef test_b(): pytest.exit('stopped')\n", 2)],
    ids=["all-skipped", "interrupted"],
)  # fmt: skip
def test_a_session_passes_only_if_pytest_exited_cleanly_and_a_check_passed(
    tmp_path: Path, request: pytest.FixtureRequest, text: str, exit_code: int
) -> None:
    result = run_checks(checks_module(tmp_path, request, text), object())
    assert (result.exit_code, result.passed) == (exit_code, False)
    assert result.cause == f"the check session ended with pytest exit code {exit_code}"


def test_the_checks_session_ignores_the_callers_plugins_and_addopts(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plugins installed beside the command, and options meant for the caller's own pytest, stay out."""
    text = "def test_isolated(request):\n    assert request.config.pluginmanager.list_plugin_distinfo() == []\n"
    monkeypatch.setenv("PYTEST_ADDOPTS", "--no-such-option")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    result = run_checks(checks_module(tmp_path, request, text), object())
    assert [(o.check, o.result) for o in result.outcomes] == [("test_isolated", "passed")] and result.passed
    assert os.environ["PYTEST_ADDOPTS"] == "--no-such-option"  # the caller's environment comes back as it was
    assert "PYTEST_DISABLE_PLUGIN_AUTOLOAD" not in os.environ


DEPENDENCIES = """
import pytest
from converters.errors import ConversionError

@pytest.fixture(scope="session")
def refused():
    raise ConversionError("the source is refused")

@pytest.mark.check(order=30)
def test_later_uses_it(refused):
    pass

@pytest.mark.check(order=10)
def test_first_uses_it(refused):
    pass

@pytest.mark.check(order=20, needs=("test_first_uses_it",))
def test_needs_the_first():
    pass

@pytest.mark.check(order=40)
def test_a_bug():
    raise RuntimeError("index out of range")

@pytest.mark.check(order=50)
def test_independent():
    pass
"""


def test_a_check_that_cannot_run_says_which_check_it_needs_and_a_bug_is_no_refusal(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Ordered by the check marker; a failed session fixture is the first check's failure and the others'
    ``not run``; a check whose needed check failed is not run; an exception that is no refusal and no measured
    difference is an internal error."""
    result = run_checks(checks_module(tmp_path, request, DEPENDENCIES), object())
    assert [(o.check, o.result, o.cause) for o in result.outcomes] == [
        ("test_first_uses_it", "failed", "the source is refused"),
        ("test_needs_the_first", "not run", "needs test_first_uses_it"),
        ("test_later_uses_it", "not run", "needs test_first_uses_it"),
        ("test_a_bug", "internal error", "RuntimeError: index out of range"),
        ("test_independent", "passed", ""),
    ]
    assert result.internal is not None and result.internal.check == "test_a_bug"
    assert "Traceback" in result.internal.details or "raise RuntimeError" in result.internal.details
    assert result.cause == "check test_first_uses_it failed: the source is refused"


ORDERED = """
import pytest

@pytest.mark.check(order=60)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the marker nearest the check: not its place
def test_late():
    pass

def test_unmarked():
    pass

@pytest.mark.check(order=50)
def test_at_fifty():
    pass

@pytest.mark.check(mode="convert")
def test_marked_without_an_order():
    pass

@pytest.mark.check(order=20, mode="verify")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_of_a_directory_verified():
    pass

@pytest.mark.check(order=10)
def test_first():
    pass
"""


def test_checks_run_in_their_markers_order_an_unmarked_one_at_fifty_and_progress_is_told_each_as_it_starts(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from converters.session import check_names

    checks = checks_module(tmp_path, request, ORDERED)
    told: list[str] = []
    result = run_checks(checks, object(), progress=told.append, verbose=False)
    # at 50 without an order, in definition order within an order
    run = ["test_first", "test_unmarked", "test_at_fifty", "test_marked_without_an_order", "test_late"]
    assert [o.check for o in result.outcomes] == run == check_names([checks], "convert")
    assert told == [f"checking {i}/5: {name}" for i, name in enumerate(run, 1)] + [""]
    assert check_names([checks], "verify") == ["test_first", "test_of_a_directory_verified", "test_unmarked",
                                               "test_at_fifty", "test_late"]  # fmt: skip
    assert result.divergence is None  # no comparison ran: nothing located


def test_a_check_in_a_class_is_named_by_its_own_name(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    told: list[str] = []
    text = "class TestGroup:\n    def test_in_a_class(self):\n        pass\n"
    result = run_checks(checks_module(tmp_path, request, text), object(), progress=told.append, verbose=False)
    assert [o.check for o in result.outcomes] == ["test_in_a_class"]
    assert told == ["checking 1/1: test_in_a_class", ""]


def test_a_failures_text_beyond_its_cause_line_is_kept_as_its_details_indentation_and_all(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    text = "def test_outputs():\n    raise AssertionError('they differ\\n   stage  difference\\n   logits 0.5\\n')\n"
    result = run_checks(checks_module(tmp_path, request, text), object(), verbose=False)
    ((check, outcome, cause, details),) = [(o.check, o.result, o.cause, o.details) for o in result.outcomes]
    assert (check, outcome, cause) == ("test_outputs", "failed", "they differ")
    assert details == "   stage  difference\n   logits 0.5"


class Stash:
    def __init__(self, plugin: ConversionPlugin) -> None:
        self.config = type("Config", (), {"stash": {PLUGIN: plugin}})()


@pytest.mark.parametrize(("order", "stops"), [(49.0, True), (50.0, False), (51.0, False)])
def test_a_stage_stops_only_for_a_check_before_it_that_did_not_pass(order: float, stops: bool) -> None:
    plugin = ConversionPlugin(object())
    plugin.order = {"test_earlier": 10.0, "test_refused": order}
    plugin.outcomes = {"test_earlier": Outcome("test_earlier", "passed"),
                       "test_refused": Outcome("test_refused", "failed", "refused")}  # fmt: skip
    try:  # the stop is a skip: uncaught here, it would skip this test rather than fail it
        require(Stash(plugin), 50)  # type: ignore[arg-type]
        stopped = None
    except pytest.skip.Exception as error:
        stopped = error.msg
    assert stopped == ("needs test_refused" if stops else None)
