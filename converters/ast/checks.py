"""The checks of one AST conversion, run as a pytest session by ``convert-ast-checkpoint``.

Each test is one check; the ``conversion`` fixture (``converters.ast.cli.ASTConversion``) comes from the
session's plugin. Fixtures that fail raise ConversionError, so every check that depends on them reports
the same one-line cause.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor, ASTForAudioClassification

from converters.ast.config import Backbone, backbone_of, feature_extractor, hf_config
from converters.ast.convert import Converted, check_shapes, convert, source_spec, target_spec, write
from converters.ast.labels import cached_hub_id2label
from converters.ast.mapping import AST_MAPPING
from converters.ast.original import OriginalAST, load_original
from converters.audio import probe_signal, read_audio
from converters.hub_layout import serialized_state
from converters.safe_load import as_state_dict, check_weights, load_checkpoint

LOGITS_ATOL = 1e-4  # transformers' AST integration test uses atol=1e-4 on the published slice


def dtype_tolerance(dtype: torch.dtype, scale: float) -> float:
    """What running in ``dtype`` costs: a few units of its rounding step at the logits' magnitude."""
    return max(LOGITS_ATOL, 4 * torch.finfo(dtype).eps * max(1.0, scale))


@pytest.fixture(scope="session")
def source(conversion: Any) -> dict[str, torch.Tensor]:
    return as_state_dict(load_checkpoint(conversion.checkpoint), str(conversion.checkpoint))


@pytest.fixture(scope="session")
def backbone(source: dict[str, torch.Tensor]) -> Backbone:
    return backbone_of(source)


@pytest.fixture(scope="session")
def converted(conversion: Any, source: dict[str, torch.Tensor]) -> Converted:
    return convert(source, conversion.variant, where=str(conversion.checkpoint))


@pytest.fixture(scope="session")
def staged(conversion: Any, converted: Converted) -> Any:
    write(converted, conversion.staging)
    return conversion.staging


@pytest.fixture(scope="session")
def reloaded(staged: Any) -> tuple[ASTForAudioClassification, dict[str, Any]]:
    loaded: Any = ASTForAudioClassification.from_pretrained(staged, output_loading_info=True)
    model, info = loaded
    return model.eval(), info


@pytest.fixture(scope="session")
def reloaded_float32(reloaded: tuple[ASTForAudioClassification, dict[str, Any]]) -> ASTForAudioClassification:
    """The written model in float32: the checkpoint's own values, compared without reduced-precision noise."""
    model, _ = reloaded
    return model if model.dtype == torch.float32 else copy.deepcopy(model).float()


@pytest.fixture(scope="session")
def original(conversion: Any, source: dict[str, torch.Tensor]) -> OriginalAST:
    return load_original(source, conversion.variant)


@pytest.fixture(scope="session")
def inputs(conversion: Any) -> dict[str, torch.Tensor]:
    """Spectrograms both models see: a structured probe signal, flat noise, and the sample if given."""
    extractor = feature_extractor(conversion.variant)
    features = {"probe signal": extractor(probe_signal(), sampling_rate=16000, return_tensors="pt").input_values}
    generator = torch.Generator().manual_seed(0)
    features["noise"] = 0.5 * torch.randn(1, conversion.variant.max_length, 128, generator=generator)
    if conversion.sample_audio is not None:
        waveform = read_audio(conversion.sample_audio)
        features["sample audio"] = extractor(waveform, sampling_rate=16000, return_tensors="pt").input_values
    return features


def test_source_loads_safely(source: dict[str, torch.Tensor]) -> None:
    """The checkpoint loaded with weights_only=True into a flat mapping of names to tensors."""
    assert source, "the checkpoint holds no tensors"


def test_source_weights_are_finite_floats(conversion: Any, source: dict[str, torch.Tensor]) -> None:
    check_weights(source, str(conversion.checkpoint))


def test_every_source_key_is_consumed(conversion: Any, source: dict[str, torch.Tensor]) -> None:
    AST_MAPPING.apply(source, where=str(conversion.checkpoint))


def test_source_shapes_fit_the_variant(conversion: Any, source: dict[str, torch.Tensor], backbone: Backbone) -> None:
    check_shapes(source, source_spec(hf_config(conversion.variant, backbone)), conversion.variant)


def test_every_target_key_is_produced(converted: Converted) -> None:
    expected = target_spec(converted.config)
    missing = sorted(expected.keys() - converted.tensors.keys())
    extra = sorted(converted.tensors.keys() - expected.keys())
    assert not missing and not extra, f"missing target keys {missing[:3]}, unexpected target keys {extra[:3]}"


def test_target_shapes_fit_the_config(converted: Converted) -> None:
    check_shapes(converted.tensors, target_spec(converted.config), converted.variant)


def test_written_files_reload_exactly(converted: Converted, reloaded: tuple[Any, dict[str, Any]]) -> None:
    model, info = reloaded
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    assert not any(problems.values()), f"from_pretrained reported {problems}"
    state = serialized_state(model)
    assert state.keys() == converted.tensors.keys()
    for key, tensor in converted.tensors.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), f"{key} changed on reload"


def test_feature_extractor_matches_the_recipe(conversion: Any, staged: Any) -> None:
    written = ASTFeatureExtractor.from_pretrained(staged)
    dataset = conversion.variant.dataset
    assert (written.mean, written.std, written.max_length) == (
        dataset.feature_mean,
        dataset.feature_std,
        dataset.max_length,
    ), f"preprocessor_config.json has mean {written.mean}, std {written.std}, max_length {written.max_length}"


@torch.no_grad()
def test_logits_match_the_original_implementation(
    reloaded_float32: ASTForAudioClassification, original: OriginalAST, inputs: dict[str, torch.Tensor], measure: Any
) -> None:
    worst = ("", 0.0)
    for name, features in inputs.items():
        difference = (reloaded_float32(input_values=features).logits - original(features)).abs().max().item()
        worst = max(worst, (name, difference), key=lambda item: item[1])
    measure(worst[1], LOGITS_ATOL)
    assert worst[1] <= LOGITS_ATOL, (
        f"logits differ from the original implementation by {worst[1]:.3g} on the {worst[0]} "
        f"(tolerance {LOGITS_ATOL:g})"
    )


@torch.no_grad()
def test_logits_in_the_checkpoint_dtype(
    reloaded: tuple[Any, dict[str, Any]], original: OriginalAST, inputs: dict[str, torch.Tensor], measure: Any
) -> None:
    """Run as written (float16 or bfloat16 stays so), the model is off by no more than its precision costs."""
    model, _ = reloaded
    if model.dtype == torch.float32:
        pytest.skip("float32 checkpoint: the check above runs it as written")
    worst = (0.0, LOGITS_ATOL)
    for features in inputs.values():
        reference = original(features)
        difference = (model(input_values=features.to(model.dtype)).logits.float() - reference).abs().max().item()
        tolerance = dtype_tolerance(model.dtype, reference.abs().max().item())
        worst = max(worst, (difference, tolerance), key=lambda item: item[0] / item[1])
    measure(*worst)
    assert worst[0] <= worst[1], f"{model.dtype} logits differ by {worst[0]:.3g} (tolerance {worst[1]:.3g})"


@torch.no_grad()
def test_logits_match_the_published_slice(
    conversion: Any, reloaded_float32: ASTForAudioClassification, inputs: dict[str, torch.Tensor], measure: Any
) -> None:
    if conversion.sample_audio is None:
        pytest.skip(f"no --sample_audio given (the slice was published for {conversion.variant.sample_audio})")
    logits = reloaded_float32(input_values=inputs["sample audio"]).logits[0, :3]
    expected = torch.tensor(conversion.variant.expected_slice)
    difference = (logits - expected).abs().max().item()
    measure(difference, LOGITS_ATOL)
    assert difference <= LOGITS_ATOL, (
        f"logits[0, :3] = {np.round(logits.numpy(), 4).tolist()} on {conversion.sample_audio}, "
        f"published {list(conversion.variant.expected_slice)} (difference {difference:.3g})"
    )


def test_labels_agree_with_the_hub_label_file(converted: Converted) -> None:
    hub = cached_hub_id2label(converted.variant.dataset)
    if hub is None:
        pytest.skip(f"{converted.variant.dataset.hub_label_file} is not in the local Hugging Face cache")
    assert hub == converted.config.id2label, "the package's labels and the cached hub label file disagree"
