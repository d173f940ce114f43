"""A directory's weights compared with what the converter would write, streamed: digests kept, never a second copy
of the model (``tests/test_verified_weights.py`` measures it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Staged:
    """What the checks keep of the weights files (written, or verified): digests, not tensors, so nothing holds
    the source's memory."""

    written: dict[str, Any]  # serialized key -> digest of what the files hold
    mapped: dict[str, Any]  # mapped key -> digest of the mapped tensor in the dtype it was written in
    tied: frozenset[str]  # targets transformers ties to another (written once)
    differing: tuple[str, ...] = ()  # verifying: each tensor that is not what the converter would write, why
    ties: Mapping[str, str] = field(default_factory=dict)  # each tied target, and the target it is tied to


# A verification reads the directory's tensors a batch at a time, each batch through a mapping of its own that
# is closed before the next: pages of a file stay resident while it is mapped, so one mapping for the whole
# directory would hold a second copy of the model beside what the converter would write.
BATCH_BYTES = 128 * 2**20
_ITEM_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2}


def compared(directory: Path, expected: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Digests of every tensor of a directory's safetensors files, and each that differs from ``expected``
    (in the expected order), holding about ``BATCH_BYTES`` of the directory at a time."""
    from safetensors import safe_open

    held: dict[str, Any] = {}
    described: dict[str, str] = {}
    if not any(directory.glob("*.safetensors")):  # a directory of PyTorch pickles (pytorch_model.bin, or its shards)
        return _compare_pickled(directory, expected, described)
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, "pt") as weights:
            sizes = {}
            for key in weights.keys():  # noqa: SIM118 - safe_open is no mapping
                part = weights.get_slice(key)
                sizes[key] = math.prod(part.get_shape()) * _ITEM_BYTES.get(part.get_dtype(), 1)
        batches: list[list[str]] = [[]]
        total = 0
        for key, size in sizes.items():
            if batches[-1] and total + size > BATCH_BYTES:
                batches.append([])
                total = 0
            batches[-1].append(key)
            total += size
        for batch in batches:
            held.update(_compare_batch(path, batch, expected, described))
    return held, tuple(described[key] for key in expected if key in described)


def _compare_pickled(
    directory: Path, expected: dict[str, Any], described: dict[str, str]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``compared`` for ``pytorch_model*.bin`` files: each read safely (weights only, archive checked), whole."""
    from converters.hub_layout import digests
    from converters.safe_load import SafeLoader, as_state_dict

    held: dict[str, Any] = {}
    loader = SafeLoader()
    for path in sorted(directory.glob("pytorch_model*.bin")):
        found = as_state_dict(loader.load(path), str(path))
        for key, theirs in found.items():
            if key in expected and (why := difference(key, theirs, expected[key])) is not None:
                described[key] = why
        held.update(digests(found))
        found.clear()
    return held, tuple(described[key] for key in expected if key in described)


def _compare_batch(path: Path, keys: list[str], expected: dict[str, Any], described: dict[str, str]) -> dict[str, Any]:
    """The digests of ``keys`` in ``path``; each that differs from ``expected`` described. The batch's mapping
    closes when its tensors go, on return."""
    from safetensors import safe_open

    from converters.hub_layout import digests

    with safe_open(path, "pt") as weights:
        found = {key: weights.get_tensor(key) for key in keys}
    for key, theirs in found.items():
        if key in expected and (why := difference(key, theirs, expected[key])) is not None:
            described[key] = why
    return digests(found)


def difference(key: str, theirs: Any, tensor: Any) -> str | None:
    """How a directory's tensor differs from what the converter writes: dtype, shape, or its largest difference.
    The converter's values widened exactly (float16 weights saved as float32, as transformers' own Whisper script
    saves openai-whisper's) are the same function's: no difference."""
    if theirs.shape == tensor.shape and widened(tensor, theirs):
        return None
    if theirs.dtype != tensor.dtype or theirs.shape != tensor.shape:
        return (
            f"{key} is {theirs.dtype} {tuple(theirs.shape)}, the converter writes {tensor.dtype} {tuple(tensor.shape)}"
        )
    if not theirs.equal(tensor):
        largest = (theirs.double() - tensor.double()).abs().max().item()
        return f"{key} differs from what the converter writes by {largest:.3g} (largest difference)"
    return None


def widened(narrow: Any, wide: Any) -> bool:
    """``wide`` holds exactly ``narrow``'s floating values in a floating dtype of more bits."""
    import torch

    if not (narrow.is_floating_point() and wide.is_floating_point()) or narrow.dtype == wide.dtype:
        return False
    if torch.finfo(wide.dtype).bits <= torch.finfo(narrow.dtype).bits:
        return False
    return bool(torch.equal(narrow.to(wide.dtype), wide))
