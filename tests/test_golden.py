"""The golden record's parts (``converters/golden.py``): fingerprints that move when a stage does and only then,
outputs held to what is left of the verification's tolerance, a file a reviewer reads line by line, the changes a
re-record prints, and the refusals of a record that cannot be read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from converters.errors import ConversionError
from converters.golden import (
    FINGERPRINT_RTOL,
    NOISE,
    SAMPLED,
    VERSION,
    Measured,
    Output,
    Record,
    drift,
    fingerprint,
    fingerprint_moved,
    float32_values,
    make_record,
    positions,
)


def values(seed: int, shape: tuple[int, ...] = (2, 50, 16)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_a_fingerprint_is_the_same_for_the_same_values_and_moves_when_one_does() -> None:
    tensor = values(1)
    assert (
        fingerprint(tensor) == fingerprint(tensor.clone())
        and fingerprint_moved(fingerprint(tensor), fingerprint(tensor)) == 0
    )
    moved = tensor.clone()
    moved[1, 7, 3] += 0.05  # one value of 1600, by about 1 % of the largest
    assert fingerprint_moved(fingerprint(tensor), fingerprint(moved)) > 10 * FINGERPRINT_RTOL


def test_a_fingerprint_sees_values_swapped_that_keep_every_statistic() -> None:
    """A permutation keeps the mean, the spread and the largest magnitude: the random projections see it."""
    tensor = values(2)
    swapped = tensor.flip(-1)
    found, recorded = fingerprint(swapped), fingerprint(tensor)
    assert found[:4] == pytest.approx(recorded[:4]) and fingerprint_moved(recorded, found) > 10 * FINGERPRINT_RTOL


def test_float32_rounding_does_not_move_a_fingerprint() -> None:
    tensor = values(3)
    rounded = (tensor.double() * (1 + 2**-23)).float()  # each value a rounding step or so away
    assert fingerprint_moved(fingerprint(tensor), fingerprint(rounded)) < FINGERPRINT_RTOL / 10


def test_a_stage_of_another_size_moved_without_measure() -> None:
    assert fingerprint_moved(fingerprint(values(4, (3, 5))), fingerprint(values(4, (3, 6)))) == math.inf
    assert fingerprint_moved(fingerprint(values(4)), [1.0]) == math.inf
    assert fingerprint(torch.zeros(0)) == [0.0]


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_recorded_values_read_back_as_the_float32_the_model_computed(numbers: list[float]) -> None:
    tensor = torch.tensor(numbers, dtype=torch.float32)
    written = json.loads(json.dumps(float32_values(tensor)))
    assert torch.equal(torch.tensor(written, dtype=torch.float32), tensor)


def test_an_output_is_measured_against_its_recorded_values_and_shape() -> None:
    tensor = values(5, (1, 8))
    output = Output([1, 8], float32_values(tensor), 1e-4)
    assert output.difference(tensor) == 0
    moved = tensor.clone()
    moved[0, 3] += 0.25
    assert output.difference(moved) == pytest.approx(0.25)
    assert output.difference(tensor.reshape(2, 4)) == math.inf


def test_a_large_output_is_held_at_a_seeded_sample_of_its_values() -> None:
    """A decoder's logits over its vocabulary: the record holds SAMPLED of them, the same positions the gate reads;
    a change at a position held is caught, the shape always."""
    tensor = values(8, (1, 4, 3000))
    record = make_record("e", "whisper", measured({"logits": tensor}), {"logits": (0.0, 1e-4)}, {})
    held = record.outputs["logits"]
    assert held.sampled and len(held.values) == SAMPLED and held.difference(tensor) == 0
    moved = tensor.clone()
    moved.view(-1)[positions(tensor.numel())[7]] += 0.5
    assert held.difference(moved) == pytest.approx(0.5)
    assert held.difference(tensor[..., :2999]) == math.inf
    assert torch.equal(positions(12000), positions(12000)) and len(set(positions(12000).tolist())) == SAMPLED


def measured(outputs: dict[str, torch.Tensor]) -> Measured:
    return Measured(
        tensors={"a.weight": ["torch.float32", [2, 2], "0" * 32]},
        fields={"config.json": {"layer_norm_eps": 1e-6}},
        recordings={"noise-1s": {"kind": "noise", "sha256": "f" * 64}},
        inputs={"noise-1s": [1.0, 0.0]},
        outputs=outputs,
        stages={"block 0": [4.0, 0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0]},
    )


def test_an_output_is_held_to_what_is_left_of_the_verifications_tolerance() -> None:
    """Within it, an output is within the verification's tolerance of the original's; where little is left, it is
    held to float32's run-to-run noise, which no gate can be held under."""
    small, large = torch.full((1, 3), 0.5), torch.full((1, 3), 40.0)
    record = make_record(
        "e", "ast", measured({"spent": small, "nearly": small, "large": large}),
        {"spent": (2e-5, 1e-4), "nearly": (1e-4 - 1e-9, 1e-4), "large": (1e-4 - 1e-9, 1e-4)},
        {"original": {"sha256": "0"}},
    )  # fmt: skip
    assert record.outputs["spent"].tolerance == pytest.approx(8e-5)
    assert record.outputs["nearly"].tolerance == NOISE
    assert record.outputs["large"].tolerance == pytest.approx(NOISE * 40)


def test_a_record_reads_back_as_written_one_line_per_tensor_field_and_output(tmp_path: Path) -> None:
    record = make_record("e", "ast", measured({"noise-1s": values(6, (1, 4))}), {"noise-1s": (0.0, 1e-4)},
                         {"original": {"sha256": "0"}})  # fmt: skip
    path = tmp_path / "goldens" / "e.json"
    record.write(path)
    assert Record.read(path) == record
    lines = path.read_text().splitlines()
    assert ' "tensors": {' in lines and '  "a.weight": ["torch.float32", [2, 2], "' + "0" * 32 + '"],' not in lines
    assert '  "a.weight": ["torch.float32", [2, 2], "' + "0" * 32 + '"]' in lines
    assert '   "layer_norm_eps": 1e-06' in lines
    assert not list(path.parent.glob(".*partial"))  # written beside, then renamed into place


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "golden record {path} does not exist: a verification against the original makes it"),
        ("{not json", "record {path} cannot be read: "),
        (
            json.dumps({"version": VERSION + 1}),
            f"record {{path}} is of version {VERSION + 1}; this tool reads {VERSION}",
        ),
        (json.dumps({"version": VERSION, "entry": "e"}), "record {path} cannot be read: "),
    ],
)
def test_a_record_that_cannot_be_read_is_refused_in_one_line(tmp_path: Path, content: str | None, said: str) -> None:
    path = tmp_path / "e.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConversionError) as refused:
        Record.read(path)
    assert str(refused.value).startswith(said.format(path=path)) and "\n" not in str(refused.value)


def test_drift_says_each_tensor_field_and_output_that_changed() -> None:
    old = make_record("e", "ast", measured({"noise-1s": torch.zeros(1, 3), "gone": torch.zeros(1)}),
                      {"noise-1s": (0.0, 1e-4)}, {"original": {"sha256": "0"}})  # fmt: skip
    changed = measured({"noise-1s": torch.tensor([[0.0, 0.3, 0.0]]), "new": torch.zeros(2)})
    changed.tensors["a.weight"] = ["torch.float32", [2, 2], "1" * 32]
    changed.fields["config.json"]["layer_norm_eps"] = 1e-12
    new = make_record("e", "ast", changed, {"noise-1s": (0.0, 1e-4)}, {"original": {"sha256": "0"}})
    assert drift(old, new) == [
        "tensors: 1 changed (first: a.weight)",
        "config.json layer_norm_eps: 1e-06 -> 1e-12",
        "output gone: gone",
        "output new: new",
        f"output noise-1s: largest change 0.3 (tolerance {new.outputs['noise-1s'].tolerance:.3g})",
    ]
    reshaped = measured({"noise-1s": torch.zeros(3)})
    assert drift(old, make_record("e", "ast", reshaped, {}, {}))[1] == "output noise-1s: shape [1, 3] -> [3]"


README = Path(__file__).parents[1] / "README.md"
GATE_RECORD = Path(__file__).parents[1] / "fixtures" / "gate" / "goldens" / "ast-example.json"


def test_readmes_record_excerpt_is_the_committed_records() -> None:
    """Each line of README's excerpt is a line of fixtures/gate's AST record (one ending in ``...``, its start)."""
    text = README.read_text()
    start = text.index("An excerpt of `fixtures/gate/goldens/ast-example.json`")
    block = text[text.index("```\n", start) + 4 : text.index("```", text.index("```\n", start) + 4)]
    lines = GATE_RECORD.read_text().splitlines()
    for shown in block.splitlines():
        cut = shown.endswith("...")
        assert any(line.startswith(shown[:-3]) if cut else line == shown for line in lines), shown


def test_readmes_account_of_the_recordings_is_the_built_in_ones() -> None:
    from converters.recordings import RECORDINGS

    seconds = sorted(recording.seconds for recording in RECORDINGS)
    levels = sorted(recording.rms for recording in RECORDINGS if recording.kind != "speech")
    said = f"seeded; {seconds[0]:g} to {seconds[-1]:g} s; {levels[0]:g} to\n{levels[-1]:g} RMS"
    assert " ".join(said.split()) in " ".join(README.read_text().split())
