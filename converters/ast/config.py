"""Everything that fixes the converted model's function, derived from the variant and the checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import ASTConfig, ASTFeatureExtractor

from converters.ast.labels import id2label
from converters.ast.mapping import AST_MAPPING
from converters.ast.variants import Variant
from converters.errors import ConversionError

PATCH = 16
NUM_MEL_BINS = 128
HEAD_DIM = 64  # every DeiT size the original offered (tiny, small, base) has 64-wide heads
# timm's DeiT blocks and final norm use 1e-6. The original's mlp_head LayerNorm uses torch's 1e-5, but
# ASTConfig has one eps for all norms: 1e-6 matches every norm but the head's exactly. transformers'
# default 1e-12 is further off; tests/test_ast_equivalence.py measures both.
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class Backbone:
    """Sizes of a DeiT backbone, as read from a checkpoint's tensor shapes."""

    hidden_size: int
    num_layers: int
    intermediate_size: int
    head_dim: int = HEAD_DIM

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim


def backbone_of(state: Mapping[str, torch.Tensor]) -> Backbone:
    """Read hidden size, depth and MLP width from an original checkpoint's shapes."""
    for key in ("module.v.cls_token", "module.v.blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise ConversionError(f"missing key {key!r} in the checkpoint")
    hidden = state["module.v.cls_token"].shape[-1]
    if hidden % HEAD_DIM:
        raise ConversionError(
            f"module.v.cls_token has width {hidden}, not a multiple of DeiT's {HEAD_DIM}-wide attention heads"
        )
    return Backbone(hidden, AST_MAPPING.num_layers(state), state["module.v.blocks.0.mlp.fc1.weight"].shape[0])


def hf_config(variant: Variant, backbone: Backbone, dtype: torch.dtype = torch.float32) -> ASTConfig:
    labels = id2label(variant.dataset)
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
        frequency_stride=variant.frequency_stride,
        time_stride=variant.time_stride,
        max_length=variant.max_length,
        num_mel_bins=NUM_MEL_BINS,
        id2label=labels,
        label2id={label: index for index, label in labels.items()},
        architectures=["ASTForAudioClassification"],
    )


def feature_extractor(variant: Variant) -> ASTFeatureExtractor:
    """Kaldi fbank features normalised as the original recipe did: (x - mean) / (2 * std)."""
    return ASTFeatureExtractor(
        num_mel_bins=NUM_MEL_BINS,
        sampling_rate=16000,
        max_length=variant.max_length,
        mean=variant.dataset.feature_mean,
        std=variant.dataset.feature_std,
        do_normalize=True,
    )
