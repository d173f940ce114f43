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


def test_the_checks_are_listed_in_their_markers_order_across_modules_and_by_mode(tmp_path: Path) -> None:
    from converters.session import check_names

    generic, own = tmp_path / "generic.py", tmp_path / "own.py"
    generic.write_text(
        "import pytest\n"
        "@pytest.mark.check(order=30)\ndef test_late(): pass\n"
        "@pytest.mark.check(order=10)\ndef test_early(): pass\n"
        "@pytest.mark.check(order=40, mode='verify')\ndef test_only_verifying(): pass\n"
        "def helper(): pass\n"
    )
    own.write_text(
        "import pytest\n@pytest.mark.check(order=20)\ndef test_own_in_between(): pass\ndef test_unmarked(): pass\n"
    )
    assert check_names([generic, own], "convert") == ["test_early", "test_own_in_between", "test_late", "test_unmarked"]
    assert check_names([generic, own], "verify") == [
        "test_early", "test_own_in_between", "test_late", "test_only_verifying", "test_unmarked",
    ]  # fmt: skip


def test_a_failures_one_line_cause_is_its_first_line_not_ending_in_a_colon_else_its_last() -> None:
    from types import SimpleNamespace

    from converters.outcomes import one_line

    def failure(message: str) -> SimpleNamespace:
        return SimpleNamespace(reprcrash=SimpleNamespace(message=message))

    assert one_line(failure("AssertionError: while mapping:\n  missing key 'x'\nmore")) == "missing key 'x'"
    assert one_line(failure("while mapping:\n  in the checkpoint:")) == "in the checkpoint:"
