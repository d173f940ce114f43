"""The generic checks' helpers, on their own."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from converters.checks import written_shapes


def test_written_shapes_are_read_from_the_headers_without_allocating_the_data(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"c": torch.zeros(1, 5, 6)}, tmp_path / "model-00002-of-00002.safetensors")
    (tmp_path / "notes.txt").write_text("not weights")
    shapes = written_shapes(tmp_path)
    assert {key: tuple(tensor.shape) for key, tensor in shapes.items()} == {"a": (2, 3), "b": (4,), "c": (1, 5, 6)}
    assert all(tensor.is_meta for tensor in shapes.values())
