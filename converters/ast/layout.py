"""What an original AST checkpoint's keys and shapes fix: its layout, its backbone's sizes, its label count, its
position rows; and what of it transformers' AST cannot compute, refused by name.

Three kinds of file hold the original ``ASTModel``'s state dict (YuanGongND/ast ``src/models/ast_models.py``;
YuanGongND/ssast ``src/models/ast_models.py`` for the self-supervised one):
- the recipes' ``best_audio_model.pth`` and ``audio_model.N.pth``, saved through ``nn.DataParallel``: every key
  starts ``module.``;
- the same model saved by a training loop of one's own: no prefix (``v.cls_token``, ``mlp_head.1.weight``);
- an SSAST pretraining checkpoint: the encoder without ``mlp_head``, its pretext heads (``cpredlayer``,
  ``gpredlayer``, ``mask_embed``) and its pretraining input size (``p_input_fdim``, ``p_input_tdim``).
SSAST fine-tunes have the AST key set. The unused ImageNet heads of DeiT (``v.head``, ``v.head_dist``) may be
there or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from converters.ast.spec import PATCH
from converters.errors import ConversionError

HEAD_DIM = 64  # every DeiT size the original offered (tiny, small, base) has 64-wide heads
# the original's model sizes (timm's distilled DeiTs), by width; base224 and base384 differ only in pretraining
MODEL_SIZES = {192: "tiny224", 384: "small224", 768: "base224 or base384"}
# SSAST pretraining's own tensors: its pretext heads and the input size it recorded (dropped by a conversion)
PRETRAINING_KEYS = (
    "cpredlayer.0.weight", "cpredlayer.0.bias", "cpredlayer.2.weight", "cpredlayer.2.bias",
    "gpredlayer.0.weight", "gpredlayer.0.bias", "gpredlayer.2.weight", "gpredlayer.2.bias",
    "mask_embed", "p_input_fdim", "p_input_tdim",
)  # fmt: skip


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

    @property
    def size(self) -> str:
        """The original's model size of this width, where it is one."""
        known = MODEL_SIZES.get(self.hidden_size)
        return f"{known} ({self.hidden_size} wide)" if known else f"{self.hidden_size} wide (no size of the original's)"


@dataclass(frozen=True)
class Layout:
    prefix: str  # "module." (saved through DataParallel) or ""
    backbone: Backbone
    positions: int  # rows of v.pos_embed: every patch, and the two tokens
    num_labels: int | None  # rows of mlp_head.1.weight; None: an SSAST pretraining checkpoint (no head)
    pretraining_input: tuple[int, int] | None = None  # SSAST pretraining: (p_input_fdim, p_input_tdim)

    @property
    def pretraining(self) -> bool:
        return self.num_labels is None

    def key(self, name: str) -> str:
        return self.prefix + name

    @property
    def described(self) -> str:
        what = "an SSAST pretraining checkpoint" if self.pretraining else f"{self.num_labels} labels"
        saved = "saved through DataParallel (module.)" if self.prefix else "saved without DataParallel's module."
        return (f"{self.backbone.size}, {self.backbone.num_layers} blocks, {self.positions} position rows, {what}; "
                f"{saved}")  # fmt: skip


def layout_of(state: Mapping[str, torch.Tensor], where: str) -> Layout:
    """The checkpoint's layout and sizes, or a refusal naming what transformers' AST cannot hold."""
    if "module.v.cls_token" in state:
        prefix = "module."
    elif "v.cls_token" in state:
        prefix = ""
    else:
        shown = ", ".join(sorted(state)[:4]) or "no keys"
        raise ConversionError(
            f"{where} is no original AST model's state dict: it has neither module.v.cls_token (saved through "
            f"DataParallel, as the recipes save) nor v.cls_token (keys: {shown}, ...)"
        )
    strays = sorted(key for key in state if key.startswith("module.") != bool(prefix))
    if strays:
        raise ConversionError(f"{where} mixes keys with and without DataParallel's 'module.' prefix ({strays[0]!r})")
    if prefix + "v.dist_token" not in state:
        raise ConversionError(
            f"{where} has no {prefix}v.dist_token: a model of one token (SSAST's base384_nokd); transformers' AST "
            f"computes with two (the class and distillation tokens)"
        )
    proj = state.get(prefix + "v.patch_embed.proj.weight")
    if proj is not None and proj.dim() == 4 and tuple(proj.shape[2:]) != (PATCH, PATCH):
        f, t = proj.shape[2:]
        raise ConversionError(
            f"{prefix}v.patch_embed.proj.weight in {where} has {f}x{t} patches (an SSAST frame model, say); "
            f"transformers' AST splits the spectrogram into square {PATCH}x{PATCH} patches"
        )
    width = state[prefix + "v.cls_token"].shape[-1]
    if width % HEAD_DIM:
        raise ConversionError(
            f"{prefix}v.cls_token in {where} has width {width}, not a multiple of DeiT's {HEAD_DIM}-wide attention "
            f"heads"
        )
    fc1 = state.get(prefix + "v.blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise ConversionError(f"missing key {prefix + 'v.blocks.0.mlp.fc1.weight'!r} in {where}")
    depth = 1 + max(int(part) for key in state if key.startswith(prefix + "v.blocks.")
                    and (part := key.removeprefix(prefix + "v.blocks.").split(".")[0]).isdigit())  # fmt: skip
    pos = state.get(prefix + "v.pos_embed")
    if pos is None or pos.dim() != 3:
        raise ConversionError(f"{prefix}v.pos_embed in {where} is missing or not (1, rows, width)")
    head = state.get(prefix + "mlp_head.1.weight")
    pretraining = all(prefix + key in state for key in ("cpredlayer.0.weight", "gpredlayer.0.weight"))
    if head is None and not pretraining:
        raise ConversionError(
            f"{where} has no {prefix}mlp_head.1.weight (a fine-tuned model's head) and no {prefix}cpredlayer (an SSAST "
            f"pretraining checkpoint's)"
        )
    pretraining_input = None
    if head is None:
        sizes = [state.get(prefix + name) for name in ("p_input_fdim", "p_input_tdim")]
        if any(size is None or size.numel() != 1 for size in sizes):
            raise ConversionError(f"{where} is an SSAST pretraining checkpoint without p_input_fdim and p_input_tdim")
        pretraining_input = (int(sizes[0].item()), int(sizes[1].item()))  # type: ignore[union-attr]
    backbone = Backbone(int(width), depth, int(fc1.shape[0]))
    labels = int(head.shape[0]) if head is not None else None
    return Layout(prefix, backbone, int(pos.shape[1]), labels, pretraining_input)
