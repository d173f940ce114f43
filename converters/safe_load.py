"""Loading checkpoints that strangers publish, without running anything they carry.

Every load passes ``weights_only=True`` explicitly: left unset, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
in the environment would turn it off and run the pickle's code. Failures become one-line
ConversionErrors that name the file and the cause.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from converters.errors import ConversionError


def _first_line(error: BaseException) -> str:
    """The first sentence of an error: torch follows the cause with paragraphs of advice."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(error).__name__


def _unsafe_globals(path: Path, error: BaseException) -> list[str]:
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # a broken archive: fall back to what the refusal said
            pass
    return re.findall(r"Unsupported global: GLOBAL (\S+)", str(error)) or re.findall(r"global '?([\w.]+)'?", str(error))


def load_checkpoint(path: Path, safe_globals: Iterable[Any] = ()) -> Any:
    """``torch.load`` with ``weights_only=True``, memory-mapped where the format allows.

    ``safe_globals`` is the allowlist (as for ``torch.serialization.safe_globals``), kept as small as
    the format needs. Never falls back to an unsafe load.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ConversionError(f"checkpoint {path} is empty")
    # torch memory-maps only its zip format; legacy (pre-1.6) files are read whole.
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            names = ", ".join(_unsafe_globals(path, error)) or "an object outside the allowlist"
            raise ConversionError(
                f"checkpoint {path} refused: it references {names}, which a weights-only load does not allow "
                f"(nothing in it was run)"
            ) from None
        raise ConversionError(f"checkpoint {path} is corrupt: {_first_line(error)}") from None
    except Exception as error:  # damaged bytes surface as any error the unpickler meets (IndexError, ...)
        raise ConversionError(
            f"checkpoint {path} is not a readable PyTorch checkpoint (truncated or corrupt): {_first_line(error)}"
        ) from None


def as_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    """Check that a loaded object is a flat mapping of names to tensors; name the first thing that is not."""
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"{where} holds a {type(obj).__name__}, expected a state dict (a mapping of names to tensors)"
        )
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ConversionError(f"{where} has a key of type {type(key).__name__} ({key!r}), expected names")
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{where}: {key!r} is a {type(value).__name__}, expected a tensor")
    return dict(obj)
