"""``pytest --conversions MANIFEST`` in a user's own project: a fresh directory with no conftest, pytest run as
the user runs it (the plugin found through its ``pytest11`` entry point), with and without pytest-xdist."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest

from converters.ast.variants import BY_NAME
from fixtures.seed_style import ast_directory

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]

pytestmark = pytest.mark.process  # pytest runs in a process of its own: mutants live in this one


def pytest_run(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments], cwd=project,
                          capture_output=True, text=True, env=environment, timeout=600)  # fmt: skip


@pytest.fixture
def project(ast_checkpoint: Callable[..., Path], tmp_path: Path) -> Path:
    """A user's project: an original checkpoint, two directories converted from it, the manifest listing them.
    One was converted right (eps 1e-6); the other as the hub's configs are (eps 1e-12)."""
    project = tmp_path / "project"
    (project / "originals").mkdir(parents=True)
    checkpoint = project / "originals" / "audioset_10_10_0.4593.pth"
    checkpoint.write_bytes(ast_checkpoint(TENTEN).read_bytes())
    ast_directory(checkpoint, TENTEN, project / "converted" / "right", eps=1e-6)
    ast_directory(checkpoint, TENTEN, project / "converted" / "hub-eps", eps=1e-12)
    original = "originals/audioset_10_10_0.4593.pth"
    entries = [
        f'[[conversion]]\nname = "{name}"\nformat = "ast"\ncheckpoint = "{original}"\n'
        f'model = "converted/{name}"\nmodel_name = "{TENTEN.name}"\n'
        for name in ("right", "hub-eps")
    ]
    (project / "conversions.toml").write_text("\n".join(entries))
    return project


def junit_cases(path: Path) -> dict[tuple[str, str], str]:
    """(class name, test name) -> passed, failed or skipped."""
    found = {}
    for case in ElementTree.parse(path).iter("testcase"):
        result = (
            "failed"
            if case.find("failure") is not None
            else "skipped"
            if case.find("skipped") is not None
            else "passed"
        )
        found[(str(case.get("classname")), str(case.get("name")))] = result
    return found


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "two-workers"])
def test_a_manifest_gates_on_every_entry_and_names_them(project: Path, workers: list[str]) -> None:
    result = pytest_run(project, "--conversions", "conversions.toml", "--junitxml", "checks.xml", *workers)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "FAILED conversions.toml::hub-eps::test_the_config_computes_what_the_original_computes" in result.stdout
    assert "layer_norm_eps 1e-12, the original computes with 1e-06" in result.stdout
    cases = junit_cases(project / "checks.xml")
    right = {name: outcome for (entry, name), outcome in cases.items() if entry == "conversions.toml.right"}
    hub = {name: outcome for (entry, name), outcome in cases.items() if entry == "conversions.toml.hub-eps"}
    assert right.keys() == hub.keys() and len(right) >= 10
    assert "failed" not in right.values() and right["test_outputs_match_the_original_implementation"] == "passed"
    assert [name for name, outcome in hub.items() if outcome == "failed"] == [
        "test_the_config_computes_what_the_original_computes"
    ]  # one failing entry leaves the other's checks running, and its own other checks
    if workers:
        # an entry's checks are one xdist group: each entry verified on one worker, its checkpoint read once there
        assert "2 workers" in result.stdout


def test_a_manifest_that_passes_exits_zero(project: Path) -> None:
    text = (project / "conversions.toml").read_text()
    (project / "conversions.toml").write_text(text.split("\n[[conversion]]")[0])
    result = pytest_run(project, "--conversions", "conversions.toml")
    assert result.returncode == 0, result.stdout[-3000:]


def test_an_entry_that_cannot_be_read_fails_alone_naming_the_entry(project: Path) -> None:
    broken = '\n[[conversion]]\nname = "typo"\nformat = "astt"\ncheckpoint = "x.pth"\nmodel = "y"\n'
    (project / "conversions.toml").write_text((project / "conversions.toml").read_text() + broken)
    result = pytest_run(project, "--conversions", "conversions.toml")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "format 'astt' is no registered converter; registered: ast, s3prl" in result.stdout
    assert "PASSED" not in result.stdout and " passed" in result.stdout.splitlines()[-1]


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
    assert {entry["format"] for entry in entries} == set(registry.names())
    for entry in entries:
        converter = registry.get(entry["format"])
        keys = ENTRY_KEYS | {o.manifest_key for o in converter.options if o.role is not Role.OUTPUT}
        assert set(entry) <= keys, entry["name"]


def test_the_example_workflow_gates_on_both_transformers_majors() -> None:
    import yaml

    workflow = yaml.safe_load((EXAMPLES / "verify-conversions.yml").read_text())
    job = workflow["jobs"]["verify"]
    assert job["strategy"]["matrix"]["transformers"] == ["==4.57.*", ">=5,<6"]
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert "pytest --conversions conversions.toml -n auto" in commands
    assert 'pip install "transformers${{ matrix.transformers }}"' in commands
