"""transformers' serialized (hub) key layout, across major versions.

transformers 5 renames some weights in memory (``layers.N.attention.q_proj``) and maps them back when
saving; 4.x keeps the serialized names in memory. Checkpoints are compared in the serialized layout,
the one every release reads.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import xxhash
from torch import nn


@functools.cache
def _reverter() -> Any:
    """transformers 5's reverse conversion, or None (4.x keeps the serialized names in memory); imported when
    first needed, its module costing 0.6 s (writing a mapped checkpoint needs none of it)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return None
    return revert_weight_conversion


# Per model class and in-memory key set: each in-memory name's serialized one, where reverting only renames.
_RENAMES: dict[tuple[type, tuple[str, ...]], dict[str, str]] = {}


def serialized_state(model: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """The model's state dict under the names ``save_pretrained`` would write.

    transformers 5 builds its reverse conversion afresh on each call (0.2 s for a wav2vec2 model); where it
    only renames (every tensor comes back as itself), the renames are kept for the next model of the same
    class and keys.
    """
    state = model.state_dict(keep_vars=keep_vars)
    revert_weight_conversion = _reverter()
    if revert_weight_conversion is None:
        return dict(state)
    known = (type(model), tuple(state))
    if known in _RENAMES:
        return {_RENAMES[known][key]: tensor for key, tensor in state.items()}
    reverted = dict(revert_weight_conversion(model, dict(state)))
    name_of = {id(tensor): key for key, tensor in state.items()}
    if len(reverted) == len(state) and len(name_of) == len(state) and all(id(t) in name_of for t in reverted.values()):
        _RENAMES[known] = {name_of[id(tensor)]: key for key, tensor in reverted.items()}
    return reverted


def taken_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``serialized_state``, the model left holding none of its tensors.

    A model loaded with weight norm (wav2vec2's positional convolution) sits in a reference cycle of torch's
    parametrization, which keeps the memory map of the file it was loaded from until the garbage collector
    runs (0.2 s for a full collection); emptied, the model pins nothing, and the tensors go with the dict.
    """
    state = serialized_state(model)
    empty(model)
    return state


def empty(model: nn.Module) -> None:
    """Drop every parameter and buffer the model's modules hold (the model is of no use afterwards)."""
    for module in model.modules():
        module._parameters.clear()
        module._buffers.clear()


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
