"""A verification compares a directory's weights with what the converter would write a batch at a time, so
that it never holds a second copy of the model (``converters.streamed.compared``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from converters import streamed
from converters.hub_layout import digests


def written(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def tensors_of(sizes: list[int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(len(sizes))
    return {f"layer.{i}.weight": torch.randn(size, generator=generator) for i, size in enumerate(sizes)}


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=12), batch=st.integers(1, 4096), data=st.data())
def test_every_difference_is_named_in_the_expected_order_whatever_the_batches(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], batch: int, data: st.DataObject
) -> None:
    tensors = tensors_of(sizes)
    directory = written(tmp_path_factory.mktemp("dir"), tensors)
    expected = dict(tensors)
    changed = data.draw(st.sets(st.sampled_from(sorted(expected))))
    for key in changed:
        expected[key] = expected[key] + 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(streamed, "BATCH_BYTES", batch)
        held, differing = streamed.compared(directory, expected)
    assert held == digests(tensors)
    assert differing == tuple(
        f"{key} differs from what the converter writes by 1 (largest difference)" for key in expected if key in changed
    )


def test_a_dtype_or_shape_that_differs_is_named_with_both() -> None:
    assert streamed.difference("w", torch.zeros(2, 3), torch.zeros(3, 2)) == (
        "w is torch.float32 (2, 3), the converter writes torch.float32 (3, 2)"
    )
    assert streamed.difference("w", torch.zeros(2, dtype=torch.float16), torch.zeros(2)) == (
        "w is torch.float16 (2,), the converter writes torch.float32 (2,)"
    )
    assert streamed.difference("w", torch.zeros(2), torch.zeros(2)) is None


def resident_kib(path: Path) -> int:
    """How much of ``path`` this process holds resident through its mappings (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_at_most_a_batch_of_the_directory_is_resident_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of a mapped file count as the process's while it is mapped: each batch's mapping is closed before
    the next is read, so the directory is never held whole beside what the converter would write."""
    if not Path("/proc/self/smaps").exists():
        pytest.skip("reads the process's memory maps from /proc (Linux)")
    tensors = tensors_of([256 * 1024] * 8)  # 1 MiB each
    path = written(tmp_path / "dir", tensors) / "model.safetensors"
    resident: list[int] = []
    compare = streamed.difference

    def measuring(key: str, theirs: Any, tensor: Any) -> str | None:
        resident.append(resident_kib(path))
        return compare(key, theirs, tensor)

    monkeypatch.setattr(streamed, "difference", measuring)
    monkeypatch.setattr(streamed, "BATCH_BYTES", 2 * 2**20)  # two tensors a batch
    streamed.compared(path.parent, tensors)
    assert len(resident) == 8 and max(resident) <= 2 * 1024 + 8, resident  # a batch, and the header's page
    assert resident_kib(path) == 0


def test_the_converters_values_widened_exactly_are_no_difference() -> None:
    """float16 weights a directory holds as float32 (transformers' own Whisper script saves them so) are the same
    function's; a narrower dtype, or a wider one with another value, is a difference."""
    half = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)).half()
    assert streamed.difference("w", half.float(), half) is None
    assert streamed.difference("w", half.double(), half) is None
    moved = half.float()
    moved[0, 0] += 1e-4
    assert streamed.difference("w", moved, half) is not None
    assert streamed.difference("w", half, half.float()) == (
        "w is torch.float16 (4, 3), the converter writes torch.float32 (4, 3)"
    )
