"""What a gate against a golden record runs on: the entry's converter and its hooks (made without a source), the
directory, the record, and the entry's original's digest where the entry has it (``converters/golden_checks.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.contract import Conversion, Converter
from converters.golden import Record


def builtin_recordings() -> dict[str, str]:
    from converters.recordings import RECORDINGS

    return {recording.name: recording.sha256 for recording in RECORDINGS}


@dataclass
class Gate:
    converter: Converter
    hooks: Conversion  # ``recorded`` and ``taps``: no source is read
    directory: Path
    record: Record
    record_path: Path
    original_sha256: str | None = None  # the entry's original, where it has one
    recordings: dict[str, str] = field(default_factory=builtin_recordings)
    verifying: bool = True  # a directory written before: the session's mode
    options: dict[str, Any] = field(default_factory=dict)
