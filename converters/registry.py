"""Every converter, by format name: one line each. Everything that lists converters reads this.

Entries are imported on first use, so that a command's ``--help`` imports only its own record. A converter
defined elsewhere (a test, another package) joins with ``register``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from converters.contract import Converter

BUILT_IN = {
    "ast": "converters.ast.converter:CONVERTER",
    "s3prl": "converters.s3prl.converter:CONVERTER",
    "whisper": "converters.whisper.converter:CONVERTER",
}


class Registry:
    """Converters by name; built-in ones are imported when first asked for."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries: dict[str, str | Converter] = dict(entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Converter:
        entry = self._entries[name]  # KeyError: no such format
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        assert isinstance(entry, Converter), f"registry entry {name!r} is not a Converter"
        return entry

    def all(self) -> list[Converter]:
        return [self.get(name) for name in self.names()]

    def by_command(self, command: str) -> Converter:
        return next(converter for converter in self.all() if converter.command == command)

    def register(self, converter: Converter) -> None:
        """Add a converter; a name already taken is refused (replace one with ``registered`` in tests)."""
        if converter.name in self._entries:
            raise ValueError(f"a converter named {converter.name!r} is registered already")
        self._entries[converter.name] = converter

    def unregister(self, name: str) -> None:
        del self._entries[name]

    @contextlib.contextmanager
    def registered(self, converter: Converter) -> Iterator[Converter]:
        """``converter`` registered for the duration of a ``with`` block."""
        self.register(converter)
        try:
            yield converter
        finally:
            self.unregister(converter.name)


REGISTRY = Registry(BUILT_IN)
names, get, register, registered, unregister = (
    REGISTRY.names, REGISTRY.get, REGISTRY.register, REGISTRY.registered, REGISTRY.unregister,
)  # fmt: skip
all_converters, by_command = REGISTRY.all, REGISTRY.by_command
