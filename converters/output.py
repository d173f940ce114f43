"""Writing a conversion's output so that it appears whole or not at all.

Files are written into a staging directory beside the target (same file system, so the final rename is
atomic) and the staging directory becomes the target only once every check has passed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from converters.errors import ConversionError

STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write tensors as safetensors; views that share storage (qkv chunks) are copied, others not."""
    seen: set[tuple[int, int]] = set()
    owned: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        owned[key] = tensor.clone() if storage in seen or not tensor.is_contiguous() else tensor
        seen.add(storage)
    save_file(owned, str(path), metadata={"format": "pt"})


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that exists and is not an empty directory, unless overwriting was asked for."""
    if target.exists() and not target.is_dir():
        raise ConversionError(f"output path {target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ConversionError(f"output directory {target} exists and is not empty; pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise ConversionError(f"the parent of output directory {target} does not exist")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_staging(target: Path) -> Path:
    """A fresh, hidden staging directory beside ``target``, with the permissions a mkdir would give."""
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
    staging.chmod(0o777 & ~_umask())
    return staging


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Move a complete staging directory to ``target``; an existing target is replaced as a whole."""
    for item in staging.iterdir():
        item.chmod(0o666 & ~_umask())  # safetensors writes 0600; the output is meant to be shared
        _fsync(item)
    _fsync(staging)
    retired = None
    if target.exists():
        check_target(target, overwrite)
        retired = Path(tempfile.mkdtemp(prefix=f"{RETIRED_PREFIX}{target.name}-", dir=target.parent))
        os.replace(target, retired / target.name)
    os.replace(staging, target)
    _fsync(target.parent)
    if retired is not None:
        shutil.rmtree(retired)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
