"""A derived value, and where it came from: what a report lists for every config and extractor field a converter
derives rather than copies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One derived field: its value and where it came from."""

    name: str
    value: Any
    source: str
