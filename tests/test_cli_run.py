"""One command run (``converters.cli.Run``) in this process, piece by piece: the report it writes for each way
a run ends, the refusals of ``--report`` and of a fixed copy, the status line on a terminal, files linked or
copied, and the exit code a console script ends with.

The sessions here are stand-ins (a result with rows, stages and notes; a ``session`` that records its
directory): what is under test is what the command does around a session, which the contract tests reach only
through whole conversions.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import pty
import re
import struct
import sys
import termios
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from converters import cli
from converters.cli import INTERNAL, REFUSED, WRITTEN, Run
from converters.contract import Conversion, Converter, Option, Role, Source
from converters.errors import ConversionError
from converters.locator import Divergence, StageDifference
from converters.report import Row, digest, schema
from converters.settings import Difference
from fixtures import commands
from fixtures.commands import assert_refused

OPTIONS = (
    Option("--checkpoint", "the source", role=Role.SOURCE, required=True),
    Option("--labels", "a file the conversion reads", role=Role.INPUT),
    Option("--name", "a value", role=Role.VALUE),
    Option("--base", "a model directory", role=Role.MODEL),
    Option("--out", "the output", role=Role.OUTPUT, required=True),
)


class Unreadable(Conversion):
    def read(self) -> Source:
        raise AssertionError("read ran: a refusal the command makes up front was not made first")


CONVERTER = Converter(name="run", command="convert-run-checkpoint", description="a converter for Run's tests",
                      options=OPTIONS, conversion=Unreadable, files=frozenset({"model.safetensors"}))  # fmt: skip


def options_of(**given: Any) -> dict[str, Any]:
    """Every dest argparse would set, ``given`` over its defaults."""
    defaults = {o.dest: None for o in OPTIONS} | {"overwrite": False, "push_to_hub": None, "junitxml": None,
                                                  "report": None, "verbose": False, "verify": None,
                                                  "fix_config": None}  # fmt: skip
    return defaults | given


@dataclass
class Session:
    """What ``Run.write_report`` reads of a session's result."""

    checks: list[Row] = field(default_factory=list)
    divergence: Any = None
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[Row]:
        return self.checks


def source_in(directory: Path) -> Path:
    """A source file that exists; the runs here end before reading it."""
    checkpoint = directory / "original.pt"
    checkpoint.write_bytes(b"not read")
    return checkpoint


def refusal(argv: list[str], output: Path) -> str:
    """The command's refusal (``fixtures.commands.assert_refused``: exit 1, no traceback, no staging left
    beside ``output``), its result line unwrapped: all it says on stderr."""
    result = commands.run_main(functools.partial(cli.run, CONVERTER), argv)
    last = assert_refused(result, output)
    assert " ".join(result.stderr.split()) == last
    return last


def report_of(directory: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    jsonschema.validate(document, schema())
    return document


# -- the report --------------------------------------------------------------------------------------------


ENDINGS = [
    # how the run was asked for, its exit code, what the report says, whether it names an output
    ("convert", WRITTEN, "written", True),
    ("convert", REFUSED, "refused", False),
    ("convert", INTERNAL, "internal error", False),
    ("verify", WRITTEN, "verified", False),
    ("verify", REFUSED, "not verified", False),
    ("verify", INTERNAL, "internal error", False),
    ("fix", WRITTEN, "written", True),
    ("fix", REFUSED, "refused", False),
]


@pytest.mark.parametrize(("mode", "code", "said", "named"), ENDINGS)
def test_the_report_says_how_the_run_ended_and_names_the_output_only_when_one_was_written(
    mode: str, code: int, said: str, named: bool, tmp_path: Path
) -> None:
    modes: dict[str, dict[str, Any]] = {
        "convert": {"out": tmp_path / "out"},
        "verify": {"verify": str(tmp_path / "written")},
        "fix": {"verify": str(tmp_path / "written"), "fix_config": tmp_path / "fixed"},
    }
    given = modes[mode]
    run = Run(CONVERTER, options_of(report=tmp_path / "report", **given), [])
    run.code, run.message = code, "the result line"
    run.write_report()
    document = report_of(tmp_path / "report")
    assert (document["result"], document["exit_code"], document["message"]) == (said, code, "the result line")
    assert (document["command"], document["converter"]) == ("convert-run-checkpoint", "run")
    target = {"convert": tmp_path / "out", "fix": tmp_path / "fixed"}.get(mode)
    assert document["output"] == (str(target) if named else None)
    # no session ran (refused up front): nothing from one
    assert (document["checks"], document["stages"], document["notes"]) == ([], [], [])
    assert run.notes == ["--report: no divergence.png: the comparison was not located stage by stage"]


def test_the_report_holds_the_sessions_checks_stages_and_notes_and_digests_every_input_file_that_exists(
    tmp_path: Path,
) -> None:
    checkpoint, labels = tmp_path / "original.pt", tmp_path / "labels.csv"
    checkpoint.write_bytes(b"the source")
    labels.write_text("index,name\n0,speech\n")
    out = tmp_path / "out"
    run = Run(CONVERTER, options_of(checkpoint=checkpoint, labels=labels, name="a-value", out=out,
                                    report=tmp_path / "report"), [])  # fmt: skip
    stages = (StageDifference("embeddings", 0.0, 1e-5), StageDifference("logits", 0.5, 1e-4))
    run.result = Session([Row("test_a_check", "failed", "it differs", 0.5, 1e-4)], Divergence(stages), ["a note"])
    run.write_report()
    document = report_of(tmp_path / "report")
    assert document["checks"] == [{"check": "test_a_check", "result": "failed", "cause": "it differs",
                                   "difference": 0.5, "tolerance": 1e-4}]  # fmt: skip
    assert [(s["stage"], s["first"]) for s in document["stages"]] == [("embeddings", False), ("logits", True)]
    assert document["notes"] == ["a note"]
    # the source and the input: neither the value nor the output (an input not on disk: not digested)
    assert document["inputs"] == [digest(checkpoint), digest(labels)]
    assert (tmp_path / "report" / "divergence.png").is_file() and run.notes == []

    labels.unlink()
    run.write_report()
    assert report_of(tmp_path / "report")["inputs"] == [digest(checkpoint)]


def test_a_report_that_cannot_be_written_is_a_note_and_the_run_ends_as_it_did(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    directory = tmp_path / "a-file" / "report"
    run = Run(CONVERTER, options_of(out=tmp_path / "out", report=directory), [])
    run.code, run.message = WRITTEN, "wrote it"
    run.write_report()
    assert run.notes == [f"--report: not a directory while writing into {directory}"]
    assert (run.code, run.message) == (WRITTEN, "wrote it")


@pytest.mark.parametrize(
    ("where", "cause"),
    [
        ("out", "inside the output directory, which is replaced as a whole"),
        ("out/report", "inside the output directory, which is replaced as a whole"),
        ("a-file", "exists and is not a directory"),
    ],
)
def test_a_report_directory_the_output_would_replace_is_refused_first_and_nothing_is_written_there(
    where: str, cause: str, tmp_path: Path
) -> None:
    checkpoint, out = tmp_path / "original.pt", tmp_path / "out"
    (tmp_path / "a-file").write_text("")
    directory = tmp_path / where
    # a missing --labels file would be refused too: the report's directory is judged first, as nothing is
    # reported into a directory that is refused
    argv = ["--checkpoint", str(checkpoint), "--labels", str(tmp_path / "missing.csv"), "--out", str(out),
            "--report", str(directory)]  # fmt: skip
    error = refusal(argv, out)
    assert error == f"convert-run-checkpoint: error: --report {directory}: {cause}; nothing was written"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# -- a fixed copy ------------------------------------------------------------------------------------------

CHANGES = [
    Difference("config.json", "layer_norm_eps", 1e-12, 1e-6),
    Difference("preprocessor_config.json", "sampling_rate", 8000, 16000),
]


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """A directory written before: its weights, and two JSON files with a field each set wrong."""
    directory = tmp_path / "written"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"the weights")
    (directory / "config.json").write_text(json.dumps({"layer_norm_eps": 1e-12, "hidden_size": 8}))
    (directory / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000}))
    return directory


class Fixing(Run):
    """A run whose session (of the fixed copy) records what it was given to verify."""

    def __init__(self, written: Path, fixed: Path, **given: Any) -> None:
        super().__init__(CONVERTER, options_of(verify=str(written), fix_config=fixed, **given), [])
        self.result = type("Verified", (), {"settings": CHANGES})()
        self.verified: list[tuple[Path, Path | None, dict[str, Any]]] = []

    def session(self, staging: Path, references: list[str], verify: Path | None = None) -> None:
        held = {path.name: json.loads(path.read_text()) for path in staging.glob("*.json")}
        self.verified.append((staging, verify, held))


def test_a_fixed_copy_sets_every_field_links_the_weights_and_is_verified_before_it_is_published(
    written: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = tmp_path / "fixed"
    run = Fixing(written, fixed)
    run.fix(written, [])
    ((staging, verified, held),) = run.verified
    assert verified == staging  # the copy is verified as a directory written before
    assert staging.parent == tmp_path and staging != fixed and not staging.exists()  # staged, then published
    assert held == {"config.json": {"layer_norm_eps": 1e-6, "hidden_size": 8},
                    "preprocessor_config.json": {"sampling_rate": 16000}}  # fmt: skip
    assert os.path.samefile(fixed / "model.safetensors", written / "model.safetensors")
    assert json.loads((written / "config.json").read_text())["layer_norm_eps"] == 1e-12  # the original untouched
    printed = capsys.readouterr().out
    assert ("verifying the fixed copy (layer_norm_eps 1e-12, the original computes with 1e-06; "
            "preprocessor_config.json sampling_rate 8000, the original computes with 16000):") in printed  # fmt: skip
    assert run.code == WRITTEN
    assert run.message == (f"convert-run-checkpoint: wrote {fixed}: {written} with layer_norm_eps, sampling_rate set "
                           "as the original computes; verified")  # fmt: skip


def test_a_fixed_copy_that_cannot_be_written_is_refused_naming_the_cause_and_nothing_is_left(
    written: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(directory: Path, into: Path, skip: set[str]) -> None:
        (into / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "link_files", full)
    run = Fixing(written, tmp_path / "fixed")
    full_disk = r"^no space left on device while writing a fixed copy into .*/\.staging-"
    with pytest.raises(ConversionError, match=full_disk):
        run.fix(written, [])
    assert run.verified == [] and sorted(p.name for p in tmp_path.iterdir()) == ["written"]


def test_a_fixed_copy_replaces_a_directory_only_with_overwrite(written: Path, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "kept.txt").write_text("a file of the directory there")
    with pytest.raises(ConversionError, match="--overwrite"):
        Fixing(written, fixed).fix(written, [])
    assert sorted(p.name for p in fixed.iterdir()) == ["kept.txt"]
    Fixing(written, fixed, overwrite=True).fix(written, [])
    assert sorted(p.name for p in fixed.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]


def test_a_report_directory_inside_the_fixed_copy_is_refused_before_the_directory_is_verified(
    written: Path, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    argv = ["--checkpoint", str(tmp_path / "not-read.pt"), "--verify", str(written), "--fix-config", str(fixed),
            "--report", str(fixed / "report")]  # fmt: skip
    error = refusal(argv, fixed)
    assert error == (f"convert-run-checkpoint: error: --report {fixed / 'report'}: inside the output directory, "
                     "which is replaced as a whole; nothing was written")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["written"]


# -- files, the terminal, the exit -------------------------------------------------------------------------


def test_a_file_that_cannot_be_hard_linked_is_copied_and_skipped_files_and_directories_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, into = tmp_path / "written", tmp_path / "into"
    directory.mkdir()
    into.mkdir()
    (directory / "model.safetensors").write_bytes(b"the weights")
    (directory / "config.json").write_text("{}")
    (directory / "a-directory").mkdir()

    def cross_device(source: Path, link: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    cli.link_files(directory, into, skip={"config.json"})
    assert sorted(p.name for p in into.iterdir()) == ["model.safetensors"]
    assert (into / "model.safetensors").read_bytes() == b"the weights"
    assert not os.path.samefile(into / "model.safetensors", directory / "model.safetensors")


class Terminal:
    """A standard error stream that says it is a terminal, writing to ``fd``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd


def test_the_status_line_is_rewritten_in_place_cut_to_the_terminals_width(monkeypatch: pytest.MonkeyPatch) -> None:
    main, secondary = pty.openpty()
    try:
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 30, 0, 0))
        monkeypatch.setattr(sys, "stderr", Terminal(secondary))
        show = cli.terminal_progress()
        assert show is not None
        show("checking 3/12: test_" + "x" * 60)
        assert os.read(main, 1000) == b"\r\x1b[K" + ("checking 3/12: test_" + "x" * 60)[:29].encode()
    finally:
        os.close(main)
        os.close(secondary)


def test_the_status_line_is_cut_to_80_columns_where_the_width_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    try:
        monkeypatch.setattr(sys, "stderr", Terminal(write))  # says it is a terminal; its descriptor is not one
        show = cli.terminal_progress()
        assert show is not None
        show("y" * 200)
        assert os.read(read, 1000) == b"\r\x1b[K" + b"y" * 79
    finally:
        os.close(read)
        os.close(write)


def test_no_status_line_is_shown_in_a_pipe_or_a_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert cli.terminal_progress() is None


def test_a_console_script_ends_its_process_with_the_commands_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[int] = []
    monkeypatch.setattr(os, "_exit", ended.append)
    cli.exit_now(3)
    assert ended == [3]


def test_a_session_is_given_the_runs_settings_and_its_loader_remembers_the_archives_it_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    import converters.session
    from converters.outcomes import Outcome, SessionResult
    from converters.session import GENERIC_CHECKS

    given: list[tuple[list[Path], Conversion, dict[str, Any]]] = []
    note = "a note long enough to be wrapped: " + " ".join(["word"] * 30)

    def run_checks(modules: list[Path], conversion: Conversion, **settings: Any) -> SessionResult:
        given.append((modules, conversion, settings))
        return SessionResult(0, [Outcome("test_a_check", "passed")], notes=[note])

    monkeypatch.setattr(converters.session, "run_checks", run_checks)
    converter = Converter(**{**vars(CONVERTER), "ignore_warnings": ("ignore::UserWarning",)})
    run = Run(converter, options_of(out=tmp_path / "out", verbose=True, junitxml=tmp_path / "j.xml"), [])
    run.session(tmp_path / "staging", ["dist 1.0"])
    ((modules, conversion, settings),) = given
    assert modules == [GENERIC_CHECKS] and conversion.staging == tmp_path / "staging"
    assert settings == {"junitxml": tmp_path / "j.xml", "suite": "run conversion",
                        "ignore_warnings": ("ignore::UserWarning",), "verbose": True, "progress": None}  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert "test_a_check  passed" in printed
    start = printed.index(next(line for line in printed if line.startswith("a note long")))
    assert printed[start + 1].startswith("      word") and printed[-1] == "reference: dist 1.0"
    assert " ".join(line.strip() for line in printed[start:-1]) == note

    checked: list[Path] = []
    monkeypatch.setattr("converters.safe_load.check_archive", checked.append)
    torch.save({"w": torch.ones(2)}, tmp_path / "a.pt")
    conversion.loader.load(tmp_path / "a.pt")
    conversion.loader.load(tmp_path / "a.pt")
    assert checked == [tmp_path / "a.pt"]  # checked once, as the session reads its source more than once


def sessions_ending(monkeypatch: pytest.MonkeyPatch, result: Any) -> list[tuple[Conversion, dict[str, Any]]]:
    """Every session from now on ends with ``result``; the conversions and settings they were given."""
    import converters.session

    given: list[tuple[Conversion, dict[str, Any]]] = []

    def run_checks(modules: list[Path], conversion: Conversion, **settings: Any) -> Any:
        given.append((conversion, settings))
        return result

    monkeypatch.setattr(converters.session, "run_checks", run_checks)
    return given


def test_a_session_verifying_a_directory_is_given_it_as_the_directory_verified(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from converters.outcomes import Outcome, SessionResult

    given = sessions_ending(monkeypatch, SessionResult(0, [Outcome("test_a_check", "passed")]))
    run = Run(CONVERTER, options_of(verify=str(tmp_path / "written")), [])
    run.session(tmp_path / "written", [], verify=tmp_path / "written")
    run.session(tmp_path / "staging", [])
    (verifying, _), (converting, _) = given
    assert verifying.options["verify"] == tmp_path / "written" and verifying.verifying
    assert converting.options["verify"] is None and not converting.verifying


def test_on_a_terminal_a_session_is_given_a_status_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from converters.outcomes import Outcome, SessionResult

    given = sessions_ending(monkeypatch, SessionResult(0, [Outcome("test_a_check", "passed")]))
    read, write = os.pipe()
    try:
        monkeypatch.setattr(sys, "stderr", Terminal(write))
        Run(CONVERTER, options_of(out=tmp_path / "out"), []).session(tmp_path / "staging", [])
        ((_, settings),) = given
        settings["progress"]("checking 1/9: test_a_check")
        assert os.read(read, 1000) == b"\r\x1b[Kchecking 1/9: test_a_check"
    finally:
        os.close(read)
        os.close(write)


def test_a_failed_checks_details_are_printed_beneath_the_table_and_the_run_is_refused_with_its_cause(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from converters.outcomes import Outcome, SessionResult

    outcomes = [Outcome("test_passing", "passed", details="a passing check's text: not shown"),
                Outcome("test_outputs", "failed", "they differ", details="the locator's table")]  # fmt: skip
    sessions_ending(monkeypatch, SessionResult(1, outcomes))
    with pytest.raises(ConversionError, match=r"^check test_outputs failed: they differ$"):
        Run(CONVERTER, options_of(out=tmp_path / "out"), []).session(tmp_path / "staging", [])
    printed = capsys.readouterr().out
    assert printed.endswith("\n\nthe locator's table\n") and "not shown" not in printed


def test_a_bug_in_a_check_is_an_internal_error_naming_the_check_its_log_holding_the_sessions_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from converters.outcomes import Outcome, SessionResult

    bug = Outcome("test_reference", "internal error", "KeyError: 'layer'", details="Traceback (most recent ...)")
    sessions_ending(monkeypatch, SessionResult(2, [Outcome("test_read", "passed"), bug], output="pytest's report"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "logs"))
    (tmp_path / "logs").mkdir()
    result = commands.run_main(
        functools.partial(cli.run, CONVERTER),
        ["--checkpoint", str(source_in(tmp_path)), "--out", str(tmp_path / "out")],
    )
    assert result.returncode == INTERNAL
    (log,) = (tmp_path / "logs").iterdir()
    assert " ".join(result.stderr.split()) == (
        "convert-run-checkpoint: internal error in check test_reference: KeyError: 'layer'; nothing was written. "
        f"This is a bug in the tool or a reference implementation, not a fault of your files; the traceback is in {log}"
    )
    assert log.read_text(encoding="utf-8").endswith("Traceback (most recent ...)\n\npytest's report\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "original.pt"]  # no output, no staging


def test_a_staging_directory_that_cannot_be_made_is_refused_naming_the_cause_and_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def refused(target: Path) -> Path:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("converters.output.make_staging", refused)
    argv = ["--checkpoint", str(source_in(tmp_path)), "--out", str(tmp_path / "out")]
    assert refusal(argv, tmp_path / "out") == (
        f"convert-run-checkpoint: error: permission denied while creating a staging directory in {tmp_path}; "
        "nothing was written"
    )


def test_an_input_that_cannot_be_read_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checkpoint = source_in(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a file mode 000 (root reads any file)
    assert refusal(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")], tmp_path / "out") == (
        f"convert-run-checkpoint: error: --checkpoint {checkpoint}: cannot be read (permission denied); nothing was "
        "written"
    )


def test_a_command_without_arguments_given_reads_the_processs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pt"
    monkeypatch.setattr(sys, "argv", ["convert-run-checkpoint", "--checkpoint", str(missing), "--out", "out"])
    assert cli.run(CONVERTER) == REFUSED
    assert f"--checkpoint {missing}: no such file" in " ".join(capsys.readouterr().err.split())


class ClosedPipe:
    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_console_script_ends_with_its_commands_code_even_when_its_output_cannot_be_flushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended: list[int] = []
    monkeypatch.setattr(os, "_exit", ended.append)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    cli.exit_now(1)
    monkeypatch.setattr(cli, "main", lambda: 2)
    cli.script()
    assert ended == [1, 2]


def test_every_path_option_is_parsed_as_a_path(tmp_path: Path) -> None:
    options = cli.parse(CONVERTER, ["--checkpoint", "a.pt", "--labels", "l.csv", "--verify", "written", "--fix-config",
                                    "fixed", "--junitxml", "j.xml", "--report", "report"])  # fmt: skip
    paths = ("checkpoint", "labels", "fix_config", "junitxml", "report")
    assert {name: type(options[name]) for name in paths} == {name: type(Path()) for name in paths}
    assert options["verify"] == "written"  # a directory or a hub name: resolved later


@pytest.mark.parametrize("given", [["--out", "out"], ["--push_to_hub", "user/model"]])
def test_verifying_with_an_output_or_a_push_is_an_argument_error(
    given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parse(CONVERTER, ["--checkpoint", "a.pt", "--verify", "written", *given])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "convert-run-checkpoint: error: --verify checks a directory and writes nothing: --out and --push_to_hub "
        "have no place here"
    )


def test_a_model_that_is_neither_a_directory_nor_cached_is_refused_naming_its_option(tmp_path: Path) -> None:
    base = tmp_path / "nowhere"
    argv = ["--checkpoint", str(source_in(tmp_path)), "--base", str(base), "--out", str(tmp_path / "out")]
    assert refusal(argv, tmp_path / "out") == (
        f"convert-run-checkpoint: error: --base {str(base)!r} is neither a local directory nor a hub name (ORG/NAME); "
        "nothing was written"
    )


def test_a_converters_own_checks_are_modules_by_name_or_files_by_path_after_the_generic_ones(tmp_path: Path) -> None:
    import converters.ast.checks
    from converters.session import GENERIC_CHECKS

    own = tmp_path / "own_checks.py"
    converter = Converter(**{**vars(CONVERTER), "checks": ("converters.ast.checks", str(own))})
    assert cli.checks_modules(converter) == [GENERIC_CHECKS, Path(converters.ast.checks.__file__), own]


def test_an_internal_errors_log_says_what_ran_when_with_which_versions_and_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    log = cli.log_internal_error("convert-run-checkpoint", ["--checkpoint", "a.pt"], "check test_x", "Traceback: ...")
    assert log.parent == tmp_path and log.name.startswith("convert-run-checkpoint-") and log.suffix == ".log"
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "convert-run-checkpoint --checkpoint a.pt"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", lines[1]), lines[1]
    assert lines[2].startswith("python ") and " torch " in lines[2]
    assert lines[3:] == ["", "internal error in check test_x", "", "Traceback: ..."]


def test_a_written_output_is_pushed_once_and_a_failed_push_is_a_refusal_naming_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed: list[tuple[Path, str]] = []
    monkeypatch.setattr(cli, "push", lambda directory, repo_id: pushed.append((directory, repo_id)))
    out = tmp_path / "out"
    run = Run(CONVERTER, options_of(out=out, push_to_hub="user/model"), [])
    run.code, run.message = REFUSED, "refused"
    run.push()
    assert pushed == [] and run.message == "refused"
    run.code, run.message = WRITTEN, f"convert-run-checkpoint: wrote {out}"
    run.push()
    assert pushed == [(out, "user/model")] and run.code == WRITTEN
    assert run.message == f"convert-run-checkpoint: wrote {out}\nconvert-run-checkpoint: pushed {out} to user/model"

    def unauthorized(directory: Path, repo_id: str) -> None:
        raise RuntimeError("401 Client Error: Unauthorized\nmore of the response")

    monkeypatch.setattr(cli, "push", unauthorized)
    run.code, run.message = WRITTEN, "wrote it"
    run.push()
    assert run.code == REFUSED
    assert run.message == (f"convert-run-checkpoint: error: {out} was written, but pushing it to user/model failed: "
                           "401 Client Error: Unauthorized")  # fmt: skip


def test_an_option_not_given_takes_its_records_default() -> None:
    converter = Converter(**{**vars(CONVERTER), "options": (*OPTIONS, Option("--rate", "a value", default="16000"))})
    assert cli.parse(converter, ["--checkpoint", "a.pt", "--out", "out"])["rate"] == "16000"
    assert cli.parse(converter, ["--checkpoint", "a.pt", "--out", "out", "--rate", "8000"])["rate"] == "8000"
