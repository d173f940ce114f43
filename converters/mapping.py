"""State-dict key mappings as data.

A mapping is a tuple of rules a reader can scan, in the spirit of transformers' own
``conversion_mapping.py`` (``WeightRenaming``, ``WeightConverter`` with ``Chunk``). Each rule names its
source and target keys as full templates; ``{n}`` stands for a layer index. Because every rule is a
full-key template, a key matches at most one rule, the inverse mapping is derived rule by rule, and
the key sets a mapping consumes and produces for a given depth can be listed and checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch

from converters.errors import ConversionError

LAYER = "{n}"


def _pattern(template: str) -> re.Pattern[str]:
    if template.count(LAYER) > 1:
        raise ValueError(f"template {template!r} has more than one {LAYER} placeholder")
    return re.compile("^" + r"(0|[1-9]\d*)".join(re.escape(part) for part in template.split(LAYER)) + "$")


def shape_mismatch(
    tensors: Mapping[str, torch.Tensor], spec: Mapping[str, torch.Tensor]
) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """The first key whose tensor's shape differs from ``spec``'s: (key, found, expected); keys absent
    from ``tensors`` are the key-coverage check's business, not this one's."""
    for key, expected in spec.items():
        if key in tensors and tuple(tensors[key].shape) != tuple(expected.shape):
            return key, tuple(tensors[key].shape), tuple(expected.shape)
    return None


def key_difference(found: Iterable[str], expected: Iterable[str]) -> str:
    """What a key set lacks and what it has too many of, three names of each at most; empty if they agree."""
    found, expected = set(found), set(expected)
    missing, extra = sorted(expected - found), sorted(found - expected)
    parts = [f"{label} {keys[:3]}" for label, keys in (("missing", missing), ("unexpected", extra)) if keys]
    return ", ".join(parts)


def expand(template: str, layer: int | None) -> str:
    """The key a template names for a layer index (``layer`` is ignored for templates without ``{n}``)."""
    return template if layer is None else template.replace(LAYER, str(layer))


@dataclass(frozen=True)
class Rename:
    """One source key becomes one target key, tensor untouched."""

    source: str
    target: str

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,)

    def apply(self, tensors: tuple[torch.Tensor, ...], keys: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        return tensors

    def inverse(self) -> Rename:
        return Rename(self.target, self.source)


@dataclass(frozen=True)
class Split:
    """One fused source tensor becomes equal chunks along ``dim`` (a fused qkv projection, say).

    The chunks are views of the source: no copy is made here.
    """

    source: str
    targets: tuple[str, ...]
    dim: int = 0

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    def apply(self, tensors: tuple[torch.Tensor, ...], keys: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        (fused,) = tensors
        parts = len(self.targets)
        if fused.dim() <= self.dim or fused.shape[self.dim] % parts:
            raise ConversionError(
                f"{keys[0]} has shape {tuple(fused.shape)}, which does not split into {parts} equal parts "
                f"along dimension {self.dim}"
            )
        return tuple(torch.chunk(fused, parts, dim=self.dim))

    def inverse(self) -> Merge:
        return Merge(self.targets, self.source, self.dim)


@dataclass(frozen=True)
class Merge:
    """Several source tensors are concatenated along ``dim`` into one target (the inverse of Split)."""

    sources: tuple[str, ...]
    target: str
    dim: int = 0

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,)

    def apply(self, tensors: tuple[torch.Tensor, ...], keys: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        shapes = {tuple(t.shape[: self.dim]) + tuple(t.shape[self.dim + 1 :]) for t in tensors}
        if len(shapes) != 1:
            described = ", ".join(f"{k} {tuple(t.shape)}" for k, t in zip(keys, tensors, strict=True))
            raise ConversionError(f"cannot merge tensors of unequal shapes: {described}")
        return (torch.cat(tensors, dim=self.dim),)

    def inverse(self) -> Split:
        return Split(self.target, self.sources, self.dim)


@dataclass(frozen=True)
class Discard:
    """A source key that is consumed if present and has no target (an unused training head, say)."""

    source: str

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    @property
    def targets(self) -> tuple[str, ...]:
        return ()

    def apply(self, tensors: tuple[torch.Tensor, ...], keys: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        return ()


Rule = Rename | Split | Merge | Discard


@dataclass(frozen=True)
class KeyMapping:
    """An ordered tuple of rules, applied to a whole state dict at once."""

    rules: tuple[Rule, ...]

    @cached_property
    def _source_patterns(self) -> tuple[tuple[re.Pattern[str], int, int], ...]:
        return tuple(
            (_pattern(template), rule_index, slot)
            for rule_index, rule in enumerate(self.rules)
            for slot, template in enumerate(rule.sources)
        )

    def inverse(self) -> KeyMapping:
        """The mapping from targets back to sources; discarded keys have no way back and are left out."""
        return KeyMapping(tuple(rule.inverse() for rule in self.rules if not isinstance(rule, Discard)))

    def match(self, key: str) -> tuple[int, int, int | None] | None:
        """``(rule index, source slot, layer)`` of the rule that consumes ``key``, or None."""
        found = []
        for pattern, rule_index, slot in self._source_patterns:
            m = pattern.match(key)
            if m:
                found.append((rule_index, slot, int(m.group(1)) if m.groups() else None))
        if len(found) > 1:
            raise ValueError(f"mapping is ambiguous: {key!r} matches rules {[f[0] for f in found]}")
        return found[0] if found else None

    def converted_sources(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of ``state`` that become weights: matched by a rule that is not a Discard."""
        kept = {}
        for key, tensor in state.items():
            found = self.match(key)
            if found is not None and not isinstance(self.rules[found[0]], Discard):
                kept[key] = tensor
        return kept

    def source_keys(self, num_layers: int) -> list[str]:
        """Every key this mapping consumes for a model of ``num_layers`` layers, in rule order."""
        return self._keys(num_layers, lambda rule: rule.sources)

    def required_source_keys(self, num_layers: int) -> list[str]:
        """The source keys that must be present: all but the discarded ones."""
        return self._keys(num_layers, lambda rule: () if isinstance(rule, Discard) else rule.sources)

    def target_keys(self, num_layers: int) -> list[str]:
        """Every key this mapping produces for a model of ``num_layers`` layers, in rule order."""
        return self._keys(num_layers, lambda rule: rule.targets)

    def _keys(self, num_layers: int, side: Callable[[Rule], tuple[str, ...]]) -> list[str]:
        keys: list[str] = []
        for rule in self.rules:
            templates = side(rule)
            layered = any(LAYER in t for t in rule.sources + rule.targets)
            for layer in range(num_layers) if layered else [None]:
                keys.extend(expand(t, layer) for t in templates)
        return keys

    def num_layers(self, keys: Iterable[str]) -> int:
        """Depth implied by a key set: one more than the largest layer index any rule sees in it."""
        layers = [m[2] for m in map(self.match, keys) if m is not None and m[2] is not None]
        return max(layers) + 1 if layers else 0

    def apply(self, state: Mapping[str, torch.Tensor], *, where: str = "the checkpoint") -> dict[str, torch.Tensor]:
        """Convert a whole state dict; every source key must be consumed by exactly one rule.

        Raises ConversionError naming the first unexpected key (matched by no rule) or missing key
        (a rule's group is incomplete, or a layer below the deepest one is absent).
        """
        groups: dict[tuple[int, int | None], dict[int, str]] = {}
        for key in state:
            found = self.match(key)
            if found is None:
                raise ConversionError(f"unexpected key {key!r} in {where}: no mapping rule consumes it")
            rule_index, slot, layer = found
            groups.setdefault((rule_index, layer), {})[slot] = key

        expected = self.required_source_keys(self.num_layers(state))
        missing = [key for key in expected if key not in state]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ConversionError(f"missing key {missing[0]!r} in {where}{more}")

        converted: dict[str, torch.Tensor] = {}
        for (rule_index, layer), slots in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
            rule = self.rules[rule_index]
            keys = tuple(slots[slot] for slot in range(len(rule.sources)))
            outputs = rule.apply(tuple(state[k] for k in keys), keys)
            for template, tensor in zip(rule.targets, outputs, strict=True):
                converted[expand(template, layer)] = tensor
        return converted
