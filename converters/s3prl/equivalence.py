"""A converted model against s3prl's own head, fed the same upstream hidden states, stage by stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.s3prl.checkpoint import S3PRLCheckpoint
from converters.s3prl.convert import Target
from converters.s3prl.families import Head
from converters.s3prl.original import (
    DiarizationExpert,
    SpeakerVerificationExpert,
    UtteranceExpert,
    featurizer,
    weighted_sum,
)

# Sequence and frame logits, and every x-vector stage, must agree this closely (absolute).
ATOL = 1e-5


def s3prl_expert(target: Target, checkpoint: S3PRLCheckpoint) -> nn.Module:
    """s3prl's head for the config's sizes, holding the checkpoint's Downstream weights (strictly)."""
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
    expert.load_state_dict(checkpoint.downstream, strict=True)
    return expert.eval()


class Capture:
    """Forward hooks that keep a module's input or output (no copy of either model's code)."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def input(self, name: str, module: nn.Module) -> None:
        self.handles.append(module.register_forward_hook(lambda m, args, out: self.values.__setitem__(name, args[0])))

    def output(self, name: str, module: nn.Module) -> None:
        self.handles.append(module.register_forward_hook(lambda m, args, out: self.values.__setitem__(name, out)))

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def _largest(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


@torch.no_grad()
def stage_differences(
    model: Any, checkpoint: S3PRLCheckpoint, target: Target, waveforms: Sequence[np.ndarray], extractor: Any
) -> dict[str, float]:
    """Largest absolute difference per stage between ``model`` and s3prl, over the given waveforms.

    Sequence and frame heads run on one padded batch. The x-vector head runs one utterance at a time:
    in padded batches s3prl's statistic pooling counts one padded frame (a difference by design,
    measured by the tests), which would hide everything else.
    """
    expert = s3prl_expert(target, checkpoint)
    base = getattr(model, model.base_model_prefix)
    s3prl_featurizer = featurizer(base) if target.config.use_weighted_layer_sum else None
    if s3prl_featurizer is not None:
        s3prl_featurizer.load_state_dict(checkpoint.featurizer, strict=True)
    batches = [[w] for w in waveforms] if target.head is Head.XVECTOR else [list(waveforms)]
    worst: dict[str, float] = {}
    for batch in batches:
        inputs = extractor(batch, sampling_rate=16000, padding=True, return_tensors="pt")
        with Capture() as capture:
            first = model.classifier if target.head is Head.FRAME else model.projector
            capture.input("weighted sum", first)
            if target.head is Head.XVECTOR:
                capture.output("tdnn", model.tdnn[-1])
                capture.input("pooling", model.feature_extractor)
            out = model(**inputs, output_hidden_states=True)
        lengths = base._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1)).tolist()
        hidden = out.hidden_states
        summed = weighted_sum(s3prl_featurizer, hidden) if s3prl_featurizer is not None else hidden[-1]
        features = [summed[i, :n] for i, n in enumerate(lengths)]
        found = {"weighted sum": max(_largest(capture.values["weighted sum"][i, :n], f) for i, (n, f) in
                                     enumerate(zip(lengths, features, strict=True)))}  # fmt: skip
        if target.head is Head.SEQUENCE:
            found["logits"] = _largest(out.logits, expert(features))
        elif target.head is Head.FRAME:
            reference = expert(features)
            found["logits"] = max(_largest(out.logits[i, :n], reference[i, :n]) for i, n in enumerate(lengths))
        else:
            stages = expert(features)
            found["tdnn"] = _largest(capture.values["tdnn"], stages["tdnn"])
            found["pooling"] = _largest(capture.values["pooling"], stages["pooling"])
            found["embeddings"] = _largest(out.embeddings, stages["linear1"])
        for stage, value in found.items():
            worst[stage] = max(worst.get(stage, 0.0), value)
    return worst
