"""The converted model computes what the original computed, for every published variant.

The reference is the original model rebuilt on timm's DeiT (converters/ast/original.py) and loaded
under the original's own key names; the converted side is written to disk and read back with
``from_pretrained``, as a user would. Weights are synthetic and every tensor is distinct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import ASTForAudioClassification

from converters.ast.convert import Converted, convert, write
from converters.ast.original import OriginalAST, load_original
from converters.ast.variants import BY_NAME, VARIANTS, Variant
from converters.safe_load import as_state_dict, load_checkpoint
from fixtures.inputs import noise_features, speech_features

ATOL = 1e-4
SIZES = [pytest.param("tiny", id="tiny"), pytest.param("full", id="full", marks=pytest.mark.slow)]
TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]


def load(path: Path) -> dict[str, torch.Tensor]:
    return as_state_dict(load_checkpoint(path), str(path))


def hf_model(converted: Converted, directory: Path) -> ASTForAudioClassification:
    write(converted, directory)
    return ASTForAudioClassification.from_pretrained(directory).eval()


@torch.no_grad()
def largest_difference(hf: ASTForAudioClassification, original: OriginalAST, variant: Variant) -> float:
    inputs = torch.cat([speech_features(variant), noise_features(variant)])
    return (hf(input_values=inputs).logits - original(inputs)).abs().max().item()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_converted_logits_equal_the_original(
    variant: Variant,
    size: str,
    ast_checkpoint: Callable[..., Path],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    state = load(ast_checkpoint(variant, size))
    difference = largest_difference(hf_model(convert(state, variant), tmp_path), load_original(state, variant), variant)
    record_property("largest_logit_difference", difference)
    assert difference <= ATOL, f"{variant.name} ({size}): logits differ by {difference:.3g}"


@pytest.fixture
def tenten(ast_checkpoint: Callable[..., Path]) -> tuple[dict[str, torch.Tensor], Converted, OriginalAST]:
    state = load(ast_checkpoint(TENTEN))
    return state, convert(state, TENTEN), load_original(state, TENTEN)


def swapped(converted: Converted, first: str, second: str) -> Converted:
    tensors = dict(converted.tensors)
    for suffix in ("weight", "bias"):
        a, b = f"{first}.{suffix}", f"{second}.{suffix}"
        tensors[a], tensors[b] = converted.tensors[b], converted.tensors[a]
    return replace(converted, tensors=tensors)


LAYER = "audio_spectrogram_transformer.encoder.layer.1."


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (LAYER + "attention.attention.query", LAYER + "attention.attention.key"),
        (LAYER + "layernorm_before", LAYER + "layernorm_after"),
        ("audio_spectrogram_transformer.layernorm", "classifier.layernorm"),
    ],
    ids=["query-key", "norm1-norm2", "final-norm-head-norm"],
)
def test_a_swapped_mapping_is_detected(tenten: tuple, first: str, second: str, tmp_path: Path) -> None:
    """The synthetic weights are distinct enough that a mix-up moves logits far past the tolerance."""
    _, converted, original = tenten
    assert largest_difference(hf_model(swapped(converted, first, second), tmp_path), original, TENTEN) > 100 * ATOL


def test_layer_norm_eps_is_the_original(tenten: tuple, tmp_path: Path) -> None:
    """The converter's eps (1e-6) reproduces the original; transformers' default (1e-12) does not.

    transformers has one eps for all norms, and the original's head norm alone uses torch's 1e-5: that
    is the whole residual difference, so the comparison aligns it in the original (and measures it).
    """
    _, converted, original = tenten
    hf = hf_model(converted, tmp_path)
    as_published = largest_difference(hf, original, TENTEN)
    original.head_norm.eps = 1e-6
    aligned = largest_difference(hf, original, TENTEN)
    converted.config.layer_norm_eps = 1e-12
    default_eps = largest_difference(hf_model(converted, tmp_path / "default"), original, TENTEN)
    print(f"head eps 1e-5 (as published): {as_published:.3g}; aligned: {aligned:.3g}; eps 1e-12: {default_eps:.3g}")
    assert aligned < 1e-6 < as_published <= ATOL, "the head norm's eps is not the only residual difference"
    assert default_eps > 1e-6, "eps 1e-12 should be measurably off the original here"
