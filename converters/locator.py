"""Where a converted model leaves the original: the first stage, in forward order, whose value differs.

A stage pairs a module of the original model with the module of the converted model that should compute
the same value. Forward hooks on both read those values while each model runs its own ``forward``: no
stage recomputes either model's code. The locator reports the largest absolute difference of every stage
and names the first one past its tolerance; a mistake upstream shows in every later stage too, so the
first is where to look.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# (module, positional inputs, output) -> the value to compare
Reader = Callable[[nn.Module, tuple[Any, ...], Any], torch.Tensor]


def output(module: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
    """A module's output; the first element of a tuple (attention modules return their weights too)."""
    return out[0] if isinstance(out, tuple) else out


def first_input(module: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
    """What a module was given: the value computed just before it, where no module returns it."""
    return args[0]


@dataclass(frozen=True)
class Tap:
    """One value read off one module while its model runs."""

    module: nn.Module
    read: Reader = output


@dataclass(frozen=True)
class Stage:
    """A value both models compute. ``tolerance`` fixes the allowed difference where the two differ by
    design (``note`` says how); otherwise it is ``atol + rtol * largest magnitude of the original's value``."""

    name: str
    original: Tap
    converted: Tap
    tolerance: float | None = None
    note: str = ""


@dataclass(frozen=True)
class StageDifference:
    stage: str
    difference: float
    tolerance: float
    note: str = ""

    @property
    def diverged(self) -> bool:
        return not self.difference <= self.tolerance  # NaN diverges


@dataclass(frozen=True)
class Divergence:
    """Every stage's largest difference, in forward order."""

    stages: tuple[StageDifference, ...]

    @property
    def first(self) -> StageDifference | None:
        return next((stage for stage in self.stages if stage.diverged), None)

    def worst(self) -> StageDifference:
        """The stage with the largest difference relative to its (positive) tolerance: the one a report quotes."""
        return max(self.stages, key=lambda stage: stage.difference / stage.tolerance)

    def summary(self) -> str:
        first = self.first
        if first is None:
            return f"no stage of {len(self.stages)} leaves the original"
        return (
            f"first divergence at {first.stage}: largest difference {first.difference:.3g} "
            f"(tolerance {first.tolerance:.3g})"
        )

    def table(self) -> str:
        """Every stage's difference beside its tolerance, the first divergence marked; notes (why a tolerance
        differs by design) numbered below, so that no row runs wide."""
        rows = [("stage", "largest difference", "tolerance", "")]
        first = self.first
        notes: list[str] = []
        for stage in self.stages:
            marks = ["<- first divergence"] if stage is first else []
            if stage.note:
                notes.append(stage.note)
                marks.append(f"[{len(notes)}]")
            rows.append((stage.stage, f"{stage.difference:.3g}", f"{stage.tolerance:.3g}", " ".join(marks)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[3]]).rstrip()
                 for row in rows]  # fmt: skip
        return "\n".join(lines + ([""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)] if notes else []))


class _Recorder:
    """Forward hooks that keep, per stage, what each side's tap read (the last call wins)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.values: dict[tuple[str, str], torch.Tensor] = {}
        self.handles = [
            tap.module.register_forward_hook(self._hook(stage.name, side, tap.read))
            for stage in stages
            for side, tap in (("original", stage.original), ("converted", stage.converted))
        ]

    def _hook(self, name: str, side: str, read: Reader) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            self.values[(name, side)] = read(module, args, out).detach()

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def largest_difference(original: torch.Tensor, converted: torch.Tensor) -> float:
    """Largest absolute difference (in float64); infinite where the shapes differ."""
    if original.shape != converted.shape:
        return float("inf")
    if not original.numel():
        return 0.0
    return (original.double() - converted.double()).abs().max().item()


def _largest(tensor: torch.Tensor) -> float:
    return tensor.double().abs().max().item() if tensor.numel() else 0.0


@torch.no_grad()
def locate(stages: Sequence[Stage], run: Callable[[], object], *, atol: float, rtol: float = 0.0) -> Divergence:
    """Run both models once (``run`` does, in the order they need) and compare every stage.

    A stage one side never reached reads as an infinite difference: the models do not even share a path.
    """
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    recorder = _Recorder(stages)
    try:
        run()
    finally:
        recorder.remove()
    found = []
    for stage in stages:
        original = recorder.values.get((stage.name, "original"))
        converted = recorder.values.get((stage.name, "converted"))
        if original is None or converted is None:
            difference, scale = float("inf"), 0.0
        else:
            difference, scale = largest_difference(original, converted), _largest(original)
        tolerance = stage.tolerance if stage.tolerance is not None else atol + rtol * scale
        found.append(StageDifference(stage.name, difference, tolerance, stage.note))
    return Divergence(tuple(found))
