"""The original AST model (YuanGongND/ast ``src/models/ast_models.py``), rebuilt on timm's DeiT.

This is the independent reference a conversion is checked against: timm's distilled DeiT backbone
(the original used ``vit_deit_base_distilled_patch16_384`` from timm 0.4.5, whose blocks, key names and
LayerNorm eps 1e-6 timm keeps), with the original's three changes: a one-channel patch projection with
overlapping strides, a positional embedding sized for the spectrogram's patch grid, and an
``mlp_head`` of LayerNorm (torch default eps 1e-5) and Linear. Its forward follows the original's.
Nothing here is shared with the transformers side of a conversion.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from converters.ast.config import PATCH, Backbone, backbone_of
from converters.ast.variants import Variant

DEIT = "deit_base_distilled_patch16_384"


class OriginalAST(nn.Module):
    """``ASTModel`` as the original builds it with ``imagenet_pretrain=False``, weights to be loaded."""

    def __init__(
        self, backbone: Backbone, fstride: int, tstride: int, input_tdim: int, label_dim: int, input_fdim: int = 128
    ) -> None:
        super().__init__()
        # Any: timm types its models as a bare nn.Module
        v: Any = timm.create_model(
            DEIT,
            pretrained=False,
            embed_dim=backbone.hidden_size,
            depth=backbone.num_layers,
            num_heads=backbone.num_heads,
            mlp_ratio=backbone.intermediate_size / backbone.hidden_size,
        )
        dim = backbone.hidden_size
        v.patch_embed.proj = nn.Conv2d(1, dim, kernel_size=(PATCH, PATCH), stride=(fstride, tstride))
        f_dim = (input_fdim - PATCH) // fstride + 1
        t_dim = (input_tdim - PATCH) // tstride + 1
        v.pos_embed = nn.Parameter(torch.zeros(1, f_dim * t_dim + 2, dim))
        self.v: Any = v
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, label_dim))

    @property
    def head_norm(self) -> nn.LayerNorm:
        """The LayerNorm of ``mlp_head`` (torch's default eps 1e-5, unlike the backbone's 1e-6)."""
        norm = self.mlp_head[0]
        assert isinstance(norm, nn.LayerNorm)
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time frames, frequency bins) spectrogram to (batch, labels) logits."""
        x = x.unsqueeze(1).transpose(2, 3)
        batch = x.shape[0]
        # timm's PatchEmbed checks the input size against the 384x384 image; the original replaced it
        # with a projection-only forward, which is this line.
        x = self.v.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.v.cls_token.expand(batch, -1, -1), self.v.dist_token.expand(batch, -1, -1), x), dim=1)
        x = self.v.pos_drop(x + self.v.pos_embed)
        for block in self.v.blocks:
            x = block(x)
        x = self.v.norm(x)
        x = (x[:, 0] + x[:, 1]) / 2
        return self.mlp_head(x)


def load_original(state: dict[str, torch.Tensor], variant: Variant) -> OriginalAST:
    """The original model for ``variant`` holding an original checkpoint's weights, in eval mode.

    Loaded under the original's own parameter names (DataParallel's ``module.`` stripped), strictly:
    nothing of the conversion's mapping is used. Built without memory and holding the checkpoint's own
    tensors (float16 and bfloat16 ones widened to float32, as the original ran): no random initialisation
    to pay for, no second copy of the weights.
    """
    with torch.device("meta"):
        model = OriginalAST(
            backbone_of(state),
            variant.frequency_stride,
            variant.time_stride,
            variant.max_length,
            variant.dataset.num_labels,
        )
    own = {key.removeprefix("module."): value.float() for key, value in state.items()}
    model.load_state_dict(own, strict=True, assign=True)
    return model.eval()
