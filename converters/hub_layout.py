"""transformers' serialized (hub) key layout, across major versions.

transformers 5 renames some weights in memory (``layers.N.attention.q_proj``) and maps them back when
saving; 4.x keeps the serialized names in memory. Checkpoints are compared in the serialized layout,
the one every release reads.
"""

from __future__ import annotations

import torch
from torch import nn

try:  # transformers >= 5
    from transformers.core_model_loading import revert_weight_conversion
except ImportError:  # transformers 4.x: in-memory names are the serialized names
    revert_weight_conversion = None


def serialized_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under the names ``save_pretrained`` would write."""
    state = model.state_dict()
    if revert_weight_conversion is None:
        return dict(state)
    return dict(revert_weight_conversion(model, dict(state)))
