"""Golden records: what a converted directory computes, measured once it was verified against its original, so that
a gate can hold it there without the original or the reference implementations.

A record is made only by a full verification that passed (``pytest --conversions M --conversions-record``), and
holds, as JSON a reviewer can diff:
- every tensor of the directory, by digest (XXH3-128, dtype, shape);
- every config and extractor field that changes the function, with the value the verification found;
- the directory's own pipeline (its extractor, as a user loads it, then its model) on the built-in recordings
  (``converters/recordings.py``, each described: kind, length, level, seed and the SHA-256 of its samples; and the
  AST sample audio where the verification had it): a fingerprint of what the extractor made of each, the outputs
  themselves, and the tolerance each is held to: what is left of the verification's tolerance once the difference
  it measured from the original is spent, so that an output within it is within the verification's tolerance of
  the original's (or, where less is left, float32's run-to-run noise);
- a fingerprint of each of the model's stages (the locator's, on the converted side), to name where outputs that
  moved first moved;
- its provenance: the original's address and SHA-256, the reference implementation that ran, the versions of
  python, torch and transformers, the date.

The gate (``converters/golden_checks.py``) measures the directory again under the installed transformers: one
forward pass of the directory's model per recording, no original, no reference.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1
FINGERPRINT_RTOL = 1e-5  # a stage moved: its fingerprint past this share of its magnitude (float32 noise: ~1e-7)
PROBES = 4  # random sign projections in a fingerprint
NOISE = 16 * 2.0**-23  # float32 outputs computed twice differ by a few rounding steps of their magnitude
# An output of more values is held at this many of them, drawn (seeded) across it: a reviewer's diff stays short
# (a decoder's logits over a 51865-token vocabulary are 830 000 values per 16 tokens), and a change of the function
# moves nearly every value.
SAMPLED = 4096


def fingerprint(tensor: Any) -> list[float]:
    """A value's summary that moves when the value does: its size, mean, standard deviation, largest magnitude and
    four projections on fixed random signs (seeded by the size, so that the gate draws the same)."""
    values = tensor.detach().double().flatten()
    count = values.numel()
    if count == 0:
        return [0.0]
    projections = (_signs(count) @ values) / math.sqrt(count)
    spread = values.std().item() if count > 1 else 0.0
    found = [values.mean().item(), spread, values.abs().max().item(), *projections.tolist()]
    return [float(count), *(float(f"{value:.8g}") for value in found)]  # float32's digits: a diff shows no noise


@functools.lru_cache(maxsize=8)
def _signs(count: int) -> Any:
    """The fixed random signs of a fingerprint of ``count`` values (stages of one model share a few sizes)."""
    import torch

    generator = torch.Generator().manual_seed(count)
    return torch.randint(0, 2, (PROBES, count), generator=generator).double() * 2 - 1


def fingerprint_moved(recorded: list[float], found: list[float]) -> float:
    """How far a fingerprint moved, in shares of the stage's magnitude (infinite where its size changed)."""
    if len(recorded) != len(found) or recorded[:1] != found[:1]:
        return math.inf
    scale = max(1.0, abs(recorded[3]) if len(recorded) > 3 else 0.0)
    return max((abs(a - b) for a, b in zip(recorded[1:], found[1:], strict=True)), default=0.0) / scale


@dataclass
class Output:
    shape: list[int]
    values: list[float]  # flattened, float32 as the model computed them; past SAMPLED values, those at ``positions``
    tolerance: float  # what the gate allows it to move
    sampled: bool = False  # the values at a seeded sample of positions (a decoder's logits over its vocabulary)

    def difference(self, tensor: Any) -> float:
        if list(tensor.shape) != self.shape:
            return math.inf
        found = tensor.detach().float().flatten()
        if self.sampled:
            found = found[positions(found.numel())]
        recorded = np.asarray(self.values, dtype=np.float32).astype(np.float64)  # as the model computed them
        return float(np.abs(found.numpy().astype(np.float64) - recorded).max(initial=0.0))


def positions(count: int) -> Any:
    """The ``SAMPLED`` positions of an output of ``count`` values that a record holds, in order (seeded by the
    count, so that the gate reads the same)."""
    import torch

    generator = torch.Generator().manual_seed(count)
    return torch.randperm(count, generator=generator)[:SAMPLED].sort().values


@dataclass
class Record:
    entry: str
    converter: str
    made: str  # UTC, ISO 8601
    provenance: dict[str, Any]  # original (address, sha256, bytes), reference, versions, options
    tensors: dict[str, list[Any]]  # key -> [dtype, shape, XXH3-128]
    fields: dict[str, dict[str, Any]]  # file -> field -> value
    recordings: dict[str, dict[str, Any]]  # name -> what it is, and the SHA-256 of its samples
    inputs: dict[str, list[float]]  # recording -> fingerprint of what the extractor made of it
    outputs: dict[str, Output]  # recording -> the directory pipeline's output
    stages: dict[str, list[float]]  # stage -> fingerprint, on the first recording the model ran
    version: int = VERSION

    def to_json(self) -> str:
        """Indented to the level of a tensor, a field, an output: one line each, which is what a diff shows."""
        return _dumps(asdict(self), depth=3) + "\n"

    @classmethod
    def read(cls, path: Path) -> Record:
        from converters.errors import ConversionError

        if not Path(path).is_file():
            raise ConversionError(f"golden record {path} does not exist: a verification against the original makes "
                                  f"it (--record; pytest --conversions-record)")  # fmt: skip
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ConversionError(f"record {path} is of version {data.get('version')!r}; this tool reads {VERSION}")
            data["outputs"] = {name: Output(**output) for name, output in data["outputs"].items()}
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ConversionError(f"record {path} cannot be read: {error}") from None

    @staticmethod
    def made_of(path: Path) -> str:
        """When the record at ``path`` was made (its ``made``), read alone: a summary's, not a gate's."""
        from converters.errors import ConversionError

        try:
            return str(json.loads(Path(path).read_text(encoding="utf-8"))["made"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ConversionError(f"record {path} cannot be read: {error}") from None

    def write(self, path: Path) -> None:
        from converters.output import atomic_text

        atomic_text(path, self.to_json())


def _dumps(value: Any, depth: int, indent: str = "") -> str:
    """JSON, objects broken over lines down to ``depth``, everything deeper on one line."""
    if not isinstance(value, dict) or not value or depth == 0:
        return json.dumps(value)
    inner = indent + " "
    items = [f"{inner}{json.dumps(key)}: {_dumps(item, depth - 1, inner)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + f"\n{indent}}}"


def float32_values(tensor: Any) -> list[float]:
    """A tensor's values as float32 holds them, each written with the fewest digits that read back the same."""
    return [float(str(value)) for value in tensor.detach().float().flatten().numpy()]


@dataclass
class Measured:
    """A directory measured: what a record holds of it, and what a gate compares."""

    tensors: dict[str, list[Any]] = field(default_factory=dict)
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    recordings: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # recording -> tensor
    stages: dict[str, list[float]] = field(default_factory=dict)
    model: Any = None  # the directory's, as loaded, and its extractor: to run again where stages are wanted
    extractor: Any = None


def directory_tensors(directory: Path) -> dict[str, list[Any]]:
    from converters.streamed import compared

    held, _ = compared(directory, {})
    return {key: [dtype, list(shape), digest] for key, (dtype, shape, digest) in sorted(held.items())}


def directory_fields(directory: Path, names: Mapping[str, Any], config_class: Any) -> dict[str, dict[str, Any]]:
    """The values of ``names`` (per file: the fields that change the function) as the directory holds them,
    config.json's read as transformers reads it."""
    from converters.settings import plain

    found: dict[str, dict[str, Any]] = {}
    for file, fields in names.items():
        if file == "config.json":
            config = config_class.from_pretrained(directory)
            found[file] = {name: plain(getattr(config, name, None)) for name in fields}
        else:
            raw = json.loads((directory / file).read_text(encoding="utf-8")) if (directory / file).is_file() else {}
            found[file] = {name: plain(raw.get(name)) for name in fields}
    return found


def load_directory_model(directory: Path) -> Any:
    """The directory's model as a user loads it: its config's class, float32 (the outputs recorded are float32's)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(directory)
    model_class = getattr(transformers, (config.architectures or ["AutoModel"])[0])
    return model_class.from_pretrained(directory, dtype="auto").float().eval()


def measure(conversion: Any, directory: Path, fields: Mapping[str, Any]) -> Measured:
    """The directory through the converter's hooks: its tensors, the given fields' values, and the recordings'
    inputs and outputs. Its stages are fingerprinted by ``fingerprint_stages``, where they are needed (recording,
    or outputs that moved): one forward pass per recording is all a passing gate runs."""
    import torch

    from converters.audio import directory_extractor

    found = Measured(directory_tensors(directory))
    found.model = model = load_directory_model(directory)
    found.fields = directory_fields(directory, fields, type(model.config))
    found.extractor = directory_extractor(directory)
    with torch.no_grad():
        recorded = conversion.recorded(model, found.extractor)
    found.recordings = recorded.recordings
    found.inputs = {name: fingerprint(value) for name, value in recorded.inputs.items()}
    found.outputs = recorded.outputs
    return found


def fingerprint_stages(conversion: Any, measured: Measured) -> dict[str, list[float]]:
    """Each of the model's stages (``conversion.taps``) fingerprinted on the first recording the model runs: the
    pipeline run again, hooked."""
    import torch

    stages: dict[str, list[float]] = {}
    handles = [tap.hook(_fingerprinting(stages, name)) for name, tap in conversion.taps(measured.model)]
    try:
        with torch.no_grad():
            conversion.recorded(measured.model, measured.extractor)
    finally:
        for handle in handles:
            handle.remove()
    return stages


def _fingerprinting(stages: dict[str, list[float]], name: str) -> Any:
    def keep(value: Any) -> None:
        if name not in stages:  # the first call: the first recording the model runs
            stages[name] = fingerprint(value)

    return keep


@dataclass(frozen=True)
class Recorded:
    """What a converter's ``recorded`` hook returns: the recordings it used (name -> what it is and the SHA-256 of
    its samples: ``described``), what the extractor made of each, and the pipeline's outputs, by the names the
    comparison measured them under."""

    recordings: dict[str, dict[str, Any]]
    inputs: dict[str, Any]
    outputs: dict[str, Any]


def described(recording: Any) -> dict[str, Any]:
    """A built-in recording as a record describes it (``converters.recordings.Recording``)."""
    return {"kind": recording.kind, "seconds": recording.seconds, "rms": recording.rms, "seed": recording.seed,
            "sha256": recording.sha256}  # fmt: skip


def make_record(entry: str, converter: str, measured: Measured, budgets: Mapping[str, tuple[float, float]],
                provenance: dict[str, Any]) -> Record:  # fmt: skip
    """A record of a verified directory: each output held to what is left of the verification's tolerance for it
    (``budgets``: name -> (difference from the original, tolerance)), and at least to float32's run-to-run noise
    (``NOISE``: a budget nearly spent would fail a gate on threads summing in another order)."""
    outputs = {}
    for name, tensor in measured.outputs.items():
        difference, tolerance = budgets.get(name, (0.0, 0.0))
        floor = NOISE * max(1.0, tensor.detach().abs().max().item())
        sampled = tensor.numel() > SAMPLED
        values = tensor.detach().flatten()[positions(tensor.numel())] if sampled else tensor
        outputs[name] = Output(list(tensor.shape), float32_values(values), max(tolerance - difference, floor), sampled)
    made = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return Record(entry, converter, made, provenance, measured.tensors, measured.fields, measured.recordings,
                  measured.inputs, outputs, measured.stages)  # fmt: skip


def drift(old: Record, new: Record) -> list[str]:
    """What a new record changes against the committed one: tensors, fields, each output's largest change."""
    lines = []
    keys = sorted(set(old.tensors) | set(new.tensors))
    changed = [key for key in keys if old.tensors.get(key) != new.tensors.get(key)]
    if changed:
        lines.append(f"tensors: {len(changed)} changed (first: {changed[0]})")
    for file in sorted(set(old.fields) | set(new.fields)):
        before, after = old.fields.get(file, {}), new.fields.get(file, {})
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                lines.append(f"{file} {name}: {before.get(name)!r} -> {after.get(name)!r}")
    for name in sorted(set(old.outputs) | set(new.outputs)):
        if name not in old.outputs or name not in new.outputs:
            lines.append(f"output {name}: {'new' if name in new.outputs else 'gone'}")
            continue
        a, b = old.outputs[name], new.outputs[name]
        if a.shape != b.shape:
            lines.append(f"output {name}: shape {a.shape} -> {b.shape}")
            continue
        if a.sampled != b.sampled:
            lines.append(f"output {name}: now {'a sample' if b.sampled else 'every one'} of its values held")
            continue
        moved = float(np.abs(np.asarray(a.values) - np.asarray(b.values)).max(initial=0.0))
        lines.append(f"output {name}: largest change {moved:.3g} (tolerance {b.tolerance:.3g})")
    return lines
