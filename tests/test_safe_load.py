"""The safe loader: whatever bytes it is given, it returns tensors or raises its own one-line refusal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.errors import ConversionError
from converters.safe_load import as_state_dict, load_checkpoint


def valid_checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"module.v.cls_token": torch.randn(1, 1, 8), "module.v.norm.weight": torch.randn(8)}, buffer)
    return buffer.getvalue()


VALID = valid_checkpoint_bytes()
fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_with_a_cause(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=str(path)):
        as_state_dict(load_checkpoint(path), str(path))


@fuzz
@given(cut=st.integers(0, len(VALID) - 1))
def test_a_truncated_checkpoint_is_refused(cut: int, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pth"
    path.write_bytes(VALID[:cut])
    with pytest.raises(ConversionError, match=str(path)):
        load_checkpoint(path)


def test_a_valid_checkpoint_loads(tmp_path: Path) -> None:
    path = tmp_path / "valid.pth"
    path.write_bytes(VALID)
    assert set(as_state_dict(load_checkpoint(path), str(path))) == {"module.v.cls_token", "module.v.norm.weight"}


@pytest.mark.parametrize(
    ("obj", "cause"),
    [([1, 2], "holds a list"), ({1: torch.zeros(1)}, "key of type int"), ({"a": 1.5}, "'a' is a float")],
)
def test_a_non_state_dict_is_refused_naming_what_is_wrong(obj: object, cause: str) -> None:
    with pytest.raises(ConversionError, match=cause):
        as_state_dict(obj, "ckpt.pth")
