"""Golden records are made only by verifications against the original: the committed ones in ``fixtures/gate/``
held to originals built anew (each is seeded: its SHA-256 is the record's), an entry that fails never recorded, a
record of another original refused, a re-record printing what changed, and the command's ``--golden`` and
``--record``. ``tests/test_golden_gate.py`` gates on the records alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from converters.ast.example import TINY, write_checkpoint
from converters.ast.variants import variant
from converters.cli import checks_modules
from converters.contract import Role
from converters.fetch import sha256_of
from converters.plugin import ORIGINAL, RECORD
from converters.registry import get
from converters.session import GOLDEN_CHECKS, check_names
from fixtures import commands
from fixtures.gate import GATE, build_originals, entries
from fixtures.pytest_runs import by_entry, inline_run, junit_cases, preload_transformers

preload_transformers(GATE)
AST = "ast-example"
AST_ORIGINAL = "originals/ast-example/speechcommands_10_10_0.9812.pth"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """fixtures/gate with its originals built again beside it, as the recording job had them."""
    shutil.copytree(GATE, tmp_path / "project")
    build_originals(tmp_path / "project")
    return tmp_path / "project"


def run(pytester: pytest.Pytester, project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return inline_run(pytester, project, "--conversions", "conversions.toml", "--junitxml", "run.xml", *arguments)


def record_of(project: Path, entry: str) -> dict:
    return json.loads((project / "goldens" / f"{entry}.json").read_text())


def test_each_committed_record_names_the_original_built_again(tmp_path: Path) -> None:
    built = build_originals(tmp_path)
    for entry in entries():
        (source,) = [o for o in get(entry.converter).options if o.role is Role.SOURCE]
        recorded = json.loads((GATE / "goldens" / f"{entry.name}.json").read_text())["provenance"]["original"]
        assert recorded["sha256"] == sha256_of(Path(built[entry.name][source.dest])), entry.name


def test_the_committed_records_hold_directories_that_verify_against_their_originals(
    project: Path, pytester: pytest.Pytester
) -> None:
    """With the originals there, each entry is verified against its original and held to its record: both pass."""
    result = run(pytester, project)
    assert result.returncode == 0, result.stdout[-3000:]
    cases = junit_cases(project / "run.xml")
    for entry in entries():
        full = check_names(checks_modules(get(entry.converter)), "verify")
        gated = check_names([GOLDEN_CHECKS], "verify")
        found = by_entry(cases, entry.name)
        assert list(found) == full + gated
        assert "failed" not in found.values() and set(found.values()) >= {"passed"}
        assert all(found[check] == "passed" for check in gated)
        assert f"conversions.toml::{entry.name}: checked against {ORIGINAL} and {RECORD}" in result.stdout


def test_an_entry_that_fails_its_verification_is_not_recorded(project: Path, pytester: pytest.Pytester) -> None:
    (project / "goldens" / f"{AST}.json").unlink()
    config = project / "converted" / AST / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "layer_norm_eps": 1e-12}))
    result = run(pytester, project, "--conversions-record", "-k", AST)
    assert result.returncode == 1
    assert "layer_norm_eps 1e-12, the original computes with 1e-06" in result.stdout
    assert not (project / "goldens" / f"{AST}.json").exists()
    assert "recorded" not in result.stdout.split("= conversions =")[-1]


def convert_another_original(project: Path) -> str:
    """ast-example's directory converted again from another original (other weights): its SHA-256."""
    original = project / AST_ORIGINAL
    write_checkpoint(original, variant("ast-finetuned-speech-commands-v2"), TINY, seed=123)
    shutil.rmtree(project / "converted" / AST)
    output = project / "converted" / AST
    done = commands.run("convert-ast-checkpoint", "--checkpoint_path", str(original), "--model_name",
                        "ast-finetuned-speech-commands-v2", "--pytorch_dump_folder_path", str(output))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    return sha256_of(original)


def test_a_record_of_another_original_is_refused_naming_both(project: Path, pytester: pytest.Pytester) -> None:
    committed = record_of(project, AST)
    theirs = committed["provenance"]["original"]["sha256"]
    ours = convert_another_original(project)
    recorded = run(pytester, project, "--conversions-record", "-k", AST)
    assert recorded.returncode == 1
    assert f"was made from another original: SHA-256 {theirs}, this run's {ours}" in recorded.stdout
    assert record_of(project, AST) == committed  # not replaced
    held = run(pytester, project, "-k", AST)  # the entry's original against the record: the record check says so
    assert by_entry(junit_cases(project / "run.xml"), AST)["test_the_record_is_this_entrys"] == "failed"
    assert f"was made from another original: SHA-256 {theirs}, the entry's checkpoint has {ours}" in held.stdout


def test_re_recording_prints_what_changed_against_the_committed_record(
    project: Path, pytester: pytest.Pytester
) -> None:
    """The committed record edited as an older one would differ: a tensor, a field, an output. Re-recording writes
    what the verification measured, and prints each change."""
    path = project / "goldens" / f"{AST}.json"
    old = record_of(project, AST)
    key = sorted(old["tensors"])[3]
    old["tensors"][key][2] = "0" * 32
    old["fields"]["preprocessor_config.json"]["mean"] = -5.0
    old["outputs"]["voice-loud-10.5s"]["values"][4] += 0.5
    path.write_text(json.dumps(old))
    result = run(pytester, project, "--conversions-record", "-k", AST)
    assert result.returncode == 0, result.stdout[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"recorded goldens/{AST}.json"))
    assert f"tensors: 1 changed (first: {key})" in line
    mean = record_of(project, AST)["fields"]["preprocessor_config.json"]["mean"]
    assert f"preprocessor_config.json mean: -5.0 -> {mean!r}" in line
    assert "output voice-loud-10.5s: largest change 0.5 (tolerance " in line
    new = record_of(project, AST)
    assert new["tensors"][key] != old["tensors"][key] and new["made"] >= old["made"]
    unchanged = run(pytester, project, "--conversions-record", "-k", AST)
    assert "tensors:" not in unchanged.stdout and "largest change 0 (tolerance" in unchanged.stdout


def said(result: commands.Result) -> str:
    """What a command printed, its lines unwrapped."""
    return " ".join((result.stdout + result.stderr).split())


def test_the_command_records_gates_and_reports_both(project: Path, tmp_path: Path) -> None:
    directory, record = project / "converted" / AST, tmp_path / "record.json"
    source = ("--checkpoint_path", str(project / AST_ORIGINAL), "--model_name", "ast-finetuned-speech-commands-v2")
    made = commands.run("convert-ast-checkpoint", *source, "--verify", str(directory), "--golden", str(record),
                        "--record")  # fmt: skip
    assert made.returncode == 0, made.stdout[-3000:]
    assert f"recorded {record}: new" in said(made)
    gated = commands.run("convert-ast-checkpoint", "--verify", str(directory), "--golden", str(record),
                         "--report", str(tmp_path / "report"))  # fmt: skip
    assert gated.returncode == 0, gated.stdout[-3000:]
    assert f"{directory} computes what its record holds (made {json.loads(record.read_text())['made']})" in said(gated)
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["checks"]
    assert [row["check"] for row in rows] == check_names([GOLDEN_CHECKS], "verify")
    both = commands.run("convert-ast-checkpoint", *source, "--verify", str(directory), "--golden", str(record))
    assert both.returncode == 0 and "computes what the original computes" in said(both)
    assert "computes what its record holds" in said(both)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("--record",), "--record writes the golden record of a directory --verify checks"),
        (("--golden", "r.json"), "--golden holds a directory --verify checks to its record: give --verify DIR"),
    ],
)
def test_the_command_says_what_golden_and_record_need(arguments: tuple[str, ...], said: str, tmp_path: Path) -> None:
    done = commands.run("convert-ast-checkpoint", "--checkpoint_path", "x.pth", "--pytorch_dump_folder_path",
                        str(tmp_path / "out"), *arguments)  # fmt: skip
    assert done.returncode == 2 and said in done.stderr
