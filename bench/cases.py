"""The benchmark's cases: every registered converter's example at each of its sizes, built once.

For the built-in converters: AST 10-10 on a tiny, base (DeiT-base: 88M parameters, the published size) and
large (1024 wide, 24 blocks) backbone; an S3PRL XVector head on a Wav2Vec2 base model of tiny, base
(wav2vec2-base, 95M) and large (wav2vec2-large, 317M, stable layer norm) size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters import registry


@dataclass(frozen=True)
class Case:
    format: str  # a registered converter's name
    size: str

    @property
    def name(self) -> str:
        return f"{self.format}-{self.size}"


def cases() -> list[Case]:
    """Every example at every size (importing each converter's example module: its original implementation)."""
    return [
        Case(converter.name, size)
        for converter in registry.all_converters()
        if converter.example is not None
        for size in converter.examples().sizes
    ]


def build(case: Case, directory: Path) -> Path:
    """Write the case's inputs and ``case.json`` into ``directory`` (once: an existing case is kept)."""
    if (directory / "case.json").exists():
        return directory
    options = registry.get(case.format).examples().build(directory, case.size)
    kept = {key: str(value) for key, value in options.items()}
    (directory / "case.json").write_text(json.dumps({"format": case.format, "options": kept}))
    return directory


def options_of(directory: Path) -> tuple[str, dict[str, Any]]:
    """A built case's converter name and its options."""
    case = json.loads((directory / "case.json").read_text())
    return case["format"], case["options"]


def parameters(directory: Path) -> int:
    """How many numbers the conversion moves: every tensor of the source (and of a base model directory)."""
    import torch
    from safetensors import safe_open

    from converters.contract import Role

    name, options = options_of(directory)
    converter = registry.get(name)
    count = 0
    for option in converter.options:
        value = options.get(option.dest)
        if option.role is Role.SOURCE and value is not None:
            loaded = torch.load(value, mmap=True, weights_only=False, map_location="cpu")  # our own synthetic file
            count += sum(t.numel() for t in tensors_in(loaded))
        elif option.role is Role.MODEL and value is not None:
            for path in Path(value).glob("*.safetensors"):
                with safe_open(path, "pt") as model:
                    count += sum(math.prod(model.get_slice(key).get_shape()) for key in model.keys())  # noqa: SIM118
    return count


def tensors_in(obj: Any) -> list[Any]:
    """Every tensor of a loaded checkpoint, however nested (an s3prl runner's, say); optimizer state aside."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for key, value in obj.items() if key != "Optimizer" for t in tensors_in(value)]
    return []
