"""The divergence locator names the first AST stage where a converted model leaves the original.

Each test breaks a faithful conversion on purpose, the way a wrong mapping rule or config would, and
checks that the locator names the stage the mistake first touches, every stage before it agreeing.
The backbone has six blocks, so that "block 5" exists; every weight is distinct (fixtures/randomize.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import ASTForAudioClassification

from converters.ast.config import Backbone
from converters.ast.convert import Converted, convert, write
from converters.ast.example import original_model, original_state_dict
from converters.ast.original import OriginalAST, load_original
from converters.ast.stages import ATOL, HEAD_NOTE, RTOL, hf_layers, locate_divergence
from converters.ast.variants import BY_NAME
from fixtures.inputs import speech_features

SPEECH_COMMANDS = BY_NAME["ast-finetuned-speech-commands-v2"]  # 128 frames: the cheapest variant to run
SIX_BLOCKS = Backbone(hidden_size=128, num_layers=6, intermediate_size=256)
LOGITS_ATOL = 1e-4
LAYER = "audio_spectrogram_transformer.encoder.layer.{}."
EMBEDDINGS = "audio_spectrogram_transformer.embeddings."


@pytest.fixture(scope="module")
def faithful() -> tuple[OriginalAST, Converted]:
    original = original_model(SPEECH_COMMANDS, SIX_BLOCKS)
    return original, convert(original_state_dict(original), SPEECH_COMMANDS)


def written(converted: Converted, directory: Path) -> ASTForAudioClassification:
    write(converted, directory)
    return ASTForAudioClassification.from_pretrained(directory).eval()


def swapped(first: str, second: str) -> Callable[[Converted], Converted]:
    """A mapping that sent ``first``'s weight and bias where ``second``'s belong, and back."""

    def apply(converted: Converted) -> Converted:
        tensors = dict(converted.tensors)
        for suffix in ("weight", "bias"):
            a, b = f"{first}.{suffix}", f"{second}.{suffix}"
            tensors[a], tensors[b] = converted.tensors[b], converted.tensors[a]
        return replace(converted, tensors=tensors)

    return apply


def transformed(key: str, change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Converted], Converted]:
    return lambda converted: replace(converted, tensors={**converted.tensors, key: change(converted.tensors[key])})


def with_eps(eps: float) -> Callable[[Converted], Converted]:
    def apply(converted: Converted) -> Converted:
        config = type(converted.config)(**converted.config.to_dict())
        config.layer_norm_eps = eps
        return replace(converted, config=config)

    return apply


BREAKS = [
    pytest.param(
        transformed(EMBEDDINGS + "patch_embeddings.projection.weight", lambda w: w.transpose(2, 3)),
        "patch embedding",
        id="patch-kernel-frequency-and-time-transposed",
    ),
    pytest.param(
        transformed(EMBEDDINGS + "position_embeddings", lambda p: torch.cat([p[:, :2], p[:, 2:].flip(1)], dim=1)),
        "positional embedding",
        id="patch-positions-reversed",
    ),
    pytest.param(
        swapped(LAYER.format(5) + "attention.attention.query", LAYER.format(5) + "attention.attention.key"),
        "block 5 attention",
        id="query-key-swapped-in-block-5",
    ),
    pytest.param(
        swapped(LAYER.format(2) + "layernorm_before", LAYER.format(2) + "layernorm_after"),
        "block 2 attention",
        id="norm1-norm2-swapped-in-block-2",
    ),
    pytest.param(
        swapped(LAYER.format(3) + "output.dense", LAYER.format(4) + "output.dense"),
        "block 3 MLP",
        id="fc2-of-blocks-3-and-4-swapped",
    ),
    pytest.param(
        swapped("audio_spectrogram_transformer.layernorm", "classifier.layernorm"),
        "final norm",
        id="final-norm-head-norm-swapped",
    ),
    pytest.param(transformed("classifier.dense.weight", lambda w: w.flip(0)), "head", id="label-rows-reversed"),
    pytest.param(with_eps(1e-12), "block 0 attention", id="eps-1e-12-transformers-default"),
    pytest.param(with_eps(1e-5), "block 0 attention", id="eps-1e-5-head-norm-eps-everywhere"),
]


@pytest.mark.parametrize(("mistake", "stage"), BREAKS)
def test_the_locator_names_the_stage_a_mistake_first_touches(
    faithful: tuple[OriginalAST, Converted], mistake: Callable[[Converted], Converted], stage: str, tmp_path: Path
) -> None:
    original, converted = faithful
    divergence = locate_divergence(
        original, written(mistake(converted), tmp_path), speech_features(SPEECH_COMMANDS), LOGITS_ATOL
    )
    first = divergence.first
    assert first is not None and first.stage == stage, divergence.table()
    names = [s.stage for s in divergence.stages]
    assert all(not s.diverged for s in divergence.stages[: names.index(stage)]), divergence.table()


def test_a_faithful_conversion_leaves_no_stage(faithful: tuple[OriginalAST, Converted], tmp_path: Path) -> None:
    """Every stage within 1e-9 in float64; only the head differs, by its eps, which the report says."""
    original, converted = faithful
    divergence = locate_divergence(original, written(converted, tmp_path), speech_features(SPEECH_COMMANDS), 1e-4)
    assert divergence.first is None, divergence.table()
    stages = {s.stage: s for s in divergence.stages}
    assert list(stages)[:4] == ["patch embedding", "positional embedding", "block 0 attention", "block 0 MLP"]
    assert list(stages)[-3:] == ["block 5 MLP", "final norm", "head"]
    assert len(stages) == 2 + 2 * SIX_BLOCKS.num_layers + 2
    assert max(s.difference for s in divergence.stages[:-1]) < 1e-12
    assert 1e-7 < stages["head"].difference <= LOGITS_ATOL and stages["head"].note == HEAD_NOTE
    # below the head, tolerances scale with each stage's magnitude: atol + rtol x largest |value|
    assert all(ATOL + RTOL * 1.0 < s.tolerance < ATOL + RTOL * 1e4 for s in divergence.stages[:-1])
    assert stages["head"].tolerance == 1e-4


def test_a_converted_model_with_fewer_blocks_diverges_after_the_last_shared_one(
    faithful: tuple[OriginalAST, Converted], tmp_path: Path
) -> None:
    original, converted = faithful
    model = written(converted, tmp_path)
    del hf_layers(model)[4:]  # a config with four blocks: the checkpoint's last two are not run
    divergence = locate_divergence(original, model, speech_features(SPEECH_COMMANDS), LOGITS_ATOL)
    names = [s.stage for s in divergence.stages]
    assert names[-4:] == ["block 3 attention", "block 3 MLP", "final norm", "head"]
    assert divergence.first is not None and divergence.first.stage == "final norm", divergence.table()


def test_the_blocks_are_found_in_the_transformers_4_layout() -> None:
    blocks = nn.ModuleList([nn.Identity()])
    model = SimpleNamespace(audio_spectrogram_transformer=SimpleNamespace(encoder=SimpleNamespace(layer=blocks)))
    assert hf_layers(model) is blocks
    newer = SimpleNamespace(audio_spectrogram_transformer=SimpleNamespace(layers=blocks, encoder=None))
    assert hf_layers(newer) is blocks


def test_the_locator_changes_neither_model(faithful: tuple[OriginalAST, Converted], tmp_path: Path) -> None:
    original, converted = faithful
    model = written(converted, tmp_path)
    locate_divergence(original, model, speech_features(SPEECH_COMMANDS), LOGITS_ATOL)
    assert model.dtype == torch.float32 and next(original.parameters()).dtype == torch.float32
    assert not model._forward_hooks and not any(m._forward_hooks for m in [*model.modules(), *original.modules()])


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_the_original_is_loaded_strictly(faithful: tuple[OriginalAST, Converted], change: str) -> None:
    """The reference holds exactly the checkpoint's tensors: one more or one fewer is an error, not a default."""
    original, _ = faithful
    state = original_state_dict(original)
    if change == "extra":
        state["module.v.extra.weight"] = torch.zeros(1)
    else:
        del state["module.v.norm.bias"]
    expected = r'Unexpected key\(s\) in state_dict: "v.extra.weight"' if change == "extra" else r"Missing key\(s\)"
    with pytest.raises(RuntimeError, match=expected):
        load_original(state, SPEECH_COMMANDS)
