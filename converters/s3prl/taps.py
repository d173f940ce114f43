"""transformers' side of an S3PRL head's stages: what the locator compares with s3prl's modules
(``converters/s3prl/stages.py``) and a golden record fingerprints (``converters/golden.py``). It imports no s3prl:
a gate without the original runs it where s3prl is not installed."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from converters.locator import Tap, first_input
from converters.s3prl.families import Head


def _relu_then(module: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
    """transformers' x-vector classifier applied as s3prl applies linear2: to ReLU(linear1). The difference
    by design (s3prl's ReLU) is put on the converted side, so that linear2's own weights are compared."""
    return module.forward(torch.relu(args[0]))  # forward(), not __call__: no hook fires inside a hook


def converted_head_taps(model: Any, head: Head) -> list[tuple[str, Tap]]:
    """transformers' side of the head's stages, in forward order (a golden record's stages too)."""
    if head is Head.SEQUENCE:
        return [("weighted sum", Tap(model.projector, first_input)), ("projector", Tap(model.projector)),
                ("pooling", Tap(model.classifier, first_input)), ("classifier", Tap(model.classifier))]  # fmt: skip
    if head is Head.FRAME:
        return [("weighted sum", Tap(model.classifier, first_input)), ("classifier", Tap(model.classifier))]
    return [
        ("weighted sum", Tap(model.projector, first_input)),
        ("projector", Tap(model.projector)),
        *((f"tdnn {n}", Tap(tdnn)) for n, tdnn in enumerate(model.tdnn)),
        ("pooling", Tap(model.feature_extractor, first_input)),
        ("linear1", Tap(model.feature_extractor)),
        ("linear2", Tap(model.classifier, _relu_then)),
    ]
