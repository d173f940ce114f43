"""The checks every conversion runs, whatever its format (a converter's own checks module adds the rest).

Each test is one check; its fixtures come from the session (``converters/session.py``), which calls the
conversion's hooks. The ``check`` marker orders them (a converter's checks slot in between by number).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from converters.contract import Comparison, Conversion, Source, Target
from converters.errors import ConversionError
from converters.hub_layout import digests, serialized_state
from converters.mapping import KeyMapping, key_difference, shape_mismatch
from converters.safe_load import check_weights
from converters.session import Staged


def written_shapes(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor the written safetensors files hold, as shape-only tensors read from their headers."""
    shapes = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, "pt") as written:
            for key in written.keys():  # noqa: SIM118 - safe_open is no mapping
                shapes[key] = torch.empty(written.get_slice(key).get_shape(), device="meta")
    return shapes


@pytest.mark.check(order=10)
def test_source_loads_safely(conversion: Conversion, source: Source) -> None:
    """Loaded with weights_only=True (passed explicitly), its archive checked first, nothing in it run."""
    assert source.tensors, f"{conversion.where} holds no tensors"


@pytest.mark.check(order=20)
def test_source_weights_are_finite_floats(conversion: Conversion, source: Source, mapping: KeyMapping) -> None:
    check_weights(mapping.converted_sources(source.tensors), conversion.where)


@pytest.mark.check(order=30)
def test_every_source_key_is_consumed(source: Source, mapping: KeyMapping, converted: dict[str, Any]) -> None:
    """Each key is used by exactly one rule, and every key the target needs is there."""
    produced = set(mapping.target_keys(mapping.depths(source.tensors)))
    assert converted.keys() == produced, f"the mapping produced {key_difference(converted, produced)} keys"


@pytest.mark.check(order=40)
def test_source_shapes_fit_the_target(
    conversion: Conversion, source: Source, expected_source: dict[str, Any], target: Target
) -> None:
    mismatch = shape_mismatch(source.tensors, expected_source)
    if mismatch:
        key, found, expected = mismatch
        raise ConversionError(f"{key} in {conversion.where} has shape {found}, but {target.needs} needs {expected}")


@pytest.mark.check(order=60)
def test_every_target_key_is_written(conversion: Conversion, staged: Staged, target: Target) -> None:
    """The written files hold exactly the keys transformers' model for this config serializes."""
    difference = key_difference(written_shapes(conversion.staging), target.spec.keys() - staged.tied)
    assert not difference, f"model.safetensors: {difference} target keys"


@pytest.mark.check(order=61)
def test_written_shapes_fit_the_target(conversion: Conversion, staged: Staged, target: Target) -> None:
    mismatch = shape_mismatch(written_shapes(conversion.staging), target.spec)
    if mismatch is not None:
        key, found, expected = mismatch
        pytest.fail(f"model.safetensors: {key} has shape {found}, but {target.needs} needs {expected}")


@pytest.mark.check(order=70)
def test_written_files_reload_exactly(staged: Staged, reloaded: tuple[Any, dict[str, Any]]) -> None:
    """transformers loads every weight (no missing, unexpected or mismatched keys) and reads back bitwise what
    was written, and each mapped tensor was written as the source held it."""
    model, info = reloaded
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    assert not any(problems.values()), f"from_pretrained reported {problems}"
    read_back = digests(serialized_state(model))
    assert read_back.keys() == staged.written.keys(), key_difference(read_back, staged.written)
    for key, digest in staged.written.items():
        assert read_back[key] == digest, f"{key} changed on reload"
    for key, digest in staged.mapped.items():
        assert staged.written[key] == digest, f"{key} is not the source's tensor"


@pytest.mark.check(order=80)
def test_outputs_match_the_original_implementation(comparison: Comparison, measure: Any) -> None:
    """The written model, loaded back, computes what the original implementation computes on the same input;
    where it does not, the locator names the first stage that parts."""
    measure(comparison.difference, comparison.tolerance)
    if not comparison.passed:
        table = f"\n{comparison.divergence.table()}" if comparison.divergence is not None else ""
        pytest.fail(comparison.cause + table)
