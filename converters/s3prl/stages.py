"""A converted model against s3prl's own head, fed the same upstream hidden states, stage by stage.

The stages are read with forward hooks on both sides (``converters.locator``): the report names the first
stage where the converted head leaves s3prl's."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.locator import Divergence, Stage, StageDifference, Tap, first_input, largest_difference, locate
from converters.s3prl.checkpoint import S3PRLCheckpoint
from converters.s3prl.convert import Target, base_attribute
from converters.s3prl.families import Head
from converters.s3prl.original import (
    DiarizationExpert,
    SpeakerVerificationExpert,
    UtteranceExpert,
    featurizer,
    select,
    upstream_hidden_states,
)

# Every stage must agree within ATOL + RTOL x its magnitude on s3prl's side: float32 sums taken in another
# order (s3prl's unfold + Linear, transformers' conv1d) round apart in proportion to the values summed. At
# wav2vec2-large's sizes the first TDNN sums 2560 products per value and parts by 2.3e-6 of its magnitude
# (3.2e-5 at 13.6); a mistake in the head moves a stage by the order of its magnitude.
ATOL = 1e-5
RTOL = 1e-5


def s3prl_expert(target: Target, checkpoint: S3PRLCheckpoint) -> nn.Module:
    """s3prl's head for the config's sizes, holding the checkpoint's Downstream weights (strictly).

    ``best_score``, the expert's best dev score, is the one key a checkpoint may lack: it is training
    bookkeeping that no forward reads, and checkpoints trimmed to their weights leave it out.
    """
    config: Any = target.config  # the family's config class; its head fields are set
    expert: nn.Module
    if target.head is Head.SEQUENCE:
        expert = UtteranceExpert(config.hidden_size, config.classifier_proj_size, config.num_labels)
    elif target.head is Head.FRAME:
        expert = DiarizationExpert(config.hidden_size, config.num_labels)
    else:
        expert = SpeakerVerificationExpert(
            config.hidden_size, config.tdnn_dim[0], config.tdnn_dim[-1], config.num_labels
        )
    state = dict(checkpoint.downstream)
    state.setdefault("best_score", expert.state_dict()["best_score"])
    expert.load_state_dict(state, strict=True)
    return expert.eval()


def _relu_then(module: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
    """transformers' x-vector classifier applied as s3prl applies linear2: to ReLU(linear1). The difference
    by design (s3prl's ReLU) is put on the converted side, so that linear2's own weights are compared."""
    return module.forward(torch.relu(args[0]))  # forward(), not __call__: no hook fires inside a hook


def head_stages(model: Any, expert: nn.Module, head: Head) -> list[Stage]:
    """The head's stages, s3prl's module (original) beside transformers' (converted), in forward order."""
    s3prl: Any = expert
    if head is Head.SEQUENCE:
        return [
            Stage("weighted sum", Tap(s3prl.projector, first_input), Tap(model.projector, first_input)),
            Stage("projector", Tap(s3prl.projector), Tap(model.projector)),
            Stage("pooling", Tap(s3prl.model.pooling), Tap(model.classifier, first_input)),
            Stage("classifier", Tap(s3prl.model.post_net), Tap(model.classifier)),
        ]
    if head is Head.FRAME:
        return [
            Stage("weighted sum", Tap(s3prl.model.linear, first_input), Tap(model.classifier, first_input)),
            Stage("classifier", Tap(s3prl.model.linear), Tap(model.classifier)),
        ]
    xvector = s3prl.model
    extractor = xvector.utterancelevel_feature_extractor
    tdnns = xvector.framelevel_feature_extractor.module
    return [
        Stage("weighted sum", Tap(s3prl.connector, first_input), Tap(model.projector, first_input)),
        Stage("projector", Tap(s3prl.connector), Tap(model.projector)),
        *(
            Stage(f"tdnn {n}", Tap(s3prl_tdnn), Tap(hf_tdnn))
            for n, (s3prl_tdnn, hf_tdnn) in enumerate(zip(tdnns, model.tdnn, strict=False))
        ),
        Stage("pooling", Tap(xvector.agg_method), Tap(model.feature_extractor, first_input)),
        Stage("linear1", Tap(extractor.linear1), Tap(model.feature_extractor)),
        Stage("linear2", Tap(extractor.linear2), Tap(model.classifier, _relu_then)),
    ]


def _worst(found: list[Divergence]) -> Divergence:
    """Per stage, the run furthest past (or closest to) its tolerance, over several runs."""
    return Divergence(
        tuple(
            max(runs, key=lambda s: s.difference / s.tolerance) for runs in zip(*(d.stages for d in found), strict=True)
        )
    )


@torch.no_grad()
def compare_with_s3prl(
    model: Any, checkpoint: S3PRLCheckpoint, target: Target, waveforms: Sequence[np.ndarray], extractor: Any
) -> Divergence:
    """Every stage of ``model`` beside s3prl's own head fed the same hidden states, one utterance at a time.

    One at a time, because a padded frame would differ between the two by design at every frame-level
    stage (s3prl pads with zeros after the weighted sum, transformers runs the head over padded hidden
    states and masks later). Sequence and frame heads are also compared on one padded batch, which is how
    they are used: the last row, ``logits, padded batch``. The x-vector head is not: in padded batches
    s3prl's statistic pooling counts one padded frame (a difference by design, measured by the tests).
    """
    expert = s3prl_expert(target, checkpoint)
    base = getattr(model, base_attribute(model))
    # As the runner built it: a weighted sum where it saved weights, else the layer it was told (-l).
    layer = checkpoint.args.get("upstream_layer_selection")
    weighted = "weights" in checkpoint.featurizer
    s3prl_featurizer = featurizer(base, layer_selection=None if weighted else (-1 if layer is None else layer))
    s3prl_featurizer.load_state_dict(checkpoint.featurizer, strict=True)
    stages = head_stages(model, expert, target.head)

    def run(batch: list[np.ndarray]) -> tuple[Any, Any, list[int]]:
        inputs = extractor(batch, sampling_rate=16000, padding=True, return_tensors="pt")
        if target.family.s3prl_upstream:
            with upstream_hidden_states(base) as hidden:
                out = model(**inputs, output_hidden_states=True)
        else:
            output: list[torch.Tensor] = []
            handle = base.register_forward_hook(lambda module, args, out: output.append(out[0]))
            try:
                out = model(**inputs, output_hidden_states=True)
            finally:
                handle.remove()
            hidden = list(out.hidden_states)
            if not weighted:  # the one feature a model hands on is its output (SEW's is upsampled again)
                hidden[-1] = output[0]
        summed = select(s3prl_featurizer, hidden)
        lengths = base._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1)).tolist()
        return out, expert([summed[i, :n] for i, n in enumerate(lengths)]), lengths

    found = [locate(stages, functools.partial(run, [waveform]), atol=ATOL, rtol=RTOL) for waveform in waveforms]
    divergence = _worst(found)
    if target.head is Head.XVECTOR or len(waveforms) < 2:
        return divergence
    out, reference, lengths = run(list(waveforms))

    def valid(logits: torch.Tensor, i: int, n: int) -> torch.Tensor:  # frame logits: the utterance's frames
        return logits[i, :n] if target.head is Head.FRAME else logits[i]

    padded = max(largest_difference(valid(out.logits, i, n), valid(reference, i, n)) for i, n in enumerate(lengths))
    tolerance = ATOL + RTOL * reference.abs().max().item()
    return Divergence((*divergence.stages, StageDifference("logits, padded batch", padded, tolerance)))
