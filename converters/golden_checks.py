"""The checks a golden record supports: a converted directory held to what it computed when it was verified against
its original (``converters/golden.py``), with neither the original nor the reference implementations.

``conversion`` here is a ``converters.golden_gate.Gate``: the entry's converter, its directory and its record.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from converters.errors import ConversionError
from converters.golden import FINGERPRINT_RTOL, Measured, fingerprint_moved, fingerprint_stages
from converters.golden import measure as measure_directory
from converters.golden_gate import Gate
from converters.settings import Difference, same


@pytest.fixture(scope="session")
def measured(conversion: Gate) -> Measured:
    """The directory measured once: its tensors, its fields, its pipeline on the record's recordings."""
    return measure_directory(conversion.hooks, conversion.directory, conversion.record.fields)


@pytest.mark.check(order=5)
def test_the_record_is_this_entrys(conversion: Gate, notes: list[str]) -> None:
    """Made for this converter, from this entry's original (where the entry has it), on the recordings this
    version of the tool holds."""
    record, where = conversion.record, conversion.record_path
    made = record.provenance
    original = made["original"]
    notes.append(
        f"record {where}: made {record.made} from {original.get('address') or original['file']} (SHA-256 "
        f"{original['sha256'][:16]}...), reference {', '.join(made['reference']) or 'none'}, transformers "
        f"{made['versions'].get('transformers')}"
    )
    ours = conversion.converter.name
    if record.converter != ours:
        raise ConversionError(f"record {where} is of a {record.converter} conversion; the entry's is {ours}")
    entry = conversion.original_sha256
    if entry is not None and original["sha256"] != entry:
        raise ConversionError(
            f"record {where} was made from another original: SHA-256 {original['sha256']}, the entry's checkpoint "
            f"has {entry}; re-record it from this one"
        )
    builtin = conversion.recordings  # the sample audio, not built in, is the outputs check's to find
    stale = [name for name, what in record.recordings.items() if name in builtin and builtin[name] != what["sha256"]]
    if stale:
        raise ConversionError(
            f"record {where} was measured on recordings this version of the tool does not hold ({', '.join(stale)}); "
            f"re-record it"
        )


@pytest.mark.check(order=20)
def test_the_directory_holds_the_recorded_tensors(conversion: Gate, measured: Measured) -> None:
    recorded, found = conversion.record.tensors, measured.tensors
    for key in sorted(set(recorded) | set(found)):
        if key not in found:
            raise ConversionError(f"{conversion.directory} lacks {key}, which the record holds")
        if key not in recorded:
            raise ConversionError(f"{conversion.directory} holds {key}, which the record does not")
        if found[key] != recorded[key]:
            dtype, shape, _ = recorded[key]
            now = found[key]
            same_kind = now[:2] == [dtype, shape]
            what = "its bytes differ" if same_kind else f"it is {now[0]} {now[1]}, recorded {dtype} {shape}"
            raise ConversionError(f"{conversion.directory}: {key} is not the recorded tensor: {what}")


@pytest.mark.check(order=30)
def test_the_config_and_extractor_are_the_recorded_ones(conversion: Gate, measured: Measured) -> None:
    """Every field that changes the function, as transformers reads it now, against the recorded value."""
    found = []
    for file, fields in conversion.record.fields.items():
        for name, value in fields.items():
            now = measured.fields.get(file, {}).get(name)
            if not same(name, now, value):
                found.append(Difference(file, name, now, value).described(against="recorded", file=True))
    if found:
        raise ConversionError("; ".join(found))


@pytest.mark.check(order=40)
def test_the_outputs_are_the_recorded_ones(
    conversion: Gate, measured: Measured, measure: Any, notes: list[str]
) -> None:
    """Under the installed transformers, each output from a recording within the tolerance the record holds it to;
    where one is not, the first stage whose fingerprint moved is named (the extractor's first). A recording the run
    does not have (the sample audio, offline) is said and left out; another file under its name is refused."""
    worst = (-1.0, 1.0, "")
    for name, output in conversion.record.outputs.items():
        recorded, found = conversion.record.recordings.get(name), measured.recordings.get(name)
        if recorded is not None and found is None:  # (a padded batch is of recordings the record describes)
            notes.append(f"{name}: not checked: this run does not have it ({recorded.get('kind')})")
            continue
        if recorded is not None and found is not None and found["sha256"] != recorded["sha256"]:
            raise ConversionError(f"{name} is another recording than the record's: SHA-256 {found['sha256']}, "
                                  f"recorded {recorded['sha256']}")  # fmt: skip
        tensor = measured.outputs.get(name)
        difference = math.inf if tensor is None else output.difference(tensor)
        if difference / max(output.tolerance, 1e-30) > worst[0] / max(worst[1], 1e-30):
            worst = (difference, output.tolerance, name)
    if not worst[2]:
        raise ConversionError(f"record {conversion.record_path} holds no output this run can compute")
    measure(worst[0], worst[1])
    if worst[0] <= worst[1]:
        return
    moved = [(f"input of {name}", fingerprint_moved(recorded, measured.inputs.get(name, [])))
             for name, recorded in conversion.record.inputs.items() if name in measured.inputs]  # fmt: skip
    stages = fingerprint_stages(conversion.hooks, measured)  # the pipeline again, its stages hooked
    moved += [(stage, fingerprint_moved(recorded, stages.get(stage, [])))
              for stage, recorded in conversion.record.stages.items()]  # fmt: skip
    first = next(((stage, amount) for stage, amount in moved if amount > FINGERPRINT_RTOL), None)
    where = (f"; first moved: {first[0]} ({first[1]:.3g} of its magnitude)" if first is not None else
             "; no stage's fingerprint moved: the change is past the last stage recorded")  # fmt: skip
    pytest.fail(f"outputs differ from the record by {worst[0]:.3g} on {worst[2]} (tolerance {worst[1]:.3g}){where}")
