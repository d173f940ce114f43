"""Loading checkpoints that strangers publish, without running anything they carry.

Every load passes ``weights_only=True`` explicitly: left unset, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
in the environment would turn it off and run the pickle's code. Before torch reads a file, the archive
is checked for what torch does not check: compressed members (torch never writes them; they are how a
small file inflates to gigabytes) and every member's CRC (a flipped byte otherwise loads silently).
The load is memory-mapped, so tensors are views of the file and cannot claim more memory than its size;
torch does not then compare each storage with its data record, so that is checked after the load.
torch's legacy (pre-1.6, non-zip) format has no CRCs and allocates the storage sizes its pickle declares
before reading them, so it is refused with that reason. Failures become one-line ConversionErrors that
name the file and the cause.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from converters.errors import ConversionError, first_line


def _first_line(error: BaseException) -> str:
    """The first sentence of an error: torch follows the cause with paragraphs of advice."""
    return first_line(error).split(". ")[0].rstrip(".")


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a refused checkpoint references, read from the archive without running anything."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an archive broken in a way its checks did not see: the refusal says less
        return []


# A legacy torch file opens with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1).
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def check_archive(path: Path) -> None:
    """Refuse what torch would load unchecked: legacy files, compressed members, bad CRCs, size lies."""
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        with path.open("rb") as file:
            head = file.read(len(LEGACY_MAGIC))
        if head == LEGACY_MAGIC:
            raise ConversionError(
                f"checkpoint {path} is in torch's legacy (pre-1.6) format, which has no checksums and makes torch "
                f"allocate whatever its pickle declares; re-save it with torch.save and convert that file"
            )
        raise ConversionError(f"checkpoint {path} is not a readable PyTorch checkpoint (truncated or corrupt)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for member in members:
                if member.compress_type != zipfile.ZIP_STORED:
                    raise ConversionError(
                        f"checkpoint {path} has a compressed member {member.filename!r}, which torch never writes "
                        f"(a small file could inflate to {member.file_size} bytes); refusing it"
                    )
            claimed = sum(member.file_size for member in members)
            if claimed > size:
                raise ConversionError(f"checkpoint {path}: its members claim {claimed} bytes, more than its {size}")
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ConversionError(f"checkpoint {path} is a damaged zip archive: {_first_line(error)}") from None
    if damaged is not None:
        raise ConversionError(f"checkpoint {path}: member {damaged!r} fails its CRC check; the file is corrupt")


class SafeLoader:
    """Loads checkpoints with every check; ``remember=True``: a file whose version (device, inode, size,
    mtime) was checked is not checked again (its CRCs are not re-read).

    A conversion's session reads its source through one remembering loader; a file rewritten in between has
    a new version and is checked again. Library calls use a fresh loader each time: a test may rewrite a file
    in place within one clock tick.
    """

    def __init__(self, remember: bool = False) -> None:
        self._verified: dict[Path, tuple[int, int, int, int]] | None = {} if remember else None
        self.loads = 0  # how many times a file was mapped: once per session, where all goes well

    def load(self, path: Path, safe_globals: Iterable[Any] = ()) -> Any:
        """``torch.load`` with ``weights_only=True``, memory-mapped where the format allows.

        ``safe_globals`` is the allowlist (as for ``torch.serialization.safe_globals``), kept as small as
        the format needs. Never falls back to an unsafe load.
        """
        path = Path(path)
        if not path.is_file():
            raise ConversionError(f"checkpoint {path} does not exist or is not a file")
        status = path.stat()
        if status.st_size == 0:
            raise ConversionError(f"checkpoint {path} is empty")
        version = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        if self._verified is None or self._verified.get(path.resolve()) != version:
            check_archive(path)
            if self._verified is not None:
                self._verified[path.resolve()] = version
        self.loads += 1
        with torch.serialization.safe_globals(list(safe_globals)):  # also for naming what the allowlist lacks
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as error:
                if "Weights only load failed" in str(error):
                    names = ", ".join(_unsafe_globals(path)) or "an object outside the allowlist"
                    raise ConversionError(
                        f"checkpoint {path} refused: it references {names}, which a weights-only load does not "
                        f"allow (nothing in it was run)"
                    ) from None
                raise ConversionError(f"checkpoint {path} is corrupt: {_first_line(error)}") from None
            except Exception as error:  # damaged bytes surface as any error the unpickler meets (IndexError, ...)
                raise ConversionError(
                    f"checkpoint {path} is not a readable PyTorch checkpoint (truncated or corrupt): "
                    f"{_first_line(error)}"
                ) from None
        check_storage_records(path, loaded)
        return loaded


def load_checkpoint(path: Path, safe_globals: Iterable[Any] = ()) -> Any:
    """A checkpoint loaded with every check (``SafeLoader.load`` of a loader that remembers nothing)."""
    return SafeLoader().load(path, safe_globals)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a loaded object: iteratively (a pickle can nest deeper than the stack) and once."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:  # a pickle can make cycles
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
        elif hasattr(item, "__dict__"):  # the allowlisted stand-ins
            stack.extend(vars(item).values())


def check_storage_records(path: Path, loaded: Any) -> None:
    """Each storage the pickle declares must be exactly one data record of the archive.

    The memory-mapped load does not compare them (torch's plain load does): a record shorter than its
    storage, with valid CRCs, would load the bytes after it in the file as weights.
    """
    with zipfile.ZipFile(path) as archive:
        records = Counter(m.file_size for m in archive.infolist() if re.fullmatch(r"[^/]+/data/[^/]+", m.filename))
    storages = {}
    for tensor in _tensors(loaded):
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()  # views share one storage: count it once
    declared = Counter(storages.values())
    if unheld := declared - records:
        cause = f"its pickle declares a storage of {min(unheld.elements())} bytes that no data record holds"
    elif unclaimed := records - declared:
        cause = f"a data record of {min(unclaimed.elements())} bytes belongs to no storage its pickle declares"
    else:
        return
    raise ConversionError(f"checkpoint {path} is corrupt: {cause}")


def check_weights(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Floating-point weights only, and every value finite; the first offender is named."""
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ConversionError(f"{where}: {key} has dtype {tensor.dtype}, expected floating-point weights")
        # A sum first (30x faster than testing each value): NaN and inf carry through it, so a finite sum
        # means finite values. A non-finite one may be an overflow of finite values: then count.
        if torch.isfinite(tensor.sum()):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ConversionError(f"{where}: {key} holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN or inf)")


def weights_dtype(tensors: Mapping[str, torch.Tensor], where: str) -> torch.dtype:
    """The one floating dtype all weights share; a checkpoint that mixes dtypes is refused by name."""
    first: tuple[str, torch.dtype] | None = None
    for key, tensor in tensors.items():
        if first is None:
            first = (key, tensor.dtype)
        elif tensor.dtype != first[1]:
            raise ConversionError(
                f"{where} mixes dtypes: {first[0]} is {first[1]}, {key} is {tensor.dtype}; convert it to one first"
            )
    return torch.float32 if first is None else first[1]


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
