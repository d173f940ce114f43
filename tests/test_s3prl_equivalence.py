"""Converted heads compute what s3prl's own heads compute, for every family and head.

Both sides are fed the same upstream hidden states (the converted model's own), s3prl's through its
Featurizer; s3prl's heads hold the checkpoint's Downstream weights under their own names. The two
differences by design are measured here, so that a change in either library shows up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.audio import probe_signal
from converters.s3prl.checkpoint import read
from converters.s3prl.convert import Target, base_attribute, build_model, convert_head, target_for
from converters.s3prl.example import ALL_CASES, FINAL_NORM_CASES, LARGE, SUPERB, TINY, S3PRLCase
from converters.s3prl.families import FAMILIES, Head
from converters.s3prl.original import featurizer, select
from converters.s3prl.preprocessing import feature_extractor
from converters.s3prl.stages import ATOL, compare_with_s3prl, s3prl_expert
from converters.s3prl.tasks import XVECTOR_DILATIONS, XVECTOR_KERNELS
from fixtures.inputs import speech
from fixtures.transformers_versions import gates

CASES = [
    pytest.param(family, head, id=family.model_class(head), marks=gates(family.name)) for family, head in ALL_CASES
]
# Every family's encoder that ends in a LayerNorm, every head, with a weighted sum and with the last layer only.
FINAL_NORM = [
    pytest.param(family, head, stable, weighted, id="-".join(
        (family.model_class(head), "stable" if stable else "as-is", "weighted" if weighted else "last")))
    for family, head, stable in FINAL_NORM_CASES for weighted in (True, False)
]  # fmt: skip
# Every family trained on its last layer only (-l), on the sequence head all of them have: no weighted sum,
# so 4.x's SEW padding-mask fault does not arise; 4.x's SEW-D loading fault does.
LAST_LAYER = [
    pytest.param(family, id=family.name, marks=gates(family.name) if family.name == "SEWD" else [])
    for family in FAMILIES
]
SIZES = [pytest.param(TINY, id="tiny"), pytest.param(SUPERB, id="superb", marks=pytest.mark.slow)]
WAV2VEC2 = FAMILIES[0]


def converted(case: S3PRLCase, directory: Path) -> tuple[Any, Target, Any]:
    """Convert as the command does (the config derived from the checkpoint), write, read back."""
    checkpoint = read(case.checkpoint)
    target = target_for(checkpoint, case.base)
    build_model(case.base, target, convert_head(checkpoint, target)).save_pretrained(directory)
    return target.model_class.from_pretrained(directory).eval(), target, checkpoint


def waveforms() -> list[Any]:
    return [speech()[:24000], probe_signal(0.8, seed=3)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("family", "head"), CASES)
def test_converted_head_equals_s3prl(
    family: Any, head: Head, size: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    case = s3prl_case(family, head, size)
    model, target, checkpoint = converted(case, tmp_path)
    divergence = compare_with_s3prl(model, checkpoint, target, feature_extractor(target.extractor)).divergence
    for stage in divergence.stages:
        record_property(f"largest difference: {stage.stage}", stage.difference)
    assert divergence.first is None, divergence.table()
    assert [stage.stage for stage in divergence.stages] == STAGE_NAMES[head]


@pytest.mark.parametrize(("family", "head", "stable", "weighted"), FINAL_NORM)
def test_an_encoder_ending_in_a_layer_norm_converts_exactly(
    family: Any, head: Head, stable: bool, weighted: bool, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """The "large" form of each family: the written model computes s3prl's function on the installed
    transformers, 4.57 or 5.x; a weighted sum needs the tie flag, which the written config carries."""
    case = s3prl_case(family, head, stable=stable, weighted=weighted)
    model, target, checkpoint = converted(case, tmp_path)
    assert getattr(model.config, "tie_last_hidden_states", None) is (True if weighted else None)
    divergence = compare_with_s3prl(model, checkpoint, target, feature_extractor(target.extractor)).divergence
    assert divergence.first is None, divergence.table()


@pytest.mark.parametrize("family", LAST_LAYER)
def test_a_last_layer_head_equals_s3prl(family: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    """Trained on the last hidden state: s3prl's Featurizer picks it (the encoder's output), transformers'
    head reads the base model's output."""
    case = s3prl_case(family, Head.SEQUENCE, weighted=False)
    model, target, checkpoint = converted(case, tmp_path)
    assert model.config.use_weighted_layer_sum is False
    divergence = compare_with_s3prl(model, checkpoint, target, feature_extractor(target.extractor)).divergence
    assert divergence.first is None, divergence.table()


@pytest.mark.slow
def test_a_large_stable_layer_norm_head_converts_exactly(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    """wav2vec2-large's dimensions (1024 wide, 24 layers) with an x-vector head weighing every layer."""
    case = s3prl_case(WAV2VEC2, Head.XVECTOR, LARGE, stable=True)
    model, target, checkpoint = converted(case, tmp_path)
    assert model.config.tie_last_hidden_states is True
    divergence = compare_with_s3prl(model, checkpoint, target, feature_extractor(target.extractor)).divergence
    assert divergence.first is None, divergence.table()


STAGE_NAMES = {
    Head.SEQUENCE: ["input waveform", "weighted sum", "projector", "pooling", "classifier",
                    "outputs from the recording", "outputs, padded batch"],
    Head.FRAME: ["input waveform", "weighted sum", "classifier", "outputs from the recording", "outputs, padded batch"],
    Head.XVECTOR: ["input waveform", "weighted sum", "projector", *(f"tdnn {n}" for n in range(5)), "pooling",
                   "linear1", "linear2", "outputs from the recording"],
}  # fmt: skip


@pytest.fixture
def xvector(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> tuple[Any, Any, Any, Any]:
    """A converted Wav2Vec2ForXVector, its checkpoint, s3prl's head and the feature extractor."""
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    model, target, checkpoint = converted(case, tmp_path)
    return model, checkpoint, s3prl_expert(target, checkpoint), feature_extractor(target.extractor)


def s3prl_features(model: Any, checkpoint: Any, inputs: Any, out: Any) -> list[torch.Tensor]:
    base = getattr(model, base_attribute(model))
    s3prl_featurizer = featurizer(base)
    s3prl_featurizer.load_state_dict(checkpoint.featurizer)
    summed = select(s3prl_featurizer, out.hidden_states)
    lengths = base._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1)).tolist()
    return [summed[i, :n] for i, n in enumerate(lengths)]


@torch.no_grad()
def test_s3prl_applies_relu_after_linear1_and_linear2(xvector: tuple[Any, Any, Any, Any]) -> None:
    """transformers' ``embeddings`` is linear1's output; s3prl scores trials with ReLU(linear1) and trains
    on ReLU(linear2(ReLU(linear1))). Converted embeddings equal s3prl's once the ReLU is applied."""
    model, checkpoint, expert, extractor = xvector
    inputs = extractor([waveforms()[0]], sampling_rate=16000, return_tensors="pt")
    out = model(**inputs, output_hidden_states=True)
    stages = expert(s3prl_features(model, checkpoint, inputs, out))
    assert (out.embeddings < -ATOL).any(), "the synthetic embeddings should have negative entries to tell"
    assert torch.allclose(torch.relu(out.embeddings), stages["inference"], atol=ATOL, rtol=0)
    assert not torch.allclose(out.embeddings, stages["inference"], atol=ATOL, rtol=0)
    relu_linear2 = torch.relu(model.classifier(torch.relu(out.embeddings)))
    assert torch.allclose(relu_linear2, stages["training"], atol=ATOL, rtol=0)
    assert not torch.allclose(out.logits, stages["training"], atol=ATOL, rtol=0)


@torch.no_grad()
def test_padded_batches_pool_different_frames(xvector: tuple[Any, Any, Any, Any]) -> None:
    """In a padded batch neither side pools exactly the shorter utterance's valid TDNN frames.

    s3prl's statistic pooling takes one padded frame too (n + 1). transformers' ``_get_tdnn_output_lengths``
    ignores ``tdnn_dilation``, so it pools sum((kernel - 1) * (dilation - 1)) = 6 frames past the valid
    ones. Unpadded utterances agree exactly; the conversion checks compare one utterance at a time.
    """
    model, checkpoint, expert, extractor = xvector
    inputs = extractor(waveforms(), sampling_rate=16000, padding=True, return_tensors="pt")
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.tdnn[-1].register_forward_hook(lambda m, a, o: captured.__setitem__("frames", o)),
        model.feature_extractor.register_forward_hook(lambda m, a, o: captured.__setitem__("pooled", a[0])),
    ]
    out = model(**inputs, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    features = s3prl_features(model, checkpoint, inputs, out)
    stages = expert(features)
    short = min(range(len(features)), key=lambda i: len(features[i]))
    valid = len(features[short]) - sum((k - 1) * d for k, d in zip(XVECTOR_KERNELS, XVECTOR_DILATIONS, strict=True))
    hf_counted = int(model._get_tdnn_output_lengths(len(features[short])))

    def stats(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(0), x.std(0)])

    assert hf_counted - valid == 6
    assert torch.allclose(stages["pooling"][short], stats(stages["tdnn"][short, : valid + 1]), atol=ATOL, rtol=0)
    assert torch.allclose(captured["pooled"][short], stats(captured["frames"][short, :hf_counted]), atol=ATOL, rtol=0)
    assert (captured["pooled"][short] - stats(captured["frames"][short, :valid])).abs().max() > 100 * ATOL
    long = 1 - short
    assert torch.allclose(captured["pooled"][long], stages["pooling"][long], atol=ATOL, rtol=0)


def tdnn_context_and_width_transposed(tensor: torch.Tensor) -> torch.Tensor:
    """A TDNN kernel read as (width, context) where it is (context, width): the unfold layout mistake."""
    out, flat = tensor.shape
    context = flat // TINY.tdnn[0]
    return tensor.view(out, context, flat // context).transpose(1, 2).reshape(out, flat)


def transposed(tensor: torch.Tensor) -> torch.Tensor:
    """A Linear weight read in (in, out) order where it is stored (out, in): same shape, wrong layout."""
    return tensor.t().reshape(tensor.shape)


def rows_reversed(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flip(0)


@pytest.mark.parametrize(
    ("head", "key", "mistake", "stage"),
    [
        (Head.XVECTOR, "projector.weight", transposed, "projector"),
        (Head.XVECTOR, "tdnn.1.kernel.weight", tdnn_context_and_width_transposed, "tdnn 1"),
        (Head.XVECTOR, "tdnn.4.kernel.bias", rows_reversed, "tdnn 4"),
        (Head.XVECTOR, "feature_extractor.weight", rows_reversed, "linear1"),
        (Head.XVECTOR, "classifier.weight", rows_reversed, "linear2"),
        (Head.SEQUENCE, "projector.weight", transposed, "projector"),
        (Head.SEQUENCE, "classifier.weight", rows_reversed, "classifier"),
        (Head.FRAME, "classifier.weight", transposed, "classifier"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_a_wrongly_laid_out_head_weight_is_located(
    head: Head, key: str, mistake: Callable[[torch.Tensor], torch.Tensor], stage: str,
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path,
) -> None:  # fmt: skip
    """The comparison with s3prl can fail, and names the stage whose weight is wrong: every stage before
    it agrees, and it is far past the tolerance."""
    case = s3prl_case(WAV2VEC2, head)
    checkpoint = read(case.checkpoint)
    target = target_for(checkpoint, case.base)
    head_weights = convert_head(checkpoint, target)
    model = build_model(case.base, target, {**head_weights, key: mistake(head_weights[key])})
    divergence = compare_with_s3prl(model, checkpoint, target, feature_extractor(target.extractor)).divergence
    first = divergence.first
    assert first is not None and first.stage == stage, divergence.table()
    assert first.difference > 1000 * ATOL, divergence.table()


@pytest.mark.parametrize("head", list(Head), ids=lambda h: h.name)
def test_s3prls_head_holds_exactly_the_checkpoints_weights(
    head: Head, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """The reference is s3prl's module for the config's sizes, loaded strictly: a key it does not have, or a
    weight it lacks, is an error; only best_score (training bookkeeping) may be absent."""
    case = s3prl_case(WAV2VEC2, head)
    _, target, checkpoint = converted(case, tmp_path)
    held = s3prl_expert(target, checkpoint).state_dict()
    assert all(torch.equal(held[key], tensor) for key, tensor in checkpoint.downstream.items())
    extra = replace(checkpoint, downstream={**checkpoint.downstream, "model.extra.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"model.extra.weight\""):
        s3prl_expert(target, extra)
    trimmed = {key: tensor for key, tensor in checkpoint.downstream.items() if key != "best_score"}
    held = s3prl_expert(target, replace(checkpoint, downstream=trimmed)).state_dict()
    assert all(torch.equal(held[key], tensor) for key, tensor in trimmed.items())
    lacking = dict(list(trimmed.items())[1:])
    with pytest.raises(RuntimeError, match=rf"Missing key\(s\) in state_dict: \"{re.escape(next(iter(trimmed)))}\""):
        s3prl_expert(target, replace(checkpoint, downstream=lacking))
