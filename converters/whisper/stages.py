"""The Whisper forward pass in stages, openai-whisper's module beside transformers' for each: where a conversion
that computes otherwise first parts from the original (the locator's), and what a golden record fingerprints.

Encoder: the first convolution, the sequence entering the first block (the convolutions, GELUs and positions),
each block's output, the final norm. Decoder: the sequence entering its first block (token and position
embeddings), each block's output, the final norm, the logits. A block's input is read where the module receives
it, positionally or by keyword (transformers' decoder layers are given their inputs by keyword in some releases).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from converters.locator import Stage, Tap


def hidden_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> torch.Tensor:
    """The sequence a block is given: its first positional input, or ``hidden_states`` by keyword."""
    return args[0] if args else kwargs["hidden_states"]


def taken(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def converted_taps(model: Any) -> list[tuple[str, Tap]]:
    """transformers' side, in forward order."""
    encoder, decoder = model.model.encoder, model.model.decoder
    taps = [("encoder conv1", Tap(encoder.conv1, keywords=True, read=taken)),
            ("encoder input", Tap(encoder.layers[0], keywords=True, read=hidden_input))]  # fmt: skip
    taps += [(f"encoder block {n}", Tap(layer, keywords=True, read=taken)) for n, layer in enumerate(encoder.layers)]
    taps += [("encoder norm", Tap(encoder.layer_norm, keywords=True, read=taken)),
             ("decoder input", Tap(decoder.layers[0], keywords=True, read=hidden_input))]  # fmt: skip
    taps += [(f"decoder block {n}", Tap(layer, keywords=True, read=taken)) for n, layer in enumerate(decoder.layers)]
    taps += [("decoder norm", Tap(decoder.layer_norm, keywords=True, read=taken)),
             ("logits", Tap(model.proj_out, keywords=True, read=taken))]  # fmt: skip
    return taps


def original_taps(original: Any) -> list[tuple[str, Tap]]:
    """openai-whisper's side of the same stages (its logits: the decoder's output)."""
    encoder, decoder = original.encoder, original.decoder
    taps = [("encoder conv1", Tap(encoder.conv1, keywords=True, read=taken)),
            ("encoder input", Tap(encoder.blocks[0], keywords=True, read=hidden_input))]  # fmt: skip
    taps += [(f"encoder block {n}", Tap(block, keywords=True, read=taken)) for n, block in enumerate(encoder.blocks)]
    taps += [("encoder norm", Tap(encoder.ln_post, keywords=True, read=taken)),
             ("decoder input", Tap(decoder.blocks[0], keywords=True, read=hidden_input))]  # fmt: skip
    taps += [(f"decoder block {n}", Tap(block, keywords=True, read=taken)) for n, block in enumerate(decoder.blocks)]
    taps += [("decoder norm", Tap(decoder.ln, keywords=True, read=taken)),
             ("logits", Tap(decoder, keywords=True, read=taken))]  # fmt: skip
    return taps


def whisper_stages(original: Any, converted: Any) -> list[Stage]:
    """Both sides' taps paired by name (a converted model with fewer blocks diverges at the norm after them)."""
    theirs = dict(converted_taps(converted))
    return [Stage(name, tap, theirs[name]) for name, tap in original_taps(original) if name in theirs]
