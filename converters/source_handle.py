"""The source of a check session, read once and let go before the written model is loaded back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from converters.contract import Source


class SourceHandle:
    """The source, read once and held until released: the checkpoint is mapped once per session, and its
    pages are let go before the written model is loaded back.

    The session's fixtures keep what they returned, so releasing empties those mappings in place (the source's
    tensors, the mapped views of them): the last references go, and the file is unmapped then and there.
    """

    def __init__(self, read: Callable[[], Source]) -> None:
        self._read = read
        self._source: Source | None = None
        self._held: list[dict[str, Any]] = []

    def get(self) -> Source:
        if self._source is None:
            self._source = self._read()
            self._held.append(self._source.tensors)
        return self._source

    def hold(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """``tensors`` (views of the source) are emptied when the source is released."""
        self._held.append(tensors)
        return tensors

    def release(self) -> None:
        for tensors in self._held:
            tensors.clear()
        self._held.clear()
        self._source = None
