"""The divergence locator's rules, on two small hand-made models whose differences are known exactly."""

from __future__ import annotations

import copy
import math
import weakref
from typing import Any

import pytest
import torch
from torch import nn

from converters.locator import (
    Divergence,
    Stage,
    StageDifference,
    Tap,
    first_input,
    float64_in_turn,
    largest_difference,
    locate,
    locate_side_by_side,
    output,
    widened_in_turn,
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


class Held(nn.Module):
    """An identity that counts how many of its outputs' storages are alive at once: what the locator holds."""

    def __init__(self, alive: list[int], most: list[int]) -> None:
        super().__init__()
        self.alive, self.most = alive, most

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + 0.0
        self.alive[0] += 1
        self.most[0] = max(self.most[0], self.alive[0])
        weakref.finalize(out.untyped_storage(), lambda: self.alive.__setitem__(0, self.alive[0] - 1))
        return out


def test_side_by_side_measures_as_one_after_the_other() -> None:
    original, converted = chain(1.0, 1.0, 1.0), chain(1.0, 1.5, 1.0)
    x = torch.ones(1, 2)
    together = locate_side_by_side(stages(original, converted), lambda: original(x), lambda: converted(x), atol=0.1)
    apart = locate(stages(original, converted), run_both(original, converted), atol=0.1)  # type: ignore[arg-type]
    assert together == apart and together.first is together.stages[1]
    assert not any(m._forward_hooks for m in [*original, *converted])


def test_side_by_side_holds_one_stage_of_each_model_at_a_time() -> None:
    """Each stage's values are compared when both are read and let go: neither side's values pile up, however many
    stages there are (one after the other, the original's would all be held until the converted ran)."""
    alive, most = [0], [0]
    original = nn.Sequential(*(Held(alive, most) for _ in range(12)))
    converted = nn.Sequential(*(Held(alive, most) for _ in range(12)))
    x = torch.ones(1, 2)
    found = locate_side_by_side(stages(original, converted), lambda: original(x), lambda: converted(x), atol=0.0)
    assert found.first is None and len(found.stages) == 12
    assert most[0] <= 6  # each side: its stage, the next module's output being made, a value waiting to meet
    alive[0], most[0] = 0, 0
    locate(stages(original, converted), run_both(original, converted), atol=0.0)  # type: ignore[arg-type]
    assert most[0] == 24  # one after the other: every stage of both, held until the end


def test_side_by_side_a_stage_one_side_skips_is_infinitely_far_and_nothing_waits_forever() -> None:
    original, converted = chain(1.0, 1.0, 1.0), chain(1.0, 1.0, 1.0)
    x = torch.ones(1, 2)
    skipping = lambda: converted[2](converted[0](x))  # noqa: E731 - never runs stage 1
    found = locate_side_by_side(stages(original, converted), lambda: original(x), skipping, atol=0.0)
    assert [s.difference for s in found.stages] == [0.0, math.inf, 1.0]
    ended = locate_side_by_side(stages(original, converted), lambda: original(x), lambda: None, atol=0.0)
    assert [s.difference for s in ended.stages] == [math.inf] * 3


def test_side_by_side_raises_what_a_side_raised_and_removes_its_hooks() -> None:
    original, converted = chain(1.0, 1.0), chain(1.0, 1.0)

    def failing() -> None:
        converted[0](torch.ones(1, 2))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        locate_side_by_side(stages(original, converted), lambda: original(torch.ones(1, 2)), failing, atol=0.0)
    assert not any(m._forward_hooks for m in [*original, *converted])


def test_float64_in_turn_widens_each_unit_only_while_it_runs_and_gives_back_its_own_tensors() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), nn.Linear(3, 2))
    own = {name: tensor for name, tensor in model.state_dict(keep_vars=True).items()}
    storages = {name: tensor.data.data_ptr() for name, tensor in own.items()}
    seen: dict[str, torch.dtype] = {}
    first, unit, last = model
    inner: Any = unit
    last.register_forward_pre_hook(lambda m, a: seen.__setitem__("unit after", inner[0].weight.dtype))
    head: Any = first
    unit.register_forward_pre_hook(lambda m, a: seen.__setitem__("rest", head.weight.dtype))
    x = torch.randn(4, 3, dtype=torch.float64)
    expected = copy.deepcopy(model).double()(x)
    with float64_in_turn(model, [unit]):
        out = model(x)
    assert seen == {"rest": torch.float64, "unit after": torch.float32}
    assert out.dtype == torch.float64 and torch.equal(out, expected)
    for name, tensor in model.state_dict(keep_vars=True).items():
        assert tensor is own[name] and tensor.dtype == torch.float32 and tensor.data.data_ptr() == storages[name]


def test_float64_in_turn_gives_back_a_unit_whose_forward_raised() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    model[0].register_forward_hook(lambda m, a, o: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"), float64_in_turn(model, [model[0]]):
        model(torch.randn(1, 3, dtype=torch.float64))
    assert model[0].weight.dtype == torch.float32


def test_widened_in_turn_computes_what_a_widened_copy_computes_and_widens_a_shared_tensor_once() -> None:
    """float16 weights computing in float32: the same outputs, bit for bit, as a float32 copy; a weight two modules
    share (tied embeddings) is one float32 tensor while it is widened, and each module gets its own back."""
    torch.manual_seed(0)
    embed, block, head = (
        nn.Embedding(7, 4),
        nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)),
        nn.Linear(4, 7, bias=False),
    )
    head.weight = embed.weight
    model = nn.Sequential(embed, block, head).half()
    expected = copy.deepcopy(model).float()(torch.arange(7))
    seen: list[bool] = []
    block.register_forward_pre_hook(lambda m, a: seen.append(head.weight is embed.weight))
    with widened_in_turn(model, [block], torch.float32):
        out = model(torch.arange(7))
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    assert seen == [True]
    assert (
        head.weight is embed.weight and embed.weight.dtype == torch.float16 and block[0].weight.dtype == torch.float16
    )
