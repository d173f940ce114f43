"""``pytest --conversions MANIFEST`` in a user's own project: a fresh directory with no conftest, pytest run as
the user runs it (the plugin found through its ``pytest11`` entry point), with and without pytest-xdist.

pytest runs in this process (pytester's inline run: the plugin is loaded from its entry point all the same),
except under pytest-xdist and where what the plugin imports is the question: there, in a process of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest

from converters import registry
from converters.ast.variants import BY_NAME
from fixtures.pytest_runs import by_entry, inline_run, junit_cases, pytest_run
from fixtures.seed_style import ast_directory

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]


@pytest.fixture(scope="module")
def project(ast_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: an original checkpoint, two directories converted from it, the manifest listing them.
    One was converted right (eps 1e-6), the other as the hub's configs are (eps 1e-12); a third entry has a
    typo in its format, a fourth names a directory that is not there."""
    project = tmp_path_factory.mktemp("project")
    (project / "originals").mkdir(parents=True)
    checkpoint = project / "originals" / "audioset_10_10_0.4593.pth"
    checkpoint.write_bytes(ast_checkpoint(TENTEN).read_bytes())
    ast_directory(checkpoint, TENTEN, project / "converted" / "right", eps=1e-6)
    ast_directory(checkpoint, TENTEN, project / "converted" / "hub-eps", eps=1e-12)
    original = "originals/audioset_10_10_0.4593.pth"
    entries = [
        f'[[conversion]]\nname = "{name}"\nformat = "{form}"\ncheckpoint = "{original}"\n'
        f'model = "converted/{name}"\nmodel_name = "{TENTEN.name}"\n'
        for name, form in (("right", "ast"), ("hub-eps", "ast"), ("typo", "astt"), ("missing", "ast"))
    ]
    (project / "conversions.toml").write_text("\n".join(entries))
    return project


def assert_gated(result: subprocess.CompletedProcess[str], cases: dict[tuple[str, str], str]) -> None:
    """The right entry passes, the hub-eps one fails on its config alone, the typo fails alone naming itself."""
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "FAILED conversions.toml::hub-eps::test_the_config_computes_what_the_original_computes" in result.stdout
    assert "layer_norm_eps 1e-12, the original computes with 1e-06" in result.stdout
    assert f"format 'astt' is no registered converter; registered: {', '.join(registry.names())}" in result.stdout
    right, hub = by_entry(cases, "right"), by_entry(cases, "hub-eps")
    assert right.keys() == hub.keys() and len(right) >= 10
    assert "failed" not in right.values() and right["test_outputs_match_the_original_implementation"] == "passed"
    assert [name for name, outcome in hub.items() if outcome == "failed"] == [
        "test_the_config_computes_what_the_original_computes"
    ]  # one failing entry leaves the other's checks running, and its own other checks
    assert by_entry(cases, "typo") == {"entry": "failed"}
    # refused before its checks ran: said once, by its first check; the others are not run
    missing = by_entry(cases, "missing")
    assert missing.keys() == right.keys()
    assert [name for name, outcome in missing.items() if outcome != "skipped"] == [next(iter(missing))]
    assert missing[next(iter(missing))] == "failed"
    assert result.stdout.count("entry 'missing': model 'converted/missing': not a local directory, and ") == 1, (
        result.stdout
    )


def test_a_manifest_gates_on_every_entry_and_names_them(project: Path, pytester: pytest.Pytester) -> None:
    result = inline_run(pytester, project, "--conversions", "conversions.toml", "--junitxml", "one.xml")
    assert_gated(result, junit_cases(project / "one.xml"))


@pytest.mark.process  # the workers are processes of their own: mutants live in this one
@pytest.mark.interpreter
def test_pytest_xdist_spreads_the_entries_and_finds_the_same(project: Path) -> None:
    """An entry's checks are one xdist scope: each entry verified on one worker, its checkpoint read once there."""
    result = pytest_run(project, "--conversions", "conversions.toml", "--junitxml", "two.xml", "-n", "2", "-v")
    assert "2 workers" in result.stdout, result.stdout[-3000:]
    assert_gated(result, junit_cases(project / "two.xml"))
    workers: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():  # "[gw1] [ 40%] PASSED conversions.toml::right::test_..."
        fields = line.split()
        if len(fields) >= 4 and fields[0].startswith("[gw") and fields[-1].startswith("conversions.toml::"):
            workers.setdefault(fields[-1].split("::")[1], set()).add(fields[0])
    assert set(workers) == {"right", "hub-eps", "typo", "missing"}, result.stdout[-3000:]
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers
    assert len(set().union(*workers.values())) == 2, workers  # spread across both


def test_a_bug_in_a_check_fails_it_as_an_internal_error_not_as_the_entrys_fault(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a check raises unexpectedly is said as a bug of the tool (with its traceback), and logged as the
    command logs it; the entry's other checks still report."""
    from converters.ast.conversion import ASTConversion

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ASTConversion, "compare", broken)
    result = inline_run(pytester, project, "--conversions", "conversions.toml", "-k", "right", "--junitxml", "bug.xml")
    assert result.returncode == 1
    assert "internal error: RuntimeError: boom" in result.stdout, result.stdout[-3000:]
    assert 'raise RuntimeError("boom")' in result.stdout  # its traceback
    failures = [case.find("failure") for case in ElementTree.parse(project / "bug.xml").iter("testcase")]
    said = [str(failure.get("message")).splitlines()[0] for failure in failures if failure is not None]
    assert said == ["internal error: RuntimeError: boom"]  # the check's own failure, and the plugin's none
    right = by_entry(junit_cases(project / "bug.xml"), "right")
    assert right["test_outputs_match_the_original_implementation"] == "failed"
    assert right["test_written_files_reload_exactly"] == "passed"


def test_a_manifest_whose_entries_pass_exits_zero(project: Path, pytester: pytest.Pytester) -> None:
    result = inline_run(pytester, project, "--conversions", "conversions.toml", "-k", "right")
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.process  # what the plugin imports into a fresh interpreter
def test_a_suite_without_conversions_sees_nothing_of_the_plugin(tmp_path: Path) -> None:
    """The plugin is installed in this environment: a user's own suite runs as if it were not."""
    (tmp_path / "test_own.py").write_text(
        "import sys\n\ndef test_own():\n"
        "    assert {n for n in sys.modules if n.startswith('converters')} <= {'converters', 'converters.plugin'}\n"
        "    assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    with_plugin = pytest_run(tmp_path, "-q")
    without = pytest_run(tmp_path, "-q", "-p", "no:audio_checkpoint_converters")
    assert with_plugin.returncode == without.returncode == 0, with_plugin.stdout
    assert with_plugin.stdout.splitlines()[-1].split(" in ")[0] == without.stdout.splitlines()[-1].split(" in ")[0]
    assert "1 passed" in with_plugin.stdout


EXAMPLES = Path(__file__).parents[1] / "examples"


def test_the_example_manifest_is_one_the_plugin_reads() -> None:
    """Every entry names a registered format and only keys its converter takes."""
    import tomllib

    from converters import registry
    from converters.contract import Role
    from converters.plugin import ENTRY_KEYS

    entries = tomllib.loads((EXAMPLES / "conversions.toml").read_text())["conversion"]
    assert {entry["format"] for entry in entries} <= set(registry.names())  # a new converter needs no entry here
    for entry in entries:
        converter = registry.get(entry["format"])
        keys = ENTRY_KEYS | {o.manifest_key for o in converter.options if o.role is not Role.OUTPUT}
        assert set(entry) <= keys, entry["name"]


def workflow_job(name: str) -> tuple[dict, str]:
    """The example workflow's one job, and its commands."""
    import yaml

    (job,) = yaml.safe_load((EXAMPLES / name).read_text())["jobs"].values()
    return job, "\n".join(step.get("run", "") for step in job["steps"])


def test_the_example_gate_holds_every_push_to_the_records_on_both_majors_without_references() -> None:
    job, commands = workflow_job("gate-conversions.yml")
    assert job["strategy"]["matrix"]["transformers"] == ["==4.57.*", ">=5,<6"]
    assert "pytest --conversions conversions.toml --conversions-golden-only -n auto" in " ".join(commands.split())
    assert "--num-shards 2 --shard-id ${{ matrix.shard }}" in commands and job["strategy"]["matrix"]["shard"] == [0, 1]
    assert "[gate]" in commands and "s3prl" not in commands and "[ast" not in commands
    assert 'pip install "transformers${{ matrix.transformers }}"' in commands


def test_the_example_weekly_verification_re_records_and_proposes_the_changes() -> None:
    import yaml

    workflow = yaml.safe_load((EXAMPLES / "verify-conversions.yml").read_text())
    assert "schedule" in workflow[True] and "push" not in workflow[True]  # YAML reads the key `on` as True
    job, commands = workflow_job("verify-conversions.yml")
    assert job["strategy"]["matrix"]["transformers"] == ["==4.57.*", ">=5,<6"]
    assert "pytest --conversions conversions.toml -n auto" in " ".join(commands.split())
    assert "--conversions-record" in commands and "[ast,gate]" in commands
    proposing = next(step for step in job["steps"] if "create-pull-request" in step.get("uses", ""))
    assert proposing["with"]["add-paths"] == "goldens/*.json"


def test_an_own_fine_tune_is_verified_from_its_runs_options_as_manifest_keys(
    ast_checkpoint: Callable[..., Path], tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """The entry keys are the command's options (``audio_length``, ``dataset_mean``, ...), typed as TOML types them."""
    from converters.ast.example import TINY, write_checkpoint
    from converters.ast.spec import Spec
    from fixtures import commands

    project = tmp_path / "own"
    project.mkdir()
    spec = Spec(10, 10, 400, -5.1, 4.2, labels=tuple(f"c{i}" for i in range(5)))
    checkpoint = write_checkpoint(project / "best_audio_model.pth", spec, TINY, seed=77)
    options = ("--audio_length", "400", "--dataset_mean", "-5.1", "--dataset_std", "4.2")
    converted = commands.run("convert-ast-checkpoint", "--checkpoint_path", str(checkpoint),
                             "--pytorch_dump_folder_path", str(project / "converted"), *options)  # fmt: skip
    assert converted.returncode == 0, converted.stdout[-3000:]
    (project / "conversions.toml").write_text(
        '[[conversion]]\nname = "own"\nformat = "ast"\ncheckpoint = "best_audio_model.pth"\nmodel = "converted"\n'
        "audio_length = 400\ndataset_mean = -5.1\ndataset_std = 4.2\n\n"
        '[[conversion]]\nname = "other-mean"\nformat = "ast"\ncheckpoint = "best_audio_model.pth"\n'
        'model = "converted"\naudio_length = 400\ndataset_mean = -4.2677393\ndataset_std = 4.2\n'
    )
    result = inline_run(pytester, project, "--conversions", "conversions.toml", "--junitxml", "own.xml")
    cases = junit_cases(project / "own.xml")
    assert by_entry(cases, "own")["test_outputs_match_the_original_implementation"] == "passed"
    assert "failed" not in by_entry(cases, "own").values(), result.stdout[-3000:]
    assert by_entry(cases, "other-mean")["test_the_config_computes_what_the_original_computes"] == "failed"
    assert "preprocessor_config.json mean -5.1, the original computes with -4.2677393" in result.stdout
