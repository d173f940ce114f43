"""The checks of one AST conversion, run as a pytest session by ``convert-ast-checkpoint``.

Each test is one check; the ``conversion`` fixture (``converters.ast.cli.ASTConversion``) comes from the
session's plugin. Fixtures that fail raise ConversionError, so every check that depends on them reports
the same one-line cause.
"""

from __future__ import annotations

import copy
import gc
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import ASTFeatureExtractor, ASTForAudioClassification

from converters.ast.config import Backbone, backbone_of, feature_extractor, hf_config
from converters.ast.convert import Converted, check_shapes, convert, source_spec, target_spec, write
from converters.ast.divergence import locate_divergence
from converters.ast.labels import cached_hub_id2label
from converters.ast.mapping import AST_MAPPING
from converters.ast.original import load_original
from converters.audio import probe_signal, read_audio
from converters.hub_layout import Digest, digests, serialized_state
from converters.mapping import key_difference
from converters.safe_load import as_state_dict, check_weights, load_checkpoint

LOGITS_ATOL = 1e-4  # transformers' AST integration test uses atol=1e-4 on the published slice


def dtype_tolerance(dtype: torch.dtype, scale: float) -> float:
    """What running in ``dtype`` costs: a few units of its rounding step at the logits' magnitude."""
    return max(LOGITS_ATOL, 4 * torch.finfo(dtype).eps * max(1.0, scale))


@dataclass(frozen=True)
class Staged:
    """What the checks keep of a written conversion: no tensors, so nothing holds the checkpoint's memory."""

    converted: Converted  # its tensors replaced by shape-only (meta) tensors
    digests: dict[str, Digest]


def load_source(conversion: Any) -> dict[str, torch.Tensor]:
    """The checkpoint, memory-mapped afresh: each check drops it when done, so the checkpoint and the
    written model are never in memory together."""
    return as_state_dict(load_checkpoint(conversion.checkpoint), str(conversion.checkpoint))


def release() -> None:
    gc.collect()  # models hold reference cycles: unmap the checkpoint now, not at some later allocation


@pytest.fixture(scope="session")
def backbone(conversion: Any) -> Backbone:
    return backbone_of(load_source(conversion))


@pytest.fixture(scope="session")
def staged(conversion: Any) -> Staged:
    converted = convert(load_source(conversion), conversion.variant, where=str(conversion.checkpoint))
    write(converted, conversion.staging)
    shapes = {key: torch.empty(t.shape, dtype=t.dtype, device="meta") for key, t in converted.tensors.items()}
    staged = Staged(replace(converted, tensors=shapes), digests(converted.tensors))
    del converted
    release()
    return staged


@pytest.fixture(scope="session")
def original_logits(conversion: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original implementation's logits on every input, computed before the written model is loaded."""
    with torch.no_grad():
        original = load_original(load_source(conversion), conversion.variant)
        logits = {name: original(features) for name, features in inputs.items()}
    del original
    release()
    return logits


@pytest.fixture(scope="session")
def reloaded(
    conversion: Any, staged: Staged, original_logits: dict[str, torch.Tensor]
) -> tuple[ASTForAudioClassification, dict[str, Any]]:
    # after original_logits: the original model and the checkpoint are gone before this one loads
    # dtype="auto": as written (float16 stays float16); 5.x's default, while 4.x would widen to float32
    loaded: Any = ASTForAudioClassification.from_pretrained(conversion.staging, dtype="auto", output_loading_info=True)
    model, info = loaded
    return model.eval(), info


@pytest.fixture(scope="session")
def reloaded_float32(reloaded: tuple[ASTForAudioClassification, dict[str, Any]]) -> ASTForAudioClassification:
    """The written model in float32: the checkpoint's own values, compared without reduced-precision noise."""
    model, _ = reloaded
    return model if model.dtype == torch.float32 else copy.deepcopy(model).float()


@pytest.fixture(scope="session")
def inputs(conversion: Any) -> dict[str, torch.Tensor]:
    """Spectrograms both models see: a structured probe signal, and the sample if given.

    The probe fills the model's whole input (``max_length`` frames of 10 ms), so that every position and
    every patch sees structure; a second, noise input would double the check's cost (each AST forward is
    most of a conversion's time) without reaching a weight the probe does not.
    """
    extractor = feature_extractor(conversion.variant)
    seconds = (conversion.variant.max_length + 2) / 100  # 10 ms hop, 25 ms window
    probe = extractor(probe_signal(seconds), sampling_rate=16000, return_tensors="pt").input_values
    features = {"probe signal": probe}
    if conversion.sample_audio is not None:
        waveform = read_audio(conversion.sample_audio)
        features["sample audio"] = extractor(waveform, sampling_rate=16000, return_tensors="pt").input_values
    return features


def test_source_loads_safely(conversion: Any) -> None:
    """The checkpoint loaded with weights_only=True into a flat mapping of names to tensors."""
    assert load_source(conversion), "the checkpoint holds no tensors"


def test_source_weights_are_finite_floats(conversion: Any) -> None:
    check_weights(load_source(conversion), str(conversion.checkpoint))


def test_every_source_key_is_consumed(conversion: Any) -> None:
    AST_MAPPING.apply(load_source(conversion), where=str(conversion.checkpoint))


def test_source_shapes_fit_the_variant(conversion: Any, backbone: Backbone) -> None:
    check_shapes(load_source(conversion), source_spec(hf_config(conversion.variant, backbone)), conversion.variant)


def written_shapes(conversion: Any) -> dict[str, torch.Tensor]:
    """The written model.safetensors as shape-only tensors, read from its header."""
    with safe_open(conversion.staging / "model.safetensors", "pt") as written:
        return {key: torch.empty(written.get_slice(key).get_shape(), device="meta") for key in written.keys()}  # noqa: SIM118


def test_every_target_key_is_written(conversion: Any, staged: Staged) -> None:
    """The written file holds exactly the keys transformers' model for this config has."""
    difference = key_difference(written_shapes(conversion), target_spec(staged.converted.config))
    assert not difference, f"model.safetensors: {difference} target keys"


def test_written_shapes_fit_the_config(conversion: Any, staged: Staged) -> None:
    converted = staged.converted
    check_shapes(written_shapes(conversion), target_spec(converted.config), converted.variant)


def test_written_files_reload_exactly(staged: Staged, reloaded: tuple[Any, dict[str, Any]]) -> None:
    model, info = reloaded
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    assert not any(problems.values()), f"from_pretrained reported {problems}"
    written = digests(serialized_state(model))
    assert written.keys() == staged.digests.keys()
    for key, digest in staged.digests.items():
        assert written[key] == digest, f"{key} changed on reload"


def test_feature_extractor_matches_the_recipe(conversion: Any, staged: Staged) -> None:
    written = ASTFeatureExtractor.from_pretrained(conversion.staging)
    dataset = conversion.variant.dataset
    assert (written.mean, written.std, written.max_length) == (
        dataset.feature_mean,
        dataset.feature_std,
        dataset.max_length,
    ), f"preprocessor_config.json has mean {written.mean}, std {written.std}, max_length {written.max_length}"


@torch.no_grad()
def test_logits_match_the_original_implementation(
    conversion: Any,
    reloaded_float32: ASTForAudioClassification,
    original_logits: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    measure: Any,
) -> None:
    worst = ("", 0.0)
    for name, features in inputs.items():
        difference = (reloaded_float32(input_values=features).logits - original_logits[name]).abs()
        worst = max(worst, (name, difference.nan_to_num(nan=math.inf).max().item()), key=lambda item: item[1])
    measure(worst[1], LOGITS_ATOL)
    if worst[1] > LOGITS_ATOL:
        # Say where: rebuild the original (it was freed) and run both models stage by stage on that input.
        original = load_original(load_source(conversion), conversion.variant)
        divergence = locate_divergence(original, reloaded_float32, inputs[worst[0]], LOGITS_ATOL)
        pytest.fail(
            f"logits differ from the original implementation by {worst[1]:.3g} on the {worst[0]} "
            f"(tolerance {LOGITS_ATOL:g}); {divergence.summary()}\n{divergence.table()}"
        )


@torch.no_grad()
def test_logits_in_the_checkpoint_dtype(
    reloaded: tuple[Any, dict[str, Any]],
    original_logits: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    measure: Any,
) -> None:
    """Run as written (float16 or bfloat16 stays so), the model is off by no more than its precision costs."""
    model, _ = reloaded
    if model.dtype == torch.float32:
        pytest.skip("float32 checkpoint: the check above runs it as written")
    worst = (0.0, LOGITS_ATOL)
    for name, features in inputs.items():
        reference = original_logits[name]
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


def test_labels_agree_with_the_hub_label_file(staged: Staged) -> None:
    converted = staged.converted
    hub = cached_hub_id2label(converted.variant.dataset)
    if hub is None:
        pytest.skip(f"{converted.variant.dataset.hub_label_file} is not in the local Hugging Face cache")
    assert hub == converted.config.id2label, "the package's labels and the cached hub label file disagree"
