"""State-dict key mappings as data.

A mapping is a tuple of rules a reader can scan, in the spirit of transformers' ``conversion_mapping.py``
(``WeightRenaming``, and ``WeightConverter`` whose operations carry a ``reverse_op``). A rule names its
source and target keys as full templates and transforms the tensors through a chain of operations, each
with an exact inverse. A placeholder (``{n}``, ``{enc}``, ``{dec}``) stands for an index; each placeholder
has a depth of its own, so an encoder of 32 layers and a decoder of 4 are one mapping. Because every
template is anchored at both ends, a key matches at most one rule (ambiguity is refused), the inverse
mapping is derived rule by rule, and the key sets a mapping consumes and produces for given depths can be
listed and checked. A tied target (a weight transformers shares between two names) is declared, not
converted twice.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch

from converters.errors import ConversionError

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
INDEX = r"(0|[1-9]\d*)"  # canonical numbers: blocks.01 would alias blocks.1
Depths = Mapping[str, int]


def placeholders(template: str) -> tuple[str, ...]:
    """The placeholder names of a template, in order; each may appear once."""
    names = tuple(PLACEHOLDER.findall(template))
    if len(set(names)) != len(names):
        raise ValueError(f"template {template!r} repeats a placeholder")
    return names


def _pattern(template: str) -> re.Pattern[str]:
    parts = PLACEHOLDER.split(template)  # text, name, text, name, ..., text
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{INDEX[1:-1]})" for i, part in enumerate(parts))
    return re.compile(f"^{regex}$")


def expand(template: str, indices: Mapping[str, int] | int | None) -> str:
    """The key a template names for placeholder indices (an int gives every placeholder that index)."""
    if indices is None:
        return template
    return PLACEHOLDER.sub(lambda m: str(indices if isinstance(indices, int) else indices[m[1]]), template)


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


Tensors = tuple[torch.Tensor, ...]


class Op:
    """One step of a rule: tensors in, tensors out, with an exact inverse (``inverse().apply`` undoes it)."""

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        raise NotImplementedError

    def inverse(self) -> Op:
        raise NotImplementedError


@dataclass(frozen=True)
class Chunk(Op):
    """One fused tensor into ``parts`` equal views along ``dim`` (no copy): a fused qkv projection, say."""

    parts: int
    dim: int = 0

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        (fused,) = tensors
        if fused.dim() <= self.dim or fused.shape[self.dim] % self.parts:
            raise ConversionError(
                f"{keys[0]} has shape {tuple(fused.shape)}, which does not split into {self.parts} equal parts "
                f"along dimension {self.dim}"
            )
        return tuple(torch.chunk(fused, self.parts, dim=self.dim))

    def inverse(self) -> Concat:
        return Concat(self.parts, self.dim)


@dataclass(frozen=True)
class Concat(Op):
    """``parts`` tensors concatenated along ``dim`` into one (the inverse of Chunk)."""

    parts: int
    dim: int = 0

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        shapes = {tuple(t.shape[: self.dim]) + tuple(t.shape[self.dim + 1 :]) for t in tensors}
        if len(shapes) != 1:
            described = ", ".join(f"{k} {tuple(t.shape)}" for k, t in zip(keys, tensors, strict=True))
            raise ConversionError(f"cannot merge tensors of unequal shapes: {described}")
        return (torch.cat(tensors, dim=self.dim),)

    def inverse(self) -> Chunk:
        return Chunk(self.parts, self.dim)


@dataclass(frozen=True)
class Transpose(Op):
    """Each tensor with two dimensions swapped (a view): its own inverse."""

    dim0: int = 0
    dim1: int = 1

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        for key, tensor in zip(keys, tensors, strict=False):
            if tensor.dim() <= max(self.dim0, self.dim1):
                raise ConversionError(f"{key} has shape {tuple(tensor.shape)}, which has no dimension to transpose")
        return tuple(t.transpose(self.dim0, self.dim1) for t in tensors)

    def inverse(self) -> Transpose:
        return self


@dataclass(frozen=True)
class Unsqueeze(Op):
    """Each tensor with a dimension of size one inserted at ``dim`` (a view)."""

    dim: int

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        return tuple(t.unsqueeze(self.dim) for t in tensors)

    def inverse(self) -> Squeeze:
        return Squeeze(self.dim)


@dataclass(frozen=True)
class Squeeze(Op):
    """Each tensor without its dimension ``dim``, which must have size one (a view)."""

    dim: int

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        for key, tensor in zip(keys, tensors, strict=False):
            if tensor.dim() <= self.dim or tensor.shape[self.dim] != 1:
                raise ConversionError(f"{key} has shape {tuple(tensor.shape)}, not size 1 in dimension {self.dim}")
        return tuple(t.squeeze(self.dim) for t in tensors)

    def inverse(self) -> Unsqueeze:
        return Unsqueeze(self.dim)


@dataclass(frozen=True)
class Rule:
    """Source templates become target templates through ``ops``, applied in order.

    A rule without targets consumes its sources and produces nothing (an unused training head, say); such a
    rule is ``optional``: its keys may be absent. Every template of a rule has the same placeholders.
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...] = ()
    ops: tuple[Op, ...] = ()
    optional: bool = False

    def __post_init__(self) -> None:
        names = {frozenset(placeholders(t)) for t in self.sources + self.targets}
        if len(names) > 1:
            raise ValueError(f"the templates of a rule must share their placeholders: {self.sources + self.targets}")

    @property
    def placeholders(self) -> tuple[str, ...]:
        return placeholders(self.sources[0])

    def apply(self, tensors: Tensors, keys: tuple[str, ...]) -> Tensors:
        if not self.targets:
            return ()
        for op in self.ops:
            tensors = op.apply(tensors, keys)
        if len(tensors) != len(self.targets):
            raise ValueError(f"rule {self.sources} -> {self.targets} makes {len(tensors)} tensors")
        return tensors

    def inverse(self) -> Rule | None:
        """The rule from targets back to sources; None for a rule without targets (nothing comes back)."""
        if not self.targets:
            return None
        return Rule(self.targets, self.sources, tuple(op.inverse() for op in reversed(self.ops)))


def Rename(source: str, target: str, *ops: Op) -> Rule:  # capitalised: each reads as a kind of rule in the tables
    """One source key becomes one target key (tensor untouched, unless ``ops`` say otherwise)."""
    return Rule((source,), (target,), ops)


def Split(source: str, targets: tuple[str, ...], dim: int = 0) -> Rule:
    """One fused source tensor becomes equal chunks along ``dim``, views of it: no copy is made here."""
    return Rule((source,), targets, (Chunk(len(targets), dim),))


def Merge(sources: tuple[str, ...], target: str, dim: int = 0) -> Rule:
    """Several source tensors are concatenated along ``dim`` into one target (the inverse of Split)."""
    return Rule(sources, (target,), (Concat(len(sources), dim),))


def Discard(source: str) -> Rule:
    """A source key that is consumed if present and has no target (an unused training head, say)."""
    return Rule((source,), optional=True)


@dataclass(frozen=True)
class Tie:
    """Target ``target`` is the same tensor as target ``to`` (transformers ties them and writes one)."""

    target: str
    to: str

    def __post_init__(self) -> None:
        if set(placeholders(self.target)) != set(placeholders(self.to)):
            raise ValueError(f"a tie must relate templates with the same placeholders: {self.target}, {self.to}")


Match = tuple[int, int, tuple[tuple[str, int], ...]]  # (rule index, source slot, placeholder indices)


@dataclass(frozen=True)
class KeyMapping:
    """An ordered tuple of rules, and the ties between targets, applied to a whole state dict at once."""

    rules: tuple[Rule, ...]
    ties: tuple[Tie, ...] = field(default=())

    @cached_property
    def _source_patterns(self) -> tuple[tuple[re.Pattern[str], int, int], ...]:
        return tuple(
            (_pattern(template), rule_index, slot)
            for rule_index, rule in enumerate(self.rules)
            for slot, template in enumerate(rule.sources)
        )

    def inverse(self) -> KeyMapping:
        """Targets back to sources. A rule without targets has no way back; a tied target, held by the
        target it is tied to, is consumed without a source of its own."""
        rules = tuple(back for rule in self.rules if (back := rule.inverse()) is not None)
        return KeyMapping(rules + tuple(Discard(tie.target) for tie in self.ties))

    def match(self, key: str) -> Match | None:
        """``(rule index, source slot, placeholder indices)`` of the rule that consumes ``key``, or None."""
        found = []
        for pattern, rule_index, slot in self._source_patterns:
            m = pattern.match(key)
            if m:
                found.append((rule_index, slot, tuple(sorted((k, int(v)) for k, v in m.groupdict().items()))))
        if len(found) > 1:
            raise ValueError(f"mapping is ambiguous: {key!r} matches rules {[f[0] for f in found]}")
        return found[0] if found else None

    def converted_sources(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of ``state`` that become weights: matched by a rule with targets."""
        kept = {}
        for key, tensor in state.items():
            found = self.match(key)
            if found is not None and self.rules[found[0]].targets:
                kept[key] = tensor
        return kept

    def depths(self, keys: Iterable[str]) -> dict[str, int]:
        """Each placeholder's depth in a key set: one more than the largest index any rule sees for it."""
        deepest: dict[str, int] = {}
        for found in map(self.match, keys):
            for name, index in found[2] if found is not None else ():
                deepest[name] = max(deepest.get(name, 0), index + 1)
        return deepest

    def num_layers(self, keys: Iterable[str]) -> int:
        """The depth of a mapping with one placeholder (0 where the keys hold no layer)."""
        return max(self.depths(keys).values(), default=0)

    def _expansions(self, names: tuple[str, ...], depths: Depths | int) -> Iterable[dict[str, int]]:
        counts = [depths if isinstance(depths, int) else depths.get(name, 0) for name in names]
        return (dict(zip(names, indices, strict=True)) for indices in itertools.product(*map(range, counts)))

    def _keys(self, depths: Depths | int, templates_of: str) -> list[str]:
        keys: list[str] = []
        for rule in self.rules:
            templates = {"sources": rule.sources, "required": () if rule.optional else rule.sources,
                         "targets": rule.targets}[templates_of]  # fmt: skip
            for indices in self._expansions(rule.placeholders, depths):
                keys.extend(expand(t, indices) for t in templates)
        if templates_of == "targets":
            for tie in self.ties:
                keys.extend(expand(tie.target, i) for i in self._expansions(placeholders(tie.target), depths))
        return keys

    def source_keys(self, depths: Depths | int) -> list[str]:
        """Every key this mapping consumes at these depths (one int: every placeholder's), in rule order."""
        return self._keys(depths, "sources")

    def required_source_keys(self, depths: Depths | int) -> list[str]:
        """The source keys that must be present: all but those of optional rules."""
        return self._keys(depths, "required")

    def target_keys(self, depths: Depths | int) -> list[str]:
        """Every key this mapping produces at these depths, tied targets last, in rule order."""
        return self._keys(depths, "targets")

    def tied_keys(self, depths: Depths | int) -> set[str]:
        """The targets that are another target's tensor (transformers writes them once)."""
        return set(self.tied_to(depths))

    def tied_to(self, depths: Depths | int) -> dict[str, str]:
        """Each tied target, and the target whose tensor it is."""
        return {expand(tie.target, i): expand(tie.to, i)
                for tie in self.ties for i in self._expansions(placeholders(tie.target), depths)}  # fmt: skip

    def apply(self, state: Mapping[str, torch.Tensor], *, where: str = "the checkpoint") -> dict[str, torch.Tensor]:
        """Convert a whole state dict; every source key must be consumed by exactly one rule.

        Raises ConversionError naming the first unexpected key (matched by no rule) or missing key
        (a rule's group is incomplete, or an index below the deepest one is absent).
        """
        groups: dict[tuple[int, tuple[tuple[str, int], ...]], dict[int, str]] = {}
        for key in state:
            found = self.match(key)
            if found is None:
                raise ConversionError(f"unexpected key {key!r} in {where}: no mapping rule consumes it")
            rule_index, slot, indices = found
            groups.setdefault((rule_index, indices), {})[slot] = key

        depths = self.depths(state)
        missing = [key for key in self.required_source_keys(depths) if key not in state]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ConversionError(f"missing key {missing[0]!r} in {where}{more}")

        converted: dict[str, torch.Tensor] = {}
        for (rule_index, indices), slots in sorted(groups.items()):
            rule = self.rules[rule_index]
            keys = tuple(slots[slot] for slot in range(len(rule.sources)))
            outputs = rule.apply(tuple(state[k] for k in keys), keys)
            for template, tensor in zip(rule.targets, outputs, strict=True):
                converted[expand(template, dict(indices))] = tensor
        for tie in self.ties:
            for tied in self._expansions(placeholders(tie.target), depths):
                converted[expand(tie.target, tied)] = converted[expand(tie.to, tied)]
        return converted
