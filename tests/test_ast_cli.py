"""``convert-ast-checkpoint`` end to end: a good conversion, and every kind of bad input refused.

Each refusal must exit non-zero with one line naming the cause, print no traceback, and write
nothing: no output directory, no staging directory left beside it. The command runs in this process
(its ``main``, as the console script calls it) except where the process itself matters: the installed
console script, and environment variables read by torch.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar
from xml.etree import ElementTree

import pytest
import torch

from converters.ast import convert as ast_convert
from converters.ast.conversion import LOGITS_ATOL, SAMPLE_REPO, dtype_tolerance
from converters.ast.labels import HUB_LABEL_REPO, id2label
from converters.ast.mapping import AST_MAPPING
from converters.ast.variants import AUDIOSET_SAMPLE, BY_NAME, VARIANTS
from converters.mapping import Chunk, KeyMapping
from fixtures import commands
from fixtures.commands import OUTPUT_FILES, CodeCarrier, assert_refused, check_result, final_message
from fixtures.inputs import SPEECH

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
COMMAND = "convert-ast-checkpoint"


def arguments(checkpoint: Path, output: Path, *extra: str, model_name: str = TENTEN.name) -> list[str]:
    return ["--model_name", model_name, "--checkpoint_path", str(checkpoint), "--pytorch_dump_folder_path",
            str(output), *extra]  # fmt: skip


def run(checkpoint: Path, output: Path, *extra: str, model_name: str = TENTEN.name,
        hub_cache: Path | None = None) -> commands.Result:  # fmt: skip
    return commands.run(COMMAND, *arguments(checkpoint, output, *extra, model_name=model_name), hub_cache=hub_cache)


def run_process(checkpoint: Path, output: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return commands.run_process(COMMAND, *arguments(checkpoint, output), env=env)


@pytest.fixture
def checkpoint(ast_checkpoint: Callable[..., Path]) -> Path:
    return ast_checkpoint(TENTEN)


@pytest.fixture
def state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)


@pytest.mark.process
@pytest.mark.interpreter
def test_the_installed_command_converts_a_good_checkpoint_with_a_passing_report(
    checkpoint: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = run_process(checkpoint, output)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert {p.name for p in output.iterdir()} == OUTPUT_FILES["ast"]
    for check in (
        "test_source_loads_safely",
        "test_every_source_key_is_consumed",
        "test_written_files_reload_exactly",
        "test_outputs_match_the_original_implementation",
    ):
        assert check_result(result.stdout, check) == "passed"
    assert check_result(result.stdout, "test_logits_match_the_published_slice") == "skipped"
    assert "no --sample_audio given" in result.stdout
    assert final_message(result.stdout) == f"{COMMAND}: wrote {output}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging-")]


def test_the_published_slice_is_checked_when_a_sample_is_given(checkpoint: Path, tmp_path: Path) -> None:
    """A synthetic checkpoint cannot reproduce the published logits: the check runs, fails, blocks output."""
    output = tmp_path / "out"
    result = run(checkpoint, output, "--sample_audio", str(SPEECH))
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert_refused(result, output, "test_logits_match_the_published_slice", "published")
    assert not output.exists()


def test_a_pickle_carrying_code_is_refused_without_running_it_even_when_torch_is_told_to_run_pickles(
    state: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns off weights_only where a call leaves it unset (torch reads it on
    each load): the command passes it explicitly. (Without the variable: tests/test_converters.py.)"""
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({**state, "module.v.extra": CodeCarrier(marker)}, hostile)
    output = tmp_path / "out"
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    result = run(hostile, output)
    assert_refused(result, output, str(hostile), "system")
    assert not marker.exists(), "the checkpoint's code ran"
    assert not output.exists()


@pytest.mark.parametrize("damage", ["random-bytes", "empty"])  # truncated: tests/test_converters.py
def test_a_damaged_file_is_refused(checkpoint: Path, tmp_path: Path, damage: str) -> None:
    data = checkpoint.read_bytes()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(
        {"truncated": data[: len(data) // 2], "random-bytes": random.Random(0).randbytes(4096), "empty": b""}[damage]
    )
    output = tmp_path / "out"
    assert_refused(run(broken, output), output, str(broken))
    assert not output.exists()


@pytest.mark.parametrize(
    ("source_name", "claimed_name", "key"),
    [
        ("ast-finetuned-audioset-12-12-0.447", TENTEN.name, "module.v.pos_embed"),
        ("ast-finetuned-speech-commands-v2", TENTEN.name, "module.v.pos_embed"),
        (TENTEN.name, "ast-finetuned-audioset-16-16-0.442", "module.v.pos_embed"),
    ],
)
def test_a_checkpoint_of_another_variant_is_refused_naming_the_shape(
    ast_checkpoint: Callable[..., Path], tmp_path: Path, source_name: str, claimed_name: str, key: str
) -> None:
    output = tmp_path / "out"
    result = run(ast_checkpoint(BY_NAME[source_name]), output, model_name=claimed_name)
    assert_refused(result, output, key, "has shape", claimed_name)


def test_an_unknown_model_name_lists_the_supported_ones(checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    last = assert_refused(run(checkpoint, output, model_name="ast-finetuned-audioset-9-9"), output, "unknown model")
    assert all(v.name in last for v in VARIANTS)


def test_a_non_empty_output_directory_is_refused_without_overwrite(checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("user data")
    assert_refused(run(checkpoint, output), output, str(output), "--overwrite")
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_overwrite_replaces_the_output_directory_as_a_whole(checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.bin").write_text("from an older conversion")
    result = run(checkpoint, output, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in output.iterdir()} == OUTPUT_FILES["ast"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # what was not checked says why, in the report
    text = " ".join(result.stdout.split())
    assert ("hub:datasets/huggingface/label-files/audioset-id2label.json is not in the local Hugging Face cache; "
            "HF_HUB_OFFLINE=1 fetches nothing") in text  # fmt: skip
    assert ("no --sample_audio given, and hub:datasets/nielsr/audio-spectogram-transformer-checkpoint/"
            "sample_audio.flac is not in the local Hugging Face cache") in text  # fmt: skip
    # the checks' table, then what was written
    assert re.search(r"^check +result +difference +tolerance$", result.stdout, re.MULTILINE)
    assert re.search(
        r"^test_outputs_match_the_original_implementation +passed +\S+ +1e-04$", result.stdout, re.MULTILINE
    )
    assert final_message(result.stdout) == f"{COMMAND}: wrote {output}"


@pytest.mark.parametrize("agree", [True, False], ids=["matching", "disagreeing"])
def test_a_cached_hub_label_file_is_checked(
    checkpoint: Path, tmp_path: Path, hub_cache: Callable[[str, str, bytes], Path], agree: bool
) -> None:
    labels = id2label(TENTEN.dataset)
    if not agree:
        labels[0], labels[1] = labels[1], labels[0]
    assert TENTEN.dataset.hub_label_file is not None
    cache = hub_cache(HUB_LABEL_REPO, TENTEN.dataset.hub_label_file, json.dumps(labels).encode())
    output = tmp_path / "out"
    result = run(checkpoint, output, hub_cache=cache)
    if agree:
        assert result.returncode == 0, result.stderr[-2000:]
        assert check_result(result.stdout, "test_labels_agree_with_the_hub_label_file") == "passed"
    else:
        cause = "the package's labels and the cached hub label file disagree"
        assert_refused(result, output, "test_labels_agree_with_the_hub_label_file", cause)


def test_the_cached_hub_sample_audio_is_used_when_none_is_given(
    checkpoint: Path, tmp_path: Path, hub_cache: Callable[[str, str, bytes], Path]
) -> None:
    """The synthetic checkpoint cannot match the published slice, so finding the sample means refusing."""
    cache = hub_cache(SAMPLE_REPO, AUDIOSET_SAMPLE, SPEECH.read_bytes())
    output = tmp_path / "out"
    result = run(checkpoint, output, hub_cache=cache)
    assert_refused(result, output, "test_logits_match_the_published_slice")


def test_the_half_precision_tolerance_is_a_few_rounding_steps_at_the_logits_scale() -> None:
    assert dtype_tolerance(torch.float32, 100.0) == LOGITS_ATOL  # float32 runs within the published atol
    assert dtype_tolerance(torch.float16, 0.5) == 4 * 2**-10  # logits below 1 count as 1
    assert dtype_tolerance(torch.float16, 3.0) == 4 * 2**-10 * 3
    assert dtype_tolerance(torch.bfloat16, 1.0) == 4 * 2**-7


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_converts_faithfully(state: dict[str, torch.Tensor], tmp_path: Path, dtype: torch.dtype) -> None:
    from safetensors import safe_open

    torch.save({k: v.to(dtype) for k, v in state.items()}, tmp_path / "half.pth")
    output = tmp_path / "out"
    result = run(tmp_path / "half.pth", output)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for check in ("test_written_files_reload_exactly", "test_outputs_match_the_original_implementation",
                  "test_logits_in_the_checkpoint_dtype"):  # fmt: skip
        assert check_result(result.stdout, check) == "passed"
    with safe_open(output / "model.safetensors", "pt") as written:
        stored = {written.get_slice(key).get_dtype() for key in written.keys()}  # noqa: SIM118
    assert stored == {{torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]}
    assert json.loads((output / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")


@pytest.mark.parametrize(
    ("damage", "cause"),
    [("nan", "module.v.blocks.0.attn.qkv.weight holds 1 non-finite value"), ("mixed", "mixes dtypes")],
)
def test_bad_weights_are_refused_naming_the_tensor(
    state: dict[str, torch.Tensor], tmp_path: Path, damage: str, cause: str
) -> None:
    if damage == "nan":
        state["module.v.blocks.0.attn.qkv.weight"][3, 5] = float("nan")
    else:
        state["module.v.norm.weight"] = state["module.v.norm.weight"].half()
    torch.save(state, tmp_path / "bad.pth")
    output = tmp_path / "out"
    assert_refused(run(tmp_path / "bad.pth", output), output, cause)


def query_and_key_swapped(mapping: KeyMapping) -> KeyMapping:
    """The mapping with every fused qkv split sending q's rows to key and k's to query."""

    def swap(rule: Any) -> Any:
        return replace(rule, targets=(rule.targets[1], rule.targets[0], *rule.targets[2:]))

    fused = [rule for rule in mapping.rules if any(isinstance(op, Chunk) for op in rule.ops)]
    return KeyMapping(tuple(swap(rule) if rule in fused else rule for rule in mapping.rules))


def test_a_broken_mapping_is_refused_naming_the_first_diverging_stage(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ast_convert, "AST_MAPPING", query_and_key_swapped(AST_MAPPING))
    report = tmp_path / "checks.xml"
    result = run(checkpoint, tmp_path / "out", "--junitxml", str(report))
    assert_refused(result, tmp_path / "out", "test_outputs_match_the_original_implementation",
                   "first divergence at block 0 attention")  # fmt: skip
    assert "block 0 attention" in result.stdout and "<- first divergence" in result.stdout
    cases = ElementTree.parse(report).iter("testcase")
    assert [case.get("name") for case in cases if case.find("failure") is not None] == [
        "test_outputs_match_the_original_implementation"
    ]


class FakeHub:
    """huggingface_hub.HfApi as the command uses it; records calls, or fails the upload."""

    calls: ClassVar[list[tuple[str, dict[str, object]]]] = []
    failure: ClassVar[Exception | None] = None

    def create_repo(self, repo_id: str, **options: object) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **options}))

    def upload_folder(self, **options: object) -> None:
        if self.failure is not None:
            raise self.failure
        self.calls.append(("upload_folder", options))


@pytest.mark.parametrize("fails", [False, True], ids=["pushed", "push-fails"])
def test_push_to_hub_uploads_the_written_directory_once_every_check_passed(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    import huggingface_hub

    monkeypatch.setattr(FakeHub, "calls", [])
    monkeypatch.setattr(FakeHub, "failure", OSError("401 Client Error: Unauthorized\nmore detail") if fails else None)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    output = tmp_path / "out"
    result = run(checkpoint, output, "--push_to_hub", "someone/ast-converted")
    assert {p.name for p in output.iterdir()} == OUTPUT_FILES["ast"]  # written either way: the push comes after
    assert FakeHub.calls[0] == ("create_repo", {"repo_id": "someone/ast-converted", "exist_ok": True})
    if fails:
        assert result.returncode == 1
        assert final_message(result.stderr) == (
            f"{COMMAND}: error: {output} was written, but pushing it to someone/ast-converted failed: "
            "401 Client Error: Unauthorized"
        )
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert FakeHub.calls[1] == ("upload_folder", {"folder_path": str(output), "repo_id": "someone/ast-converted"})
        assert final_message(result.stdout) == f"{COMMAND}: pushed {output} to someone/ast-converted"


@pytest.mark.parametrize("fault", ["dropped", "reshaped"])
def test_the_written_file_is_checked_against_transformers_model(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A writer that loses or reshapes tensors is caught on the file, before anything loads it."""
    real = ast_convert.write_safetensors

    def faulty(tensors: dict[str, torch.Tensor], path: Path) -> None:
        keys = sorted(tensors)[:4]
        if fault == "dropped":
            tensors = {k: v for k, v in tensors.items() if k not in keys}
        else:
            tensors = {**tensors, keys[0]: tensors[keys[0]].reshape(-1)[:1].clone()}
        real(tensors, path)

    monkeypatch.setattr(ast_convert, "write_safetensors", faulty)
    output = tmp_path / "out"
    result = run(checkpoint, output)
    if fault == "dropped":
        converted = ast_convert.convert(torch.load(checkpoint, weights_only=True), TENTEN)
        missing = sorted(converted.tensors)[:3]
        assert_refused(
            result, output, "test_every_target_key_is_written", f"model.safetensors: missing {missing} target"
        )
    else:
        assert_refused(result, output, "test_written_shapes_fit_the_target", "has shape (1,)")
