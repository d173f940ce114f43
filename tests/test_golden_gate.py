"""Gating on golden records alone: the committed records of ``fixtures/gate/`` (made by ``python -m fixtures.gate``
from verifications against the originals, which ``tests/test_golden_record.py`` holds them to), and the
directories they were made from, changed as a user's hand or a transformers release changes them.

``tox -e gate`` runs this module where neither reference implementation is installed (no timm, no torchvision, no
s3prl: the environment proves it, before pytest starts). pytest runs in this process (pytester), as a user's
project runs it: the manifest's own directory, no conftest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from converters.plugin import RECORD
from converters.session import GOLDEN_CHECKS, check_names
from fixtures.gate import entries
from fixtures.pytest_runs import by_entry, inline_run, junit_cases, junit_properties, preload_transformers

GATE = Path(__file__).parents[1] / "fixtures" / "gate"
ENTRIES = tuple(entry.name for entry in entries())  # every registered converter's example, and an S3PRL sequence head
CHECKS = check_names([GOLDEN_CHECKS], "verify")
preload_transformers(GATE)
TENSORS, FIELDS, OUTPUTS = (
    "test_the_directory_holds_the_recorded_tensors",
    "test_the_config_and_extractor_are_the_recorded_ones",
    "test_the_outputs_are_the_recorded_ones",
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The committed manifest, directories and records, in a project of the test's own (changed at will)."""
    shutil.copytree(GATE, tmp_path / "project")
    return tmp_path / "project"


def gate(pytester: pytest.Pytester, project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return inline_run(pytester, project, "--conversions", "conversions.toml", "--junitxml", "gate.xml", *arguments)


def failed(result: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted(line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED "))


def test_the_manifest_lists_every_committed_record() -> None:
    """Held here so that a converter added to the registry (and so to fixtures/gate) is gated below too."""
    records = sorted(p.stem for p in (GATE / "goldens").glob("*.json"))
    assert records == sorted(ENTRIES), "fixtures/gate is not the registry's: python -m fixtures.gate (tox -e regen)"
    assert (GATE / "conversions.toml").read_text().count("[[conversion]]") == len(ENTRIES)


def test_every_entry_passes_from_its_record_alone_and_says_so(project: Path, pytester: pytest.Pytester) -> None:
    result = gate(pytester, project, "--conversions-golden-only")
    assert result.returncode == 0, result.stdout[-3000:]
    cases, properties = junit_cases(project / "gate.xml"), junit_properties(project / "gate.xml")
    for entry in ENTRIES:
        made = json.loads((project / "goldens" / f"{entry}.json").read_text())["made"]
        assert f"conversions.toml::{entry}: checked against {RECORD} (record made {made})" in result.stdout
        assert by_entry(cases, entry) == dict.fromkeys(CHECKS, "passed")
        outputs = properties[(f"conversions.toml.{entry}", OUTPUTS)]
        assert outputs["against"] == RECORD and outputs["record_made"] == f"record made {made}"
        assert 0 <= float(outputs["largest_difference"]) <= float(outputs["tolerance"]) < 1e-3


def test_without_its_original_an_entry_is_held_to_its_record(project: Path, pytester: pytest.Pytester) -> None:
    """The manifest names originals this checkout does not hold: no flag is needed to gate on the records."""
    result = gate(pytester, project, "--collect-only", "-q")
    collected = [line for line in result.stdout.splitlines() if line.startswith("conversions.toml::")]
    assert collected == [f"conversions.toml::{entry}::{check}" for entry in ENTRIES for check in CHECKS]


def rewrite_tensor(directory: Path, change: str) -> str:
    """One tensor of ``directory``'s weights changed (``bytes``: one value moved by 1e-3; ``dtype``; ``removed``;
    ``added``); the key it changed."""
    path = directory / "model.safetensors"
    tensors = load_file(path)
    key = sorted(k for k in tensors if k.endswith(".weight"))[1]
    if change == "bytes":
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[7] += 1e-3
    elif change == "dtype":
        tensors[key] = tensors[key].double()
    elif change == "removed":
        del tensors[key]
    else:
        key = "extra.weight"
        tensors[key] = torch.ones(3)
    save_file(tensors, path, metadata={"format": "pt"})
    return key


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("bytes", "{key} is not the recorded tensor: its bytes differ"),
        ("dtype", "{key} is not the recorded tensor: it is torch.float64 {shape}, recorded torch.float32 {shape}"),
        ("removed", "lacks {key}, which the record holds"),
        ("added", "holds {key}, which the record does not"),
    ],
)
def test_a_changed_tensor_is_named_from_the_record(
    project: Path, pytester: pytest.Pytester, change: str, said: str
) -> None:
    directory = project / "converted" / "s3prl-example"
    shape = None
    key = rewrite_tensor(directory, change)
    if change == "dtype":
        shape = list(load_file(directory / "model.safetensors")[key].shape)
    result = gate(pytester, project, "--conversions-golden-only", "-k", "s3prl-example")
    assert failed(result)[:1] == [f"conversions.toml::s3prl-example::{TENSORS}"], result.stdout[-3000:]
    assert said.format(key=key, shape=shape) in result.stdout


def edit_json(path: Path, **fields: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_a_changed_config_field_is_named_with_both_values(project: Path, pytester: pytest.Pytester) -> None:
    edit_json(project / "converted" / "ast-example" / "config.json", layer_norm_eps=1e-12)
    result = gate(pytester, project, "--conversions-golden-only", "-k", "ast-example")
    assert failed(result) == [f"conversions.toml::ast-example::{FIELDS}"], result.stdout[-3000:]
    assert "config.json layer_norm_eps 1e-12, recorded 1e-06" in result.stdout


def test_a_changed_extractor_field_is_named_and_located_at_the_input(project: Path, pytester: pytest.Pytester) -> None:
    path = project / "converted" / "s3prl-sequence" / "preprocessor_config.json"
    normalizes = json.loads(path.read_text())["do_normalize"]
    edit_json(path, do_normalize=not normalizes)
    result = gate(pytester, project, "--conversions-golden-only", "-k", "s3prl-sequence")
    assert failed(result) == [f"conversions.toml::s3prl-sequence::{check}" for check in (FIELDS, OUTPUTS)]
    assert f"preprocessor_config.json do_normalize {not normalizes}, recorded {normalizes}" in result.stdout
    assert "; first moved: input of voice-loud-1.2s" in result.stdout


def test_a_transformers_release_that_computes_otherwise_is_caught_and_located(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: transformers' GELU computed with the tanh approximation. The directory is untouched, so only the
    outputs check fails, naming where they first moved: the AST's first MLP, the wav2vec2 feature encoder, the
    Whisper encoder's first block (its convolutions call torch's GELU, not transformers')."""
    from transformers.activations import GELUActivation

    monkeypatch.setattr(GELUActivation, "forward", lambda self, x: torch.nn.functional.gelu(x, approximate="tanh"))
    result = gate(pytester, project, "--conversions-golden-only")
    assert failed(result) == sorted(f"conversions.toml::{entry}::{OUTPUTS}" for entry in ENTRIES), result.stdout[-3000:]
    assert "on voice-loud-10.5s (tolerance 8." in result.stdout  # the AST's: its verification's, less what was spent
    for where in ("block 0 MLP", "feature encoder", "encoder block 0"):
        assert f"; first moved: {where} (" in result.stdout


def test_golden_only_refuses_an_entry_without_a_record(project: Path, pytester: pytest.Pytester) -> None:
    manifest = project / "conversions.toml"
    manifest.write_text(manifest.read_text().replace('golden = "goldens/s3prl-example.json"\n', ""))
    result = gate(pytester, project, "--conversions-golden-only")
    assert failed(result) == ["conversions.toml::s3prl-example::entry"]
    assert "(s3prl-example) has no golden record (a `golden` key): --conversions-golden-only" in result.stdout
    assert by_entry(junit_cases(project / "gate.xml"), "ast-example") == dict.fromkeys(CHECKS, "passed")


def test_a_missing_record_is_said_once_in_the_manifests_terms(project: Path, pytester: pytest.Pytester) -> None:
    (project / "goldens" / "ast-example.json").unlink()
    result = gate(pytester, project, "--conversions-golden-only", "-k", "ast-example")
    cases = by_entry(junit_cases(project / "gate.xml"), "ast-example")
    assert list(cases.values()) == ["failed"] + ["skipped"] * (len(CHECKS) - 1)
    assert "entry 'ast-example': golden record " in result.stdout
    assert "ast-example.json does not exist: a verification against the original makes it" in result.stdout


def test_a_missing_directory_is_said_in_the_manifests_terms(project: Path, pytester: pytest.Pytester) -> None:
    manifest = project / "conversions.toml"
    manifest.write_text(manifest.read_text().replace('"converted/ast-example"', '"../work/not-there"'))
    result = gate(pytester, project, "--conversions-golden-only", "-k", "ast-example")
    said = "entry 'ast-example': model '../work/not-there' is neither a local directory nor a hub name (ORG/NAME)"
    assert result.stdout.count(said) == 1, result.stdout[-3000:]


def shard_of(nodeid: str, shards: int) -> int:
    """pytest-shard's own assignment (``sha256hash(item.nodeid) % num_shards``)."""
    return int.from_bytes(hashlib.sha256(nodeid.encode()).digest(), "little") % shards


def test_sharded_jobs_keep_each_entry_whole(project: Path, pytester: pytest.Pytester) -> None:
    """pytest-shard hashes each item's node id: by its checks' own, entries would be split across jobs (held below,
    so that this test can fail); by their entry's, each entry's checks are one job's."""
    shards = 3
    everything = [f"conversions.toml::{entry}::{check}" for entry in ENTRIES for check in CHECKS]
    assert any(len({shard_of(f"conversions.toml::{e}::{c}", shards) for c in CHECKS}) > 1 for e in ENTRIES)
    jobs = []
    for shard in range(shards):
        result = gate(pytester, project, "--collect-only", "-q", "--num-shards", str(shards), "--shard-id", str(shard))
        jobs.append([line for line in result.stdout.splitlines() if line.startswith("conversions.toml::")])
    assert sorted(nodeid for job in jobs for nodeid in job) == sorted(everything)
    for entry, job in ((e, j) for e in ENTRIES for j in jobs):
        held = [nodeid for nodeid in job if nodeid.startswith(f"conversions.toml::{entry}::")]
        assert held in ([], [f"conversions.toml::{entry}::{check}" for check in CHECKS])
        assert not held or shard_of(f"conversions.toml::{entry}", shards) == jobs.index(job)


@pytest.mark.process  # what a fresh interpreter imports
def test_a_golden_only_gate_imports_no_reference_implementation(project: Path) -> None:
    script = (
        "import sys, pytest\n"
        "code = pytest.main(['--conversions', 'conversions.toml', '--conversions-golden-only', '-q', '-p',"
        " 'no:cacheprovider', '--rootdir', '.'])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'timm', 's3prl', 'torchaudio'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=600)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout[-3000:] + done.stderr[-2000:]
