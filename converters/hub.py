"""The user's local Hugging Face cache: files and model directories found there, never downloaded."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConversionError


def cached_hub_file(repo_id: str, filename: str, repo_type: str = "dataset") -> Path | None:
    """A file from the local Hugging Face cache, or None; never touches the network."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError and kin): the caller skips what needs it
        return None


def model_directory(name: str, what: str = "base model") -> Path:
    """A local model directory, or a hub name resolved from the local cache only."""
    path = Path(name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name.partition("@")[0])
    except HFValidationError:
        raise ConversionError(f"{what} {name!r} is neither a local directory nor a hub name (ORG/NAME)") from None
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not a directory and not cached: the same answer for every reason
        raise ConversionError(
            f"{what} {name!r} is neither a local directory nor in the local Hugging Face cache"
        ) from None
