"""The divergence locator's rules, on two small hand-made models whose differences are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from converters.locator import (
    Divergence,
    Stage,
    StageDifference,
    Tap,
    first_input,
    largest_difference,
    locate,
    output,
)


def chain(*biases: float) -> nn.Sequential:
    """Identity layers that add a constant each: every stage's value, and so every difference, is exact."""
    layers = []
    for bias in biases:
        layer = nn.Linear(2, 2)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(2))
            layer.bias.fill_(bias)
        layers.append(layer)
    return nn.Sequential(*layers)


def stages(original: nn.Sequential, converted: nn.Sequential, **options: object) -> list[Stage]:
    pairs = enumerate(zip(original, converted, strict=True))
    return [Stage(f"layer {i}", Tap(a), Tap(b), **options) for i, (a, b) in pairs]  # type: ignore[arg-type]


def run_both(original: nn.Module, converted: nn.Module, x: torch.Tensor | None = None) -> object:
    x = torch.ones(1, 2) if x is None else x
    return lambda: (original(x), converted(x))


def test_every_stage_is_measured_and_the_first_past_its_tolerance_named() -> None:
    original, converted = chain(1.0, 1.0, 1.0), chain(1.0, 1.5, 1.0)
    found = locate(stages(original, converted), run_both(original, converted), atol=0.1)  # type: ignore[arg-type]
    assert [(s.stage, s.difference, s.tolerance) for s in found.stages] == [
        ("layer 0", 0.0, 0.1),
        ("layer 1", 0.5, 0.1),
        ("layer 2", 0.5, 0.1),
    ]
    assert found.first is found.stages[1]
    assert found.summary() == "first divergence at layer 1: largest difference 0.5 (tolerance 0.1)"


def test_the_tolerance_grows_with_the_original_values_magnitude() -> None:
    original, converted = chain(3.0), chain(3.25)
    found = locate(stages(original, converted), run_both(original, converted), atol=0.01, rtol=0.1)  # type: ignore[arg-type]
    (stage,) = found.stages
    assert stage.tolerance == pytest.approx(0.01 + 0.1 * 4.0)  # the original's output is 1 + 3 everywhere
    assert stage.difference == 0.25 and found.first is None


def test_a_stage_tolerance_and_note_override_the_rule() -> None:
    original, converted = chain(0.0), chain(0.5)
    taps = stages(original, converted, tolerance=1.0, note="by design")
    (stage,) = locate(taps, run_both(original, converted), atol=0.0).stages  # type: ignore[arg-type]
    assert (stage.tolerance, stage.note, stage.diverged) == (1.0, "by design", False)


def test_a_faithful_pair_leaves_no_stage() -> None:
    original, converted = chain(1.0, 2.0), chain(1.0, 2.0)
    found = locate(stages(original, converted), run_both(original, converted), atol=0.0)  # type: ignore[arg-type]
    assert found.first is None
    assert found.summary() == "no stage of 2 leaves the original"


def test_a_stage_one_side_never_reaches_is_infinitely_far() -> None:
    original, converted = chain(1.0, 1.0), chain(1.0, 1.0)
    found = locate(
        stages(original, converted), lambda: (original(torch.ones(1, 2)), converted[0](torch.ones(1, 2))), atol=1.0
    )
    assert [s.difference for s in found.stages] == [0.0, math.inf]
    assert found.first is found.stages[1]


def test_nan_diverges_and_shapes_that_differ_are_infinitely_far() -> None:
    assert StageDifference("nan", math.nan, 1.0).diverged
    assert not StageDifference("equal", 1.0, 1.0).diverged
    assert StageDifference("past", 1.5, 1.0).diverged
    assert largest_difference(torch.zeros(2), torch.zeros(3)) == math.inf
    assert largest_difference(torch.zeros(0), torch.zeros(0)) == 0.0
    assert largest_difference(torch.tensor([1.0, -2.0]), torch.tensor([1.0, 1.0])) == 3.0


def test_readers_take_a_modules_output_or_its_input() -> None:
    x, y = torch.ones(1), torch.zeros(1)
    assert output(nn.Identity(), (x,), (y, x)) is y  # attention modules return (value, weights)
    assert output(nn.Identity(), (x,), y) is y
    assert first_input(nn.Identity(), (x, y), None) is x


def test_the_hooks_are_removed_even_when_the_run_fails() -> None:
    original, converted = chain(1.0), chain(1.0)

    def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        locate(stages(original, converted), failing, atol=0.0)  # type: ignore[arg-type]
    assert not original[0]._forward_hooks and not converted[0]._forward_hooks
    locate(stages(original, converted), run_both(original, converted), atol=0.0)  # type: ignore[arg-type]
    assert not original[0]._forward_hooks and not converted[0]._forward_hooks


def test_stage_names_must_be_unique() -> None:
    original, converted = chain(1.0, 1.0), chain(1.0, 1.0)
    twice = [Stage("same", Tap(original[i]), Tap(converted[i])) for i in range(2)]
    with pytest.raises(ValueError, match="stage names must be unique"):
        locate(twice, run_both(original, converted), atol=0.0)  # type: ignore[arg-type]


def test_the_worst_stage_is_the_furthest_relative_to_its_tolerance() -> None:
    found = Divergence((StageDifference("large but allowed", 5.0, 10.0), StageDifference("small but tight", 0.3, 0.1)))
    assert found.worst().stage == "small but tight"


def test_the_table_lines_up_columns_and_marks_the_first_divergence() -> None:
    found = Divergence(
        (
            StageDifference("patch embedding", 0.0, 1e-9),
            StageDifference("block 0", 0.25, 1e-9),
            StageDifference("head", 0.5, 1e-4, "by design: eps"),
        )
    )
    assert found.table() == "\n".join(
        [
            "stage            largest difference  tolerance",
            "patch embedding  0                   1e-09",
            "block 0          0.25                1e-09      <- first divergence",
            "head             0.5                 0.0001     [1]",
            "",
            "[1] by design: eps",
        ]
    )


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_a_stage_with_nothing_in_it_has_no_difference_and_the_bare_tolerance() -> None:
    """An empty value (a zero-length sequence, say) differs by 0 and scales its tolerance by nothing."""
    empty = nn.Linear(2, 0)
    found = locate([Stage("empty", Tap(empty), Tap(empty))], lambda: empty(torch.ones(1, 2)), atol=0.5, rtol=10.0)
    assert [(s.difference, s.tolerance) for s in found.stages] == [(0.0, 0.5)]
