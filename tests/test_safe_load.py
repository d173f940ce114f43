"""The safe loader: whatever bytes it is given, it returns tensors or raises its own one-line refusal."""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import safe_load
from converters.errors import ConversionError
from converters.safe_load import SafeLoader, as_state_dict, check_weights, load_checkpoint


def valid_checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"module.v.cls_token": torch.randn(1, 1, 8), "module.v.norm.weight": torch.randn(8)}, buffer)
    return buffer.getvalue()


VALID = valid_checkpoint_bytes()
fuzz = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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


def rezip(data: bytes, compression: int, change: Callable[[str, bytes], bytes] | None = None) -> bytes:
    """The same archive with every member stored under ``compression`` (its bytes passed through ``change``)."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as target:
        for member in source.infolist():
            content = source.read(member.filename)
            target.writestr(member.filename, change(member.filename, content) if change else content)
    return out.getvalue()


def test_a_data_record_shorter_than_its_storage_is_refused(tmp_path: Path) -> None:
    """Valid CRCs, a short record: a memory-mapped load would read the bytes after it as weights."""
    path = tmp_path / "short.pth"
    path.write_bytes(
        rezip(VALID, zipfile.ZIP_STORED, lambda name, data: data[:4] if name.endswith("/data/1") else data)
    )
    with pytest.raises(ConversionError) as refusal:
        load_checkpoint(path)
    cause = "its pickle declares a storage of 32 bytes that no data record holds"
    assert str(refusal.value) == f"checkpoint {path} is corrupt: {cause}"


def test_a_data_record_no_storage_declares_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "extra.pth"
    path.write_bytes(VALID)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive:
        prefix = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{prefix}/data/99", b"\0" * 100)
    with pytest.raises(ConversionError) as refusal:
        load_checkpoint(path)
    cause = "a data record of 100 bytes belongs to no storage its pickle declares"
    assert str(refusal.value) == f"checkpoint {path} is corrupt: {cause}"


def test_storages_shared_empty_or_nested_load_as_saved(tmp_path: Path) -> None:
    """Views share one record, empty tensors have empty ones, and tensors anywhere in the object count."""
    base = torch.arange(10.0)
    saved: dict[str, Any] = {
        "a": base[:3], "b": base[5:], "empty": torch.zeros(0, 3), "nested": [[torch.ones(2, dtype=torch.bfloat16)]],
        "parameter": torch.nn.Parameter(torch.full((2,), 3.0)), "scalar": torch.tensor(5),
    }  # fmt: skip
    path = tmp_path / "shapes.pth"
    torch.save(saved, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["a"], base[:3]) and torch.equal(loaded["b"], base[5:])
    assert loaded["a"].untyped_storage().data_ptr() == loaded["b"].untyped_storage().data_ptr()
    assert loaded["empty"].shape == (0, 3) and torch.equal(loaded["nested"][0][0], saved["nested"][0][0])
    assert torch.equal(loaded["parameter"], saved["parameter"]) and loaded["scalar"].item() == 5


def test_tensors_beyond_a_cycle_are_counted(tmp_path: Path) -> None:
    """A pickle can make cycles; the walk over the loaded object visits each object once and goes on."""
    cycle: list[Any] = [torch.ones(1)]
    cycle.append(cycle)
    path = tmp_path / "cycle.pth"
    torch.save({"a": cycle, "b": [cycle, torch.full((3,), 2.0)], "c": torch.zeros(4)}, path)
    loaded = load_checkpoint(path)
    assert loaded["a"][1] is loaded["a"] and torch.equal(loaded["b"][1], torch.full((3,), 2.0))


def test_a_rezipped_stored_archive_still_loads(tmp_path: Path) -> None:
    """The rewriting below is faithful: stored again, the archive loads; only compression is refused."""
    path = tmp_path / "stored.pth"
    path.write_bytes(rezip(VALID, zipfile.ZIP_STORED))
    assert set(load_checkpoint(path)) == {"module.v.cls_token", "module.v.norm.weight"}


def test_compressed_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deflated.pth"
    path.write_bytes(rezip(VALID, zipfile.ZIP_DEFLATED))
    with pytest.raises(ConversionError, match="compressed member"):
        load_checkpoint(path)


def test_a_flipped_byte_fails_the_crc_check(tmp_path: Path) -> None:
    archive = zipfile.ZipFile(io.BytesIO(VALID))
    member = next(m for m in archive.infolist() if m.filename.endswith("/data/0"))
    data = bytearray(VALID)
    # The member's bytes follow its 30-byte local header, its name and its local extra field (torch pads
    # that field to align tensor data, so its length is read from the local header itself).
    header = member.header_offset
    name_length, extra_length = struct.unpack("<HH", VALID[header + 26 : header + 30])
    start = header + 30 + name_length + extra_length
    data[start + 3] ^= 0x01
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(data))
    silently = torch.load(path, weights_only=True)  # what torch alone does: a changed weight, no error
    assert not torch.equal(silently["module.v.cls_token"], torch.load(io.BytesIO(VALID))["module.v.cls_token"])
    with pytest.raises(ConversionError, match="CRC"):
        load_checkpoint(path)


def flipped_copy(tmp_path: Path, name: str) -> Path:
    """VALID with one byte of a tensor flipped (a zip whose CRC check fails), at ``tmp_path / name``."""
    archive = zipfile.ZipFile(io.BytesIO(VALID))
    member = next(m for m in archive.infolist() if m.filename.endswith("/data/0"))
    name_length, extra_length = struct.unpack("<HH", VALID[member.header_offset + 26 : member.header_offset + 30])
    data = bytearray(VALID)
    data[member.header_offset + 30 + name_length + extra_length] ^= 0x01
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def counting_checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    checked: list[Path] = []
    real = safe_load.check_archive

    def check(path: Path) -> None:
        checked.append(path)
        real(path)

    monkeypatch.setattr(safe_load, "check_archive", check)
    return checked


def test_every_load_checks_the_archive_outside_a_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(VALID)
    checked = counting_checks(monkeypatch)
    load_checkpoint(path)
    load_checkpoint(path)
    assert checked == [path, path]


def test_a_conversion_checks_each_file_version_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(VALID)
    checked = counting_checks(monkeypatch)
    loader = SafeLoader(remember=True)  # a conversion's session
    loader.load(path)
    loader.load(path)
    assert checked == [path] and loader.loads == 2
    # replaced by a damaged file (a new inode, as any editor or download leaves it): checked again, refused
    flipped_copy(tmp_path, "flipped.pth").replace(path)
    with pytest.raises(ConversionError, match="CRC"):
        loader.load(path)
    assert checked == [path, path]
    path.write_bytes(VALID)
    load_checkpoint(path)  # another loader: checked, whatever the session's remembers
    assert checked == [path, path, path]


def test_the_legacy_format_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"module.v.cls_token": torch.randn(1, 1, 8)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ConversionError, match="legacy"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("tensor", "cause"),
    [
        (torch.tensor([1.0, float("nan")]), "1 non-finite value"),
        (torch.tensor([float("inf"), -float("inf"), 0.0]), "2 non-finite values"),
        (torch.tensor([1, 2]), "dtype torch.int64"),
    ],
)
def test_bad_weights_are_named(tensor: torch.Tensor, cause: str) -> None:
    with pytest.raises(ConversionError, match=rf"ckpt\.pth: module\.v\.norm\.bias .*{cause}"):
        check_weights({"module.v.norm.weight": torch.ones(2), "module.v.norm.bias": tensor}, "ckpt.pth")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_floating_dtypes_pass(dtype: torch.dtype) -> None:
    check_weights({"w": torch.randn(3).to(dtype)}, "ckpt.pth")


def test_the_one_dtype_is_returned_and_a_mix_names_both_keys() -> None:
    from converters.safe_load import weights_dtype

    assert weights_dtype({}, "nothing") == torch.float32
    assert weights_dtype({"a": torch.zeros(1, dtype=torch.bfloat16)}, "x") == torch.bfloat16
    mixed = {"a": torch.zeros(1), "b": torch.zeros(1), "c": torch.zeros(1, dtype=torch.float16)}
    with pytest.raises(ConversionError, match=r"^ckpt mixes dtypes: a is torch.float32, c is torch.float16; "):
        weights_dtype(mixed, "ckpt")


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("Invalid magic number; corrupt file?", "Invalid magic number; corrupt file?"),
        ("reading file data/0: invalid header. Please check the file.", "reading file data/0: invalid header"),
        ("Weights only load failed for X. Re-running `torch.load` with ...\nmore", "Weights only load failed for X"),
        ("version 3.0 is newer.", "version 3.0 is newer"),
    ],
)  # fmt: skip
def test_a_refusal_quotes_the_first_sentence_of_torchs_error(message: str, cause: str) -> None:
    """torch follows the cause with paragraphs of advice; the one-line refusal keeps the cause."""
    assert safe_load._first_line(RuntimeError(message)) == cause


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_finite_weights_whose_sum_overflows_pass(dtype: torch.dtype) -> None:
    check_weights({"w": torch.full((100,), torch.finfo(dtype).max / 2, dtype=dtype)}, "ckpt")  # no refusal


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_one_non_finite_value_among_overflowing_ones_is_counted(bad: float) -> None:
    big = torch.full((100,), torch.finfo(torch.float32).max / 2)
    big[7] = bad
    with pytest.raises(ConversionError, match=r"^ckpt: w holds 1 non-finite value \(NaN or inf\)$"):
        check_weights({"w": big}, "ckpt")
