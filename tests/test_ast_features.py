"""What an AST directory does to a recording is what the original repository's pipeline does: kaldi fbank,
padded or cut to the model's length, ``(x - mean) / (2 * std)``; checked from recordings, through the command.

The original's fbank is torchaudio's: computed live where torchaudio loads (``tox -e ast-torchaudio``, torch
2.11.0 with torchaudio 2.11.0), else read from ``converters/data/recordings.npz``, which that same code wrote
(``tests/test_recordings.py`` holds the file to it there). transformers' ASTFeatureExtractor computes its own
numpy fbank where torchaudio is not installed: both paths are held to the original here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor

from converters.ast.conversion import MODEL_RECORDING
from converters.ast.features import (
    original_fbank,
    original_features,
    tolerance,
    torchaudio_fbank,
    transformers_fbank,
)
from converters.ast.variants import BY_NAME, VARIANTS, Variant
from converters.recordings import RECORDINGS, metadata
from fixtures import commands
from fixtures.commands import assert_refused, check_result
from fixtures.seed_style import ast_directory

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
AST = "convert-ast-checkpoint"
AST_RECORDINGS = [recording for recording in RECORDINGS if recording.ast]


def convert(checkpoint: Path, variant: Variant, output: Path, *extra: str) -> commands.Result:
    return commands.run(AST, "--model_name", variant.name, "--checkpoint_path", str(checkpoint),
                        "--pytorch_dump_folder_path", str(output), *extra)  # fmt: skip


def verify(checkpoint: Path, directory: Path, *extra: str) -> commands.Result:
    return commands.run(AST, "--model_name", TENTEN.name, "--checkpoint_path", str(checkpoint), "--verify",
                        str(directory), *extra)  # fmt: skip


def input_lines(stdout: str) -> dict[str, tuple[float, float]]:
    """Each recording's input-stage line under the table: (largest difference, tolerance)."""
    text = " ".join(stdout.split())
    found = re.findall(r"(sample audio|[\w.-]+) \([\d.]+ s[^)]*\): largest difference (\S+) \(tolerance (\S+)\)", text)
    return {name: (float(difference), float(limit)) for name, difference, limit in found}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_every_variant_computes_the_originals_function_from_the_recording(
    variant: Variant, ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    result = convert(ast_checkpoint(variant), variant, tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    text = " ".join(result.stdout.split())
    assert f"features: transformers' ASTFeatureExtractor computed {transformers_fbank()};" in text
    stored = "" if torchaudio_fbank() else f"{metadata()['torchaudio']}, stored"
    assert f"kaldi fbank from torchaudio {stored}" in text
    compared = input_lines(result.stdout)
    assert set(compared) == {recording.name for recording in AST_RECORDINGS}
    for name, (difference, limit) in compared.items():
        assert difference <= limit, name
        if torchaudio_fbank() is not None:  # transformers calls the same function with the same settings
            assert difference == 0.0, name
    assert "outputs from the recording: largest difference " in text and f"on {MODEL_RECORDING} " in text


def test_the_features_tolerance_is_twice_the_float32_rounding_of_the_originals_fbank() -> None:
    """Derived from what tools/recordings.py measured (torchaudio's float32 fbank against float64), in normalized
    units; transformers' numpy fbank (float64 inside) sits within it, and a real mistake sits far beyond."""
    rounding = metadata()["float32_rounding"]
    assert tolerance(128, 4.5689974) == pytest.approx(2 * rounding["128"] / (2 * 4.5689974))
    assert 1e-5 < tolerance(128, 4.5689974) < 1e-3
    extractor = ASTFeatureExtractor(mean=TENTEN.dataset.feature_mean, std=TENTEN.dataset.feature_std)
    for recording in AST_RECORDINGS:
        fbank, _ = original_fbank(recording.waveform(), 128, recording)
        original = original_features(fbank, 1024, TENTEN.dataset.feature_mean, TENTEN.dataset.feature_std)
        ours = extractor(recording.waveform(), sampling_rate=16000, return_tensors="pt").input_values
        assert (ours - original).abs().max().item() <= tolerance(128, TENTEN.dataset.feature_std), recording.name
        # the smallest mistake a recipe makes: another recipe's statistics, or transformers' own 16-bit scaling
        other = original_features(fbank, 1024, -6.6268077, 5.358466)
        assert (other - original).abs().max().item() > 100 * tolerance(128, TENTEN.dataset.feature_std)


def test_the_originals_padding_cutting_and_normalization() -> None:
    fbank = torch.arange(12.0).reshape(4, 3)
    padded = original_features(fbank, 6, mean=1.0, std=0.5)
    assert padded.shape == (1, 6, 3) and torch.equal(padded[0, 4:], torch.full((2, 3), -1.0))
    assert torch.equal(padded[0, :4], fbank - 1.0)
    assert torch.equal(original_features(fbank, 2, mean=0.0, std=0.5)[0], fbank[:2])


@pytest.mark.parametrize(("field", "value", "words"), [
    ("mean", -6.845978, "preprocessor_config.json mean -6.845978, the original computes with -4.2677393"),
    ("std", 5.5654526, "preprocessor_config.json std 5.5654526, the original computes with 4.5689974"),
    ("do_normalize", False, "preprocessor_config.json do_normalize False, the original computes with True"),
    ("num_mel_bins", 64, "preprocessor_config.json num_mel_bins 64, the original computes with 128"),
    ("max_length", 512, "preprocessor_config.json max_length 512, the original computes with 1024"),
])  # fmt: skip
def test_a_directory_whose_extractor_computes_other_features_is_named_at_the_input_and_fixed(
    field: str, value: object, words: str, ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Its weights and config are the converter's: the field is named, the locator's first divergence is the input
    (never a model stage: the model stages, run on the original's features, agree), and --fix-config's copy
    verifies."""
    checkpoint = ast_checkpoint(TENTEN)
    directory = ast_directory(checkpoint, TENTEN, tmp_path / "seed", eps=1e-6)
    extractor = json.loads((directory / "preprocessor_config.json").read_text())
    (directory / "preprocessor_config.json").write_text(json.dumps({**extractor, field: value}))
    result = verify(checkpoint, directory)
    assert_refused(result, tmp_path / "none", words)
    text = " ".join(result.stdout.split())
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "failed"
    assert "first divergence at input features" in text
    assert re.search(r"final norm \S+ \S+ head", text), "the model side was located too"
    fixed = tmp_path / "fixed"
    result = verify(checkpoint, directory, "--fix-config", str(fixed))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert json.loads((fixed / "preprocessor_config.json").read_text())[field] == extractor[field]


def test_a_directory_without_an_extractor_is_refused_naming_the_file(
    ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    checkpoint = ast_checkpoint(TENTEN)
    directory = ast_directory(checkpoint, TENTEN, tmp_path / "seed", eps=1e-6)
    (directory / "preprocessor_config.json").unlink()
    result = verify(checkpoint, directory)
    assert_refused(result, tmp_path / "none", "preprocessor_config.json")


def test_without_torchaudio_a_recording_of_the_users_own_is_compared_on_the_model_side(
    ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """The sample audio's fbank can be computed only by torchaudio: where it does not load, both models take the
    features the converter's extractor computes, and the report says so."""
    if torchaudio_fbank() is not None:
        pytest.skip("torchaudio loads here: the sample's original features are computed (the test below)")
    from fixtures.inputs import SPEECH

    result = convert(ast_checkpoint(TENTEN), TENTEN, tmp_path / "out", "--sample_audio", str(SPEECH))
    text = " ".join(result.stdout.split())
    assert "sample audio" not in input_lines(result.stdout)
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert "the original's input from" in text


def test_with_torchaudio_a_recording_of_the_users_own_is_compared_at_the_input_too(
    ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    if torchaudio_fbank() is None:
        pytest.skip("torchaudio does not load beside this torch: tox -e ast-torchaudio runs this")
    from fixtures.inputs import SPEECH

    result = convert(ast_checkpoint(TENTEN), TENTEN, tmp_path / "out", "--sample_audio", str(SPEECH))
    limit = tolerance(128, TENTEN.dataset.feature_std)
    assert input_lines(result.stdout)["sample audio"] == (0.0, pytest.approx(limit, rel=1e-2))


def test_the_stored_fbank_is_used_only_for_the_recordings_and_bins_it_holds() -> None:
    waveform = np.zeros(16000, dtype=np.float32)
    if torchaudio_fbank() is None:
        assert original_fbank(waveform, 128)[0] is None
        assert original_fbank(AST_RECORDINGS[0].waveform(), 80, AST_RECORDINGS[0])[1] == (
            f"torchaudio does not load here and no stored fbank holds 80 mel bins of {AST_RECORDINGS[0].name}"
        )
    else:
        assert original_fbank(waveform, 80)[0].shape == (98, 80)
