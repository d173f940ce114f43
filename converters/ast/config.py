"""The written config and feature extractor: what a spec (``converters.ast.spec``) and a backbone fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import ASTConfig, ASTFeatureExtractor

from converters.ast.layout import HEAD_DIM, Backbone, layout_of
from converters.ast.spec import NUM_MEL_BINS, PATCH, Spec
from converters.ast.variants import Variant

__all__ = ["HEAD_DIM", "LAYER_NORM_EPS", "NUM_MEL_BINS", "PATCH", "Backbone", "as_spec", "backbone_of",
           "feature_extractor", "hf_config"]  # fmt: skip

# timm's DeiT blocks and final norm use 1e-6. The original's mlp_head LayerNorm uses torch's 1e-5, but
# ASTConfig has one eps for all norms: 1e-6 matches every norm but the head's exactly. transformers'
# default 1e-12 is further off; tests/test_ast_equivalence.py measures both.
LAYER_NORM_EPS = 1e-6


def as_spec(spec: Spec | Variant) -> Spec:
    """A published variant's spec, or the spec given."""
    return spec.spec if isinstance(spec, Variant) else spec


def backbone_of(state: Mapping[str, torch.Tensor]) -> Backbone:
    """Hidden size, depth and MLP width, read from an original checkpoint's shapes."""
    return layout_of(state, "the checkpoint").backbone


def hf_config(spec: Spec | Variant, backbone: Backbone, dtype: torch.dtype = torch.float32) -> ASTConfig:
    """The config of ``ASTForAudioClassification``, or of ``ASTModel`` for a spec without labels (an SSAST
    pretraining checkpoint's encoder)."""
    spec = as_spec(spec)
    head: dict[str, Any] = {}
    if spec.labels is not None:
        labels = dict(enumerate(spec.labels))
        head = {"id2label": labels, "label2id": {label: index for index, label in labels.items()}}
    return ASTConfig(
        dtype=dtype,  # the checkpoint's own: float16 and bfloat16 weights are written as they are
        hidden_size=backbone.hidden_size,
        num_hidden_layers=backbone.num_layers,
        num_attention_heads=backbone.num_heads,
        intermediate_size=backbone.intermediate_size,
        hidden_act="gelu",  # timm's nn.GELU: the exact (erf) form
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=LAYER_NORM_EPS,
        qkv_bias=True,
        patch_size=PATCH,
        frequency_stride=spec.fstride,
        time_stride=spec.tstride,
        max_length=spec.max_length,
        num_mel_bins=spec.num_mel_bins,
        architectures=["ASTForAudioClassification" if spec.labels is not None else "ASTModel"],
        **head,
    )


def feature_extractor(spec: Spec | Variant) -> ASTFeatureExtractor:
    """Kaldi fbank features normalised as the original recipe did: (x - mean) / (2 * std)."""
    spec = as_spec(spec)
    return ASTFeatureExtractor(
        num_mel_bins=spec.num_mel_bins,
        sampling_rate=16000,
        max_length=spec.max_length,
        mean=spec.feature_mean,
        std=spec.feature_std,
        do_normalize=True,
    )
