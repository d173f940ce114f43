"""The AST divergence locator: the original (timm's DeiT) and transformers' AST, stage beside stage.

Both models run in float64, so that rounding (about 1e-15 of a value) cannot hide a mapping mistake
as small as a wrong LayerNorm eps, which in float32 first shows near the logits. Neither is copied: each block
is widened while it runs (``float64_in_turn``), and the two run side by side, meeting at each stage, so that
what a failing comparison holds beyond a passing one is a block in float64 and one stage's values per model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from converters.locator import Divergence, Stage, Tap, float64_in_turn, locate_side_by_side

if TYPE_CHECKING:  # timm: only where the original runs; a gate without it reads the converted side here
    from converters.ast.original import OriginalAST

# float64 rounding moves a stage by ~1e-14 of its magnitude; eps 1e-12 for 1e-6 moves block 0 by ~1e-7.
ATOL = RTOL = 1e-9
HEAD_NOTE = "by design: the original's head LayerNorm has eps 1e-5, ASTConfig one eps (1e-6) for all"


def hf_base(model: Any) -> Any:
    """The encoder: ``ASTForAudioClassification``'s ``audio_spectrogram_transformer``, or ``ASTModel`` itself."""
    return getattr(model, "audio_spectrogram_transformer", model)


def hf_layers(model: Any) -> nn.ModuleList:
    """The transformer blocks: ``layers`` in transformers 5, ``encoder.layer`` in 4.x."""
    base = hf_base(model)
    return base.layers if hasattr(base, "layers") else base.encoder.layer


def converted_taps(converted: Any) -> list[tuple[str, Tap]]:
    """transformers' side of every stage, in forward order. A block's MLP stage is the block's output (after the
    MLP's residual): transformers 4.x folds that residual into its MLP module, 5.x does not."""
    base: Any = hf_base(converted)
    taps = [("patch embedding", Tap(base.embeddings.patch_embeddings.projection)),
            ("positional embedding", Tap(base.embeddings))]  # fmt: skip
    layer: Any
    for n, layer in enumerate(hf_layers(converted)):
        taps += [(f"block {n} attention", Tap(layer.attention)), (f"block {n} MLP", Tap(layer))]
    taps.append(("final norm", Tap(base.layernorm)))
    if hasattr(converted, "classifier"):
        taps.append(("head", Tap(converted.classifier)))
    return taps


def original_taps(original: OriginalAST) -> list[tuple[str, Tap]]:
    """The original's side of the same stages."""
    v = original.v
    taps = [("patch embedding", Tap(v.patch_embed.proj)), ("positional embedding", Tap(v.pos_drop))]
    for n, block in enumerate(v.blocks):
        taps += [(f"block {n} attention", Tap(block.attn)), (f"block {n} MLP", Tap(block))]
    taps.append(("final norm", Tap(v.norm)))
    if original.mlp_head is not None:
        taps.append(("head", Tap(original.mlp_head)))
    return taps


def ast_stages(original: OriginalAST, converted: Any, head_tolerance: float) -> list[Stage]:
    """Every stage of the forward pass, in order, each side's tap paired by name (a converted model with fewer
    blocks diverges at the final norm)."""
    theirs = dict(converted_taps(converted))
    stages = []
    for name, tap in original_taps(original):
        if name in theirs:
            head = name == "head"
            stages.append(Stage(name, tap, theirs[name], head_tolerance if head else None, HEAD_NOTE if head else ""))
    return stages


def locate_divergence(
    original: OriginalAST, converted: nn.Module, features: torch.Tensor, head_tolerance: float
) -> Divergence:
    """Where ``converted`` leaves ``original`` on ``features`` (batch, frames, bins); neither model is changed."""
    x = features.double()
    stages = ast_stages(original, converted, head_tolerance)
    with (
        float64_in_turn(original.eval(), list(original.v.blocks)),
        float64_in_turn(converted.eval(), list(hf_layers(converted))),
    ):
        return locate_side_by_side(stages, lambda: original(x), lambda: converted(input_values=x), atol=ATOL, rtol=RTOL)
