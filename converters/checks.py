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
from converters.streamed import Staged


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


@pytest.mark.check(order=10.5)
def test_the_checkpoints_metadata_fits_its_tensors(conversion: Conversion, request: pytest.FixtureRequest) -> None:
    """What the checkpoint declares beside its tensors (a Whisper checkpoint's dims: layer counts, widths, lengths)
    is what its tensors hold, before anything is derived from it or written: a file whose metadata was edited, or
    whose tensors were cut, is refused here, each number named with both values."""
    if not conversion.declares:  # asked before the source is: a skip's frames would hold it
        pytest.skip("the format declares nothing beside its tensors")
    declared = conversion.declared(request.getfixturevalue("source"))
    wrong = [f"{name} {said}, its tensors hold {held}"
             for name, (said, held) in declared.items() if held is not None and said != held]  # fmt: skip
    if wrong:
        raise ConversionError(f"{conversion.where} declares " + "; ".join(wrong))


@pytest.mark.check(order=11)
def test_deriving_the_target(target: Target, mapping: KeyMapping, notes: list[str]) -> None:
    """What the written model must be (its class, config and extractor), derived from the source and the options:
    a cause found while deriving it is this stage's, never a later check's."""
    if target.fields:
        notes.append(f"derived ({target.needs}):")
        notes.extend(f"  {field.name} = {field.value!r}  <- {field.source}" for field in target.fields)


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


@pytest.mark.check(order=60, mode="convert")
def test_every_target_key_is_written(conversion: Conversion, prepared: Staged, target: Target) -> None:
    """The written files hold exactly the keys transformers' model for this config serializes."""
    difference = key_difference(written_shapes(conversion.staging), target.spec.keys() - prepared.tied)
    assert not difference, f"model.safetensors: {difference} target keys"


@pytest.mark.check(order=61, mode="convert")
def test_written_shapes_fit_the_target(conversion: Conversion, prepared: Staged, target: Target) -> None:
    mismatch = shape_mismatch(written_shapes(conversion.staging), target.spec)
    if mismatch is not None:
        key, found, expected = mismatch
        pytest.fail(f"model.safetensors: {key} has shape {found}, but {target.needs} needs {expected}")


@pytest.mark.check(order=60, mode="verify")
def test_every_key_in_the_directory_is_expected(conversion: Conversion, prepared: Staged, target: Target) -> None:
    """Every key transformers' model for this config serializes is there, and no other."""
    difference = key_difference(prepared.written, target.spec.keys() - prepared.tied)
    if difference:
        raise ConversionError(f"{conversion.staging} holds {difference} keys")


@pytest.mark.check(order=72, mode="verify")  # after loading: where the tensors differ, the locator says what it does
def test_every_tensor_is_what_the_converter_writes(conversion: Conversion, prepared: Staged) -> None:
    if prepared.differing:
        more = f" (and {len(prepared.differing) - 1} more)" if len(prepared.differing) > 1 else ""
        raise ConversionError(f"{conversion.staging}: {prepared.differing[0]}{more}")


@pytest.mark.check(order=70)
def test_written_files_reload_exactly(prepared: Staged, reloaded: tuple[Any, dict[str, Any]]) -> None:
    """transformers loads every weight (no missing, unexpected or mismatched keys) and reads back bitwise what
    the files hold, and (converting) each mapped tensor was written as the source held it."""
    model, info = reloaded
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    assert not any(problems.values()), f"from_pretrained reported {problems}"
    read_back = digests(serialized_state(model))
    # a tied target is in the files once, under the target it is tied to (a verified directory's digests are the
    # files'): transformers reads it back from there
    written = dict(prepared.written)
    written.update({key: written[to] for key, to in prepared.ties.items() if key not in written and to in written})
    assert read_back.keys() == written.keys(), key_difference(read_back, written)
    for key, digest in written.items():
        assert read_back[key] == digest, f"{key} changed on reload"
    for key, digest in prepared.mapped.items():
        assert prepared.written[key] == digest, f"{key} is not the source's tensor"


@pytest.mark.check(order=75)
def test_the_config_computes_what_the_original_computes(
    request: pytest.FixtureRequest, conversion: Conversion, prepared: Staged, target: Target
) -> None:
    """Every config and feature-extractor field that changes the function is what the converter derives."""
    from converters.session_fixtures import PLUGIN
    from converters.settings import compare

    fields = conversion.function_fields(target)
    found = compare(fields, conversion.staging, type(target.config))
    plugin = request.config.stash[PLUGIN]
    plugin.settings, plugin.fields = found, {file: sorted(names) for file, names in fields.items()}
    if found:
        raise ConversionError("; ".join(difference.described() for difference in found))


@pytest.mark.check(order=80)
def test_outputs_match_the_original_implementation(comparison: Comparison, measure: Any, notes: list[str]) -> None:
    """From the same recordings, the directory's feature extractor and model compute what the original's input
    pipeline and model compute; where they do not, the locator names the first stage that parts (the input
    first: a preprocessor that differs is never reported as the model's divergence)."""
    measure(comparison.difference, comparison.tolerance)
    notes.extend(comparison.notes)
    if not comparison.passed:
        table = f"\n{comparison.divergence.table()}" if comparison.divergence is not None else ""
        pytest.fail(comparison.cause + table)
