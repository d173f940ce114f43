"""transformers' serialized (hub) key layout, across major versions.

transformers 5 renames some weights in memory (``layers.N.attention.q_proj``) and maps them back when
saving; 4.x keeps the serialized names in memory. Checkpoints are compared in the serialized layout,
the one every release reads.
"""

from __future__ import annotations

from typing import Any

import torch
import xxhash
from torch import nn

revert_weight_conversion: Any
try:  # transformers >= 5
    from transformers.core_model_loading import revert_weight_conversion
except ImportError:  # transformers 4.x: in-memory names are the serialized names
    revert_weight_conversion = None


def serialized_state(model: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """The model's state dict under the names ``save_pretrained`` would write."""
    state = model.state_dict(keep_vars=keep_vars)
    if revert_weight_conversion is None:
        return dict(state)
    return dict(revert_weight_conversion(model, dict(state)))


@torch.no_grad()
def assign_serialized(model: nn.Module, tensors: dict[str, torch.Tensor]) -> set[str]:
    """Copy serialized-layout tensors into a model built in memory, whatever its in-memory names.

    The renames between the two layouts keep tensor identity, so each serialized name is matched to
    its parameter by identity; a tied parameter (one tensor under several names) is given by any of them.
    Returns the in-memory names of the parameters that were not given.
    """
    state = model.state_dict(keep_vars=True)
    names: dict[int, list[str]] = {}
    for name, tensor in state.items():
        names.setdefault(id(tensor), []).append(name)
    serialized = serialized_state(model, keep_vars=True)
    unassigned = set(state)
    for key, tensor in tensors.items():
        if key not in serialized:
            raise KeyError(f"{key} is not a serialized key of {type(model).__name__}")
        held = names[id(serialized[key])]
        state[held[0]].copy_(tensor)
        unassigned.difference_update(held)
    return unassigned


def load_serialized(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """``assign_serialized`` for a complete state: every parameter must be given."""
    unassigned = assign_serialized(model, tensors)
    if unassigned:
        raise KeyError(f"not given: {sorted(unassigned)[:3]}")
    return model


Digest = tuple[str, tuple[int, ...], str]


def digests(tensors: dict[str, torch.Tensor]) -> dict[str, Digest]:
    """dtype, shape and a 128-bit hash of every tensor's bytes: bitwise identity, checkable after the tensors
    are gone.

    Lets a conversion free the model it wrote before loading the written files back to compare them. The
    hash (XXH3-128) guards against accidents (a changed dtype, a transposed or re-initialised tensor), not
    against an adversary, who would write the files after the checks anyway; it reads ~10 GB/s where
    SHA-256 reads ~1.3 GB/s, a second per conversion of a 300M-parameter model.
    """
    result = {}
    for key, tensor in tensors.items():
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        result[key] = (str(tensor.dtype), tuple(tensor.shape), xxhash.xxh3_128_hexdigest(data.data))
    return result
