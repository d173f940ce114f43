"""The original AST model (YuanGongND/ast ``src/models/ast_models.py``), rebuilt on timm's DeiT.

This is the independent reference a conversion is checked against, built from the checkpoint's own shapes and
the spec, never from the converted config: timm's distilled DeiT of the checkpoint's size (the original's
``model_size``: ``vit_deit_{tiny,small,base}_distilled_patch16_{224,384}`` from timm 0.4.5, whose blocks, key
names and LayerNorm eps 1e-6 timm keeps; another width, the same DeiT with its sizes), with the original's three
changes: a one-channel 16x16 patch projection at the run's strides, a position embedding of the patch grid's rows
and two tokens, and an ``mlp_head`` of LayerNorm (torch's default eps 1e-5) and Linear (none for an SSAST
pretraining checkpoint's encoder). Its forward follows the original's (SSAST's ``finetuningcls`` is the same).
Nothing here is shared with the transformers side of a conversion.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from converters.ast.config import as_spec
from converters.ast.layout import PRETRAINING_KEYS, Backbone, layout_of
from converters.ast.spec import PATCH, Spec
from converters.ast.variants import Variant

DEIT = "deit_base_distilled_patch16_384"
# the original's model sizes, by width: timm's DeiT it built each on (timm's names since 0.4.5 drop "vit_")
DEIT_OF_WIDTH = {192: "deit_tiny_distilled_patch16_224", 384: "deit_small_distilled_patch16_224", 768: DEIT}


class OriginalAST(nn.Module):
    """``ASTModel`` as the original builds it with ``imagenet_pretrain=False``, weights to be loaded; without a head
    (``label_dim`` None), its encoder: the final norm's output, every token."""

    def __init__(
        self, backbone: Backbone, fstride: int, tstride: int, input_tdim: int, label_dim: int | None,
        input_fdim: int = 128,
    ) -> None:  # fmt: skip
        super().__init__()
        # Any: timm types its models as a bare nn.Module
        name = DEIT_OF_WIDTH.get(backbone.hidden_size, DEIT)
        v: Any = timm.create_model(
            name,
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
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, label_dim)) if label_dim is not None else None

    @property
    def head_norm(self) -> nn.LayerNorm:
        """The LayerNorm of ``mlp_head`` (torch's default eps 1e-5, unlike the backbone's 1e-6)."""
        assert self.mlp_head is not None
        norm = self.mlp_head[0]
        assert isinstance(norm, nn.LayerNorm)
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time frames, frequency bins) spectrogram to (batch, labels) logits, or, without a head, the
        encoder's output (batch, tokens, width)."""
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
        if self.mlp_head is None:
            return x
        x = (x[:, 0] + x[:, 1]) / 2
        return self.mlp_head(x)


def load_original(state: dict[str, torch.Tensor], spec: Spec | Variant) -> OriginalAST:
    """The original model holding an original checkpoint's weights, in eval mode.

    Loaded under the original's own parameter names (DataParallel's ``module.`` stripped, where the file has it),
    strictly: nothing of the conversion's mapping is used; an SSAST pretraining checkpoint's pretext heads, which
    the encoder does not use, are left out. Built without memory and holding the checkpoint's own tensors (float16
    and bfloat16 ones widened to float32, as the original ran): no random initialisation to pay for, no second copy
    of the weights.
    """
    spec = as_spec(spec)
    layout = layout_of(state, "the checkpoint")
    with torch.device("meta"):
        model = OriginalAST(
            layout.backbone, spec.fstride, spec.tstride, spec.max_length, layout.num_labels, spec.num_mel_bins
        )
    dropped = {layout.prefix + key for key in PRETRAINING_KEYS}
    own = {key.removeprefix(layout.prefix): value.float() for key, value in state.items() if key not in dropped}
    model.load_state_dict(own, strict=True, assign=True)
    return model.eval()
