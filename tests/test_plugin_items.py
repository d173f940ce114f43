"""The plugin's own logic, in this process (pytester), with a stand-in for the command's run: manifests that cannot
be read, entries in the manifest's terms, every outcome a check can have and how pytest and JUnit report it,
what each entry is held to (the original, its golden record, both), the recording item, the summary, pytest-xdist's
default. ``tests/test_plugin.py`` runs whole verifications; ``tests/test_golden_gate.py`` whole gates.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from converters import cli, registry
from converters.cli import checks_modules
from converters.outcomes import Outcome, SessionResult
from converters.plugin import ORIGINAL, RECORD, RECORDING
from converters.registry import get
from converters.session import GOLDEN_CHECKS, check_names
from fixtures.pytest_runs import junit_cases, junit_properties

FULL = check_names(checks_modules(get("ast")), "verify")
GATED = check_names([GOLDEN_CHECKS], "verify")


@dataclass
class Script:
    """What the stand-in run finds for an entry."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by check; the others passed
    refused: str = ""  # the command's refusal, before any check ran
    after: str = ""  # the command's refusal after its checks passed (a record of another original, say)
    recorded: str = ""
    has_original: bool = True
    warn: str = ""  # a warning the run emits


SCRIPTS: dict[str, Script] = {}
SEEN: dict[str, dict[str, Any]] = {}  # each entry's options, as the plugin handed them to the run


class StandIn:
    """``converters.cli.Run`` as the plugin uses it."""

    def __init__(self, converter: Any, options: dict[str, Any], argv: list[str]) -> None:
        self.options, self.converter = options, converter
        self.script = SCRIPTS.get(options["entry"], Script())
        self.result: Any = None
        self.results: list[SessionResult] = []
        self.code, self.message, self.recorded = cli.REFUSED, "", ""

    def has_original(self) -> bool:
        return self.script.has_original and not self.options.get("golden_only")

    def convert(self) -> None:
        SEEN[self.options["entry"]] = dict(self.options)
        script = self.script
        if script.warn:
            warnings.warn(script.warn, UserWarning, stacklevel=1)
        if script.refused:
            self.message = f"{self.converter.command}: error: {script.refused}; nothing was written"
            return
        full, gate = self.modes()
        for names, held in ((FULL, full), (GATED, gate)):
            if held:
                outcomes = [script.outcomes.get(name, Outcome(name, "passed")) for name in names]
                self.results.append(SessionResult(0, outcomes))
        self.result = self.results[-1] if self.results else None
        if script.after:
            self.message = f"{self.converter.command}: error: {script.after}; nothing was written"
            return
        self.code, self.recorded = cli.WRITTEN, script.recorded
        self.message = "done"

    def modes(self) -> tuple[bool, bool]:
        golden = self.options.get("golden")
        if self.options.get("record"):
            return True, False
        if self.options.get("golden_only"):
            return False, True
        gate = golden is not None and Path(golden).is_file()
        return self.has_original() or not gate, gate


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cli, "Run", StandIn)
    SCRIPTS.clear()
    SEEN.clear()
    yield


ENTRY = 'name = "{name}"\nformat = "ast"\ncheckpoint = "original.pth"\nmodel = "converted"\n'


def manifest(pytester: pytest.Pytester, *tables: str) -> Path:
    path = pytester.path / "conversions.toml"
    path.write_text("\n".join(f"[[conversion]]\n{table}" for table in tables))
    (pytester.path / "converted").mkdir(exist_ok=True)
    return path


def entry(name: str, extra: str = "") -> str:
    return ENTRY.format(name=name) + extra


def run(pytester: pytest.Pytester, *arguments: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--conversions", "conversions.toml",
                                        "--junitxml", "out.xml", *arguments)  # fmt: skip


def cases(pytester: pytest.Pytester, name: str) -> dict[str, str]:
    found = junit_cases(pytester.path / "out.xml")
    return {check: outcome for (where, check), outcome in found.items() if where == f"conversions.toml.{name}"}


def properties(pytester: pytest.Pytester, name: str, check: str) -> dict[str, str]:
    return junit_properties(pytester.path / "out.xml")[(f"conversions.toml.{name}", check)]


# -- the manifest ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[[conversion]\nname = 1", "conversions.toml: not a readable TOML manifest: "),
        ('title = "mine"\n', "conversions.toml lists no [[conversion]] entries"),
        ("conversion = 3\n", "conversions.toml lists no [[conversion]] entries"),
        (
            "".join(f"[[conversion]]\n{entry(name)}" for name in ("a", "b", "c", "b", "a")),
            "conversions.toml: entry names must be unique; repeated: a, b",
        ),
    ],
)
def test_a_manifest_that_cannot_be_read_is_one_failing_item(pytester: pytest.Pytester, text: str, said: str) -> None:
    (pytester.path / "conversions.toml").write_text(text)
    result = run(pytester)
    assert result.ret == 1 and cases(pytester, "") == {} and said in result.stdout.str()
    assert "FAILED conversions.toml::manifest" in result.stdout.str()


def test_a_manifest_named_but_not_there_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--conversions", "missing.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--conversions missing.toml: no such file" in result.stderr.str()


def test_the_manifest_is_collected_once_when_it_is_also_an_argument(pytester: pytest.Pytester) -> None:
    manifest(pytester, entry("a"))
    result = run(pytester, "conversions.toml", "--collect-only", "-q")
    collected = [line for line in result.stdout.lines if line.startswith("conversions.toml::")]
    assert collected == [f"conversions.toml::a::{check}" for check in FULL]


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('name = "a"\nformat = "ast"\n', "conversions.toml entry 1 (a) lacks model"),
        ('format = "ast"\nmodel = "m"\n', "conversions.toml entry 1 (entry 1) lacks name"),
        (
            'name = "a"\nformat = "astt"\nmodel = "m"\n',
            f"format 'astt' is no registered converter; registered: {', '.join(registry.names())}",
        ),
        (
            entry("a", "colour = 3\n"),
            "conversions.toml entry 1 (a): unknown keys colour; ast takes audio_length, checkpoint, dataset_mean, "
            "dataset_std, format, fstride, golden, label_csv, model, model_name, n_class, name, num_mel_bins, pooling, "
            "recipe, revision, sample_audio, tstride",
        ),
        (
            'name = "a"\nformat = "s3prl"\nmodel = "m"\ncheckpoint = "c"\n',
            "conversions.toml entry 1 (a) lacks base_model",
        ),
        (
            'name = "a"\nformat = "s3prl"\nmodel = "m"\n',
            "conversions.toml entry 1 (a) lacks base_model, checkpoint",
        ),
    ],
)
def test_an_entry_that_cannot_be_read_fails_alone_naming_itself(
    pytester: pytest.Pytester, table: str, said: str
) -> None:
    manifest(pytester, table, entry("fine"))
    result = run(pytester)
    assert said in result.stdout.str()
    name = "a" if 'name = "a"' in table else "entry 1"
    assert cases(pytester, name) == {"entry": "failed"}
    assert set(cases(pytester, "fine").values()) == {"passed"}


def test_an_entry_table_that_is_not_a_table_fails_alone(pytester: pytest.Pytester) -> None:
    (pytester.path / "conversions.toml").write_text("conversion = [3, 4]\n")
    result = run(pytester)
    assert "conversions.toml entry 1 (entry 1) is not a table" in result.stdout.str()


def test_an_entrys_keys_become_the_runs_options(pytester: pytest.Pytester) -> None:
    """Paths relative to the manifest, a model that is no path left as a hub name, the record's path, the revision,
    the modes, and the entry's own name."""
    (pytester.path / "goldens").mkdir()
    manifest(
        pytester,
        entry("local", 'golden = "goldens/local.json"\nmodel_name = "ast-finetuned-audioset-10-10-0.4593"\n'),
        'name = "hub"\nformat = "ast"\ncheckpoint = "original.pth"\nmodel = "MIT/ast"\nrevision = "v2"\n',
    )
    run(pytester, "--conversions-record")
    local, hub = SEEN["local"], SEEN["hub"]
    assert local["verify"] == str(pytester.path / "converted") and hub["verify"] == "MIT/ast"
    assert local["checkpoint_path"] == pytester.path / "original.pth"
    assert local["model_name"] == "ast-finetuned-audioset-10-10-0.4593" and local["revision"] is None
    assert local["golden"] == pytester.path / "goldens" / "local.json" and hub["golden"] is None
    assert local["record"] is True and hub["record"] is False  # only an entry with a record's path records
    assert hub["revision"] == "v2" and local["entry"] == "local" and local["golden_only"] is False


# -- each check's outcome, as pytest and JUnit report it ------------------------------------------------------------


def test_each_outcome_is_reported_as_the_entrys_session_found_it(pytester: pytest.Pytester) -> None:
    measured, failing, skipped, not_run, broken = FULL[0], FULL[1], FULL[2], FULL[3], FULL[4]
    SCRIPTS["a"] = Script({
        measured: Outcome(measured, "passed", difference=1.234567891e-5, tolerance=1e-4),
        failing: Outcome(failing, "failed", "the cause, in one line", details="the locator's table"),
        skipped: Outcome(skipped, "skipped", "no sample audio"),
        not_run: Outcome(not_run, "not run", "needs test_x"),
        broken: Outcome(broken, "internal error", "KeyError: 'x'", details="Traceback ..."),
    })  # fmt: skip
    manifest(pytester, entry("a"))
    result = run(pytester, "-rA")
    found = cases(pytester, "a")
    assert [found[c] for c in (measured, failing, skipped, not_run, broken)] == [
        "passed", "failed", "skipped", "skipped", "failed"]  # fmt: skip
    assert set(found[c] for c in FULL[5:]) == {"passed"}
    text = result.stdout.str()
    assert "the cause, in one line\nthe locator's table" in text
    assert "internal error: KeyError: 'x'\nTraceback ..." in text
    assert "no sample audio" in text and "not run (needs test_x)" in text
    assert f"a: {failing}" in text  # the item's location: the entry and the check
    shown = properties(pytester, "a", measured)
    assert shown == {"against": ORIGINAL, "largest_difference": "1.23457e-05", "tolerance": "0.0001"}
    assert properties(pytester, "a", failing) == {"against": ORIGINAL}


def test_an_entry_refused_before_its_checks_fails_once_in_the_manifests_terms(pytester: pytest.Pytester) -> None:
    SCRIPTS["a"] = Script(refused="--verify 'converted' is neither a local directory nor a hub name (ORG/NAME)")
    SCRIPTS["b"] = Script(refused="--checkpoint_path original.pth: no such file")
    # argparse's "prog: error: " is cut once: a path of the user's may hold the same words
    SCRIPTS["c"] = Script(refused="--checkpoint_path 'run: error: 2.pth': no such file")
    manifest(pytester, entry("a"), entry("b"), entry("c"))
    result = run(pytester)
    text = result.stdout.str()
    assert text.count("entry 'a': model 'converted' is neither a local directory nor a hub name (ORG/NAME)") == 1
    assert "entry 'b': checkpoint original.pth: no such file" in text and "nothing was written" not in text
    assert "entry 'c': checkpoint 'run: error: 2.pth': no such file" in text
    found = cases(pytester, "a")
    assert list(found.values()) == ["failed"] + ["skipped"] * (len(FULL) - 1)
    assert f"not run (the entry was refused: see {FULL[0]})" in run(pytester, "-rs").stdout.str()


def test_a_check_the_session_did_not_reach_fails_naming_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreached(StandIn):
        def convert(self) -> None:
            super().convert()
            self.results[0].outcomes.pop()

    monkeypatch.setattr(cli, "Run", Unreached)
    manifest(pytester, entry("a"))
    result = run(pytester)
    assert f"{FULL[-1]} was not reached: entry 'a': done" in result.stdout.str()


def test_the_converters_own_warnings_stay_out_of_the_users_run(pytester: pytest.Pytester) -> None:
    """The AST converter ignores the mel bank's warning in its own session; the user's run does too, and still
    shows any other."""
    SCRIPTS["a"] = Script(warn="At least one mel filter has all zero values, as always")
    SCRIPTS["b"] = Script(warn="something else")
    manifest(pytester, entry("a"), entry("b"))
    text = run(pytester).stdout.str()
    assert "mel filter" not in text and "something else" in text


# -- what each entry is held to -------------------------------------------------------------------------------------


def record(pytester: pytest.Pytester, name: str, made: str = "2026-12-01T00:00:00+00:00") -> str:
    (pytester.path / "goldens").mkdir(exist_ok=True)
    (pytester.path / "goldens" / f"{name}.json").write_text(json.dumps({"version": 1, "made": made}))
    return f'golden = "goldens/{name}.json"\n'


def collected(pytester: pytest.Pytester, *arguments: str) -> list[str]:
    result = run(pytester, "--collect-only", "-q", *arguments)
    return [line.split("::", 1)[1] for line in result.stdout.lines if line.startswith("conversions.toml::")]


def test_an_entry_is_held_to_what_the_run_has_of_it(pytester: pytest.Pytester) -> None:
    SCRIPTS["gated"] = Script(has_original=False)
    manifest(pytester, entry("both", record(pytester, "both")), entry("gated", record(pytester, "gated")),
             entry("plain"), entry("unrecorded", 'golden = "goldens/none.json"\n'))  # fmt: skip
    assert collected(pytester) == (
        [f"both::{c}" for c in FULL + GATED] + [f"gated::{c}" for c in GATED] + [f"plain::{c}" for c in FULL]
        + [f"unrecorded::{c}" for c in FULL]
    )  # fmt: skip
    only = collected(pytester, "--conversions-golden-only")
    assert only[: 2 * len(GATED)] == [f"{e}::{c}" for e in ("both", "gated") for c in GATED]
    assert "plain::entry" in only  # golden-only, and no record to hold it to
    recording = collected(pytester, "--conversions-record")
    assert recording == (
        [f"both::{c}" for c in [*FULL, RECORDING]] + [f"gated::{c}" for c in [*FULL, RECORDING]]
        + [f"plain::{c}" for c in FULL] + [f"unrecorded::{c}" for c in [*FULL, RECORDING]]
    )  # fmt: skip


def test_the_summary_says_what_each_entry_was_held_to_and_when_its_record_was_made(
    pytester: pytest.Pytester,
) -> None:
    SCRIPTS["gated"] = Script(has_original=False)
    manifest(pytester, entry("both", record(pytester, "both", "2026-11-30T10:00:00+00:00")),
             entry("gated", record(pytester, "gated")), entry("plain"))  # fmt: skip
    result = run(pytester)
    assert result.ret == 0
    section = result.stdout.str().split("= conversions =")[1].splitlines()[1:4]
    assert section == [
        f"conversions.toml::both: checked against {ORIGINAL} and {RECORD} (record made 2026-11-30T10:00:00+00:00)",
        f"conversions.toml::gated: checked against {RECORD} (record made 2026-12-01T00:00:00+00:00)",
        f"conversions.toml::plain: checked against {ORIGINAL}",
    ]
    gated = properties(pytester, "gated", GATED[0])
    assert gated == {"against": RECORD, "record_made": "record made 2026-12-01T00:00:00+00:00"}


def test_the_summary_lists_the_entries_and_not_the_users_own_tests(pytester: pytest.Pytester) -> None:
    manifest(pytester, entry("a"))
    own = "def test_own(record_property):\n    record_property('mine', 1)\n"  # a property of its own: not an entry's
    pytester.makepyfile(test_own=own)
    result = run(pytester)
    assert result.ret == 0
    section = result.stdout.str().split("= conversions =")[1].splitlines()[1:]
    assert section[0] == f"conversions.toml::a: checked against {ORIGINAL}"
    assert not any("test_own" in line for line in section)


def test_an_entrys_marks_are_known_to_a_strict_run_without_pytest_xdist(pytester: pytest.Pytester) -> None:
    """Each check carries ``xdist_group`` (and ``check``) marks; a ``--strict-markers`` run without pytest-xdist,
    which would register the first, must not refuse them."""
    manifest(pytester, entry("a"))
    result = run(pytester, "--strict-markers", "-p", "no:xdist")
    assert result.ret == 0, result.stdout.str()[-2000:]
    shown = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist", "--conversions",
                                         "conversions.toml", "--markers").stdout.str()  # fmt: skip
    assert "@pytest.mark.xdist_group(name): the items pytest-xdist keeps on one worker" in shown


def test_a_record_that_cannot_be_read_is_said_where_its_date_would_be(pytester: pytest.Pytester) -> None:
    SCRIPTS["a"] = Script(has_original=False)
    manifest(pytester, entry("a", record(pytester, "a")))
    (pytester.path / "goldens" / "a.json").write_text("{")
    run(pytester)
    assert "cannot be read" in properties(pytester, "a", GATED[0])["record_made"]


def test_gate_checks_are_not_run_when_the_entry_failed_before_its_record_was_read(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Failed(StandIn):
        def convert(self) -> None:
            super().convert()
            self.results.pop()  # the gate's session never ran
            self.message = "the verification failed"

    monkeypatch.setattr(cli, "Run", Failed)
    manifest(pytester, entry("a", record(pytester, "a")))
    run(pytester)
    found = cases(pytester, "a")
    assert {found[c] for c in GATED} == {"skipped"}


@pytest.mark.parametrize(
    ("script", "outcome", "said"),
    [
        (Script(recorded="recorded goldens/a.json: new"), "passed", "  recorded goldens/a.json: new"),
        (Script(outcomes={FULL[1]: Outcome(FULL[1], "failed", "no")}), "skipped", "not recorded: the verification"),
        (Script(after="record goldens/a.json was made from another original"), "failed", "another original"),
    ],
)
def test_the_recording_item_says_whether_the_record_was_written(
    pytester: pytest.Pytester, script: Script, outcome: str, said: str
) -> None:
    SCRIPTS["a"] = script
    manifest(pytester, entry("a", 'golden = "goldens/a.json"\n'))
    result = run(pytester, "--conversions-record", "-rs")
    assert cases(pytester, "a")[RECORDING] == outcome
    assert said in result.stdout.str()


# -- pytest-xdist ---------------------------------------------------------------------------------------------------


class Configured:
    """Stops the run once every plugin configured it (before pytest-xdist starts a worker), keeping the config."""

    config: pytest.Config | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        raise pytest.UsageError("configured")


def configured(pytester: pytest.Pytester, *arguments: str) -> pytest.Config:
    seen = Configured()
    pytester.runpytest_inprocess("-p", "no:cacheprovider", *arguments, plugins=[seen])
    assert seen.config is not None
    return seen.config


@pytest.mark.parametrize(
    ("arguments", "dist"),
    [(("-n", "2"), "loadscope"), (("-n", "2", "--dist", "load"), "load"), (("-n", "2", "--dist=loadfile"), "loadfile"),
     (("-n", "2", "-d"), "load"), ((), "no")],
)  # fmt: skip
def test_xdist_keeps_an_entrys_checks_on_one_worker_unless_told_otherwise(
    pytester: pytest.Pytester, arguments: tuple[str, ...], dist: str
) -> None:
    manifest(pytester, entry("a"))
    assert configured(pytester, "--conversions", "conversions.toml", *arguments).option.dist == dist


def test_without_conversions_the_plugin_adds_nothing(pytester: pytest.Pytester) -> None:
    config = configured(pytester, "-n", "2")
    assert config.option.dist == "load" and "conversions.toml" not in " ".join(config.args)


def test_the_help_shows_the_plugins_options_in_a_group_of_its_own(pytester: pytest.Pytester) -> None:
    shown = " ".join(pytester.runpytest_inprocess("-p", "no:cacheprovider", "--help").stdout.str().split())
    assert "verifying converted checkpoints (audio-checkpoint-converters): --conversions=MANIFEST" in shown
    assert "--conversions-record" in shown and "--conversions-golden-only" in shown
    for said in (
        "verify each converted directory a TOML manifest lists against its original checkpoint",
        "write each entry's golden record (its `golden` key) once its verification against the original passed",
        "hold each entry with a golden record to its record alone: no original, no reference implementation",
    ):
        assert said in shown


def test_a_refused_entrys_failure_says_its_cause_and_nothing_else(pytester: pytest.Pytester) -> None:
    SCRIPTS["a"] = Script(refused="--checkpoint_path original.pth: no such file")
    manifest(pytester, entry("a"))
    run(pytester)
    from xml.etree import ElementTree

    (first,) = [case for case in ElementTree.parse(pytester.path / "out.xml").iter("testcase")
                if case.get("name") == FULL[0]]  # fmt: skip
    failure = first.find("failure")
    assert failure is not None and (failure.text or "").strip() == "entry 'a': checkpoint original.pth: no such file"
