"""Writing a conversion's output so that it appears whole or not at all.

Files are written into a staging directory beside the target (same file system, so the final rename is
atomic) and the staging directory becomes the target only once every check has passed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from converters.errors import ConversionError

if TYPE_CHECKING:
    import torch

STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write tensors as safetensors straight from their memory (a memory-mapped checkpoint, say).

    The qkv chunks are disjoint views of one tensor, which safetensors writes as they are; only a view
    that is not contiguous (a split along a later dimension) is copied.
    """
    from safetensors.torch import save_file  # torch: only when there is something to write

    save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, str(path), metadata={"format": "pt"})


def os_error_of(error: BaseException) -> OSError | None:
    """The operating system's error behind a failed write: an OSError, or safetensors' SafetensorError, which
    carries one in its text (``I/O error: No space left on device (os error 28)``) and removes the file it was
    writing, a model's weights."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"\(os error (\d+)\)", str(error)) if type(error).__name__ == "SafetensorError" else None
    return OSError(int(found[1]), os.strerror(int(found[1])), "model.safetensors") if found else None


def write_fault(error: OSError, doing: str, directory: Path, *, newest: bool = False) -> ConversionError:
    """An OSError while writing, as a refusal naming the cause and the file: ``no space left on device while
    writing model.safetensors into DIR``. The file is the error's own, else (``newest``: ``directory`` holds only
    what this conversion writes) the newest file in it, the one being written when the write failed."""
    cause = os.strerror(error.errno).lower() if error.errno else str(error)
    named = Path(error.filename).name if error.filename else None
    if named is None and newest and directory.is_dir():
        files = sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
        named = files[-1].name if files else None
    what = f"writing {named} into {directory}" if named else f"{doing} {directory}"
    return ConversionError(f"{cause} while {what}")


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove staging and retired directories that a killed run left beside ``target``.

    Their names carry the pid of the run that made them; those of live runs are left alone.
    """
    removed = []
    for prefix in (STAGING_PREFIX, RETIRED_PREFIX):
        # mkdtemp's suffix holds no "-": the live staging of a sibling target "out-2024" is not pid 2024's
        name = re.compile(rf"{re.escape(prefix + target.name)}-(\d+)-[^-]+")
        for path in target.parent.glob(f"{prefix}{target.name}-*"):
            made_by = name.fullmatch(path.name)
            if made_by and not _alive(int(made_by[1])):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def make_staging(target: Path) -> Path:
    """A fresh, hidden staging directory beside ``target``, with the permissions a mkdir would give."""
    prefix = f"{STAGING_PREFIX}{target.name}-{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    staging.chmod(0o777 & ~_umask())
    return staging


def flush_soon(directory: Path) -> threading.Thread:
    """Start writing ``directory``'s files back to disk (fsync) on a thread of its own, while the checks run:
    the fsyncs of ``publish``, which make them durable, then find little left to write. Join it before the
    directory is published or discarded."""

    def flush() -> None:
        for item in directory.iterdir():
            with contextlib.suppress(OSError):  # publish's own fsync reports what fails
                _fsync(item)

    thread = threading.Thread(target=flush, name="flush", daemon=True)
    thread.start()
    return thread


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # file system or kernel without exchange
        return False
    raise OSError(error, os.strerror(error), str(b))


def publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Make a complete staging directory the target, durably; an existing target is replaced as a whole.

    Every file and the directory are fsynced before the rename, and the parent after it, so a crash at
    any moment leaves either the old state or the complete new directory. An existing target is swapped
    with the staging directory in one atomic exchange where the system has one.
    """
    for item in staging.iterdir():
        item.chmod(0o666 & ~_umask())  # safetensors writes 0600; the output is meant to be shared
        _fsync(item)
    _fsync(staging)
    if target.exists():
        check_target(target, overwrite)
        if _exchange(staging, target):
            _fsync(target.parent)
            shutil.rmtree(staging)  # now holds what the target held
            return
        retired = Path(tempfile.mkdtemp(prefix=f"{RETIRED_PREFIX}{target.name}-{os.getpid()}-", dir=target.parent))
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        _fsync(target.parent)
        shutil.rmtree(retired)
        return
    os.rename(staging, target)
    _fsync(target.parent)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def atomic_text(path: Path, text: str) -> None:
    """``text`` into ``path``, replacing it whole: written beside it, flushed to disk, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
