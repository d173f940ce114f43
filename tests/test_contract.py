"""The contract's own parts, each on its own: the registry, how a reference package is found installed, the
default hooks of ``Conversion``, and a validator's refusal made before any check runs."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.cli import run
from converters.contract import Conversion, Converter, Option, Requirement, Role, Source, Target, provided_modules
from converters.errors import ConversionError
from converters.mapping import KeyMapping, Rename
from converters.registry import Registry


def converter_named(name: str, **fields: Any) -> Converter:
    options = (
        Option("--checkpoint", "the source", role=Role.SOURCE, required=True),
        Option("--out", "the output", role=Role.OUTPUT, required=True),
    )
    record: dict[str, Any] = {
        "name": name,
        "command": f"convert-{name}-checkpoint",
        "description": f"converts {name} checkpoints",
        "options": options,
        "conversion": Conversion,
        "files": frozenset({"model.safetensors"}),
    }
    return Converter(**(record | fields))


# -- the registry ------------------------------------------------------------------------------------------


def test_a_registry_imports_an_entry_named_module_colon_attribute_when_first_asked_for_it() -> None:
    from converters.ast.converter import CONVERTER

    entries = {"ast": "converters.ast.converter:CONVERTER"}
    built = Registry(entries)
    entries.clear()  # the registry holds its own copy
    assert built.names() == ["ast"]
    assert built.get("ast") is CONVERTER and built.get("ast") is CONVERTER


def test_a_registry_refuses_an_unknown_name_and_a_name_taken_twice() -> None:
    built = Registry({})
    first = converter_named("first")
    built.register(first)
    assert built.get("first") is first and built.all() == [first]
    assert built.by_command("convert-first-checkpoint") is first
    with pytest.raises(ValueError, match="a converter named 'first' is registered already"):
        built.register(converter_named("first"))
    with pytest.raises(KeyError):
        built.get("second")


def test_registered_lasts_for_its_block_only() -> None:
    built = Registry({})
    with built.registered(converter_named("passing")) as passing:
        assert built.get("passing") is passing
    assert built.names() == []


# -- whether a reference implementation's package is installed, and which distribution provides it ---------


def install(site: Path, name: str, version: str, files: tuple[str, ...], top_level: str | None = None) -> Path:
    """A distribution as pip leaves it: its files, and a .dist-info directory listing them."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{file},,\n" for file in files))
    if top_level is not None:
        (info / "top_level.txt").write_text(top_level)
    for file in files:
        (site / file).parent.mkdir(parents=True, exist_ok=True)
        (site / file).write_text("")
    return info


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two directories on sys.path, the first searched first."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    return first, second


def test_the_listed_distributions_are_asked_in_order_whatever_the_path_order(sites: tuple[Path, Path]) -> None:
    first, second = sites
    install(first, "contract-toy", "1.0", ("contract_toy/__init__.py",))  # named like the module, found first
    install(second, "contract-toy-fork", "2.0", ("contract_toy/__init__.py",), top_level="contract_toy\n")
    requirement = Requirement("contract_toy", "pip install contract-toy", ("contract-toy-absent", "contract-toy-fork"))
    assert requirement.installed() == "contract-toy-fork 2.0"


def test_a_listed_distribution_that_provides_other_modules_is_passed_over(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    install(first, "contract-other", "1.0", ("contract_other.py",))
    install(first, "contract-toy-fork", "2.0", ("contract_toy/__init__.py",))
    requirement = Requirement("contract_toy", "pip install contract-toy", ("contract-other", "contract-toy-fork"))
    assert requirement.installed() == "contract-toy-fork 2.0"


def test_a_module_from_a_distribution_not_listed_is_named_by_that_distribution(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    install(first, "contract-vendor", "3.1", ("contract_vendored/__init__.py",))
    assert Requirement("contract_vendored", "pip install it").installed() == "contract-vendor 3.1"


def test_a_module_from_no_distribution_is_named_as_such(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    (first / "contract_plain").mkdir()
    (first / "contract_plain" / "__init__.py").write_text("")
    assert (
        Requirement("contract_plain", "pip install it").installed() == "contract_plain (from no installed distribution)"
    )


def test_a_missing_or_blocked_module_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Requirement("contract_nowhere", "pip install it").installed() is None
    monkeypatch.setitem(sys.modules, "contract_blocked", None)  # what a test blocking an import leaves
    assert Requirement("contract_blocked", "pip install it").installed() is None


def test_provided_modules_are_top_level_txt_else_the_python_files_top_directories(tmp_path: Path) -> None:
    declared = install(tmp_path, "declared", "1.0", ("fast.cpython-311-x86_64-linux-gnu.so",), top_level="fast\nslow\n")
    assert provided_modules(importlib.metadata.Distribution.at(declared)) == {"fast", "slow"}
    files = ("package/__init__.py", "package/sub/deep.py", "single.py", "notes.txt", "inferred-1.0.dist-info/METADATA")
    inferred = install(tmp_path, "inferred", "1.0", files)
    assert provided_modules(importlib.metadata.Distribution.at(inferred)) == {"package", "single"}


# -- the default hooks of a conversion ----------------------------------------------------------------------


class Prefixed(Conversion):
    """Its mapping depends on both the source and the target, as a converter's may."""

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        return KeyMapping((Rename(f"{source.payload}.weight", f"{target.payload}.weight"),))


def prefixed(tmp_path: Path) -> tuple[Conversion, Source, Target]:
    converter = converter_named("prefixed")
    conversion = Prefixed({"checkpoint": str(tmp_path / "original.pt"), "out": None}, tmp_path, converter)
    source = Source({"encoder.weight": torch.arange(6.0).reshape(2, 3)}, payload="encoder")
    target = Target(
        "unused:Model", None, {"model.weight": torch.empty(2, 3, device="meta")}, "the config", payload="model"
    )
    return conversion, source, target


def test_the_default_hooks_map_the_source_forward_and_the_targets_spec_back(tmp_path: Path) -> None:
    conversion, source, target = prefixed(tmp_path)
    (converted,) = conversion.convert(source, target).items()
    assert converted[0] == "model.weight" and torch.equal(converted[1], source.tensors["encoder.weight"])
    (expected,) = conversion.expected_source(source, target).items()
    assert expected[0] == "encoder.weight" and expected[1].shape == (2, 3) and expected[1].is_meta


def test_the_default_hooks_refusals_name_the_source_file_and_who_needs_the_spec(tmp_path: Path) -> None:
    conversion, source, target = prefixed(tmp_path)
    with pytest.raises(ConversionError, match=f"missing key 'encoder.weight' in {tmp_path / 'original.pt'}"):
        conversion.convert(Source({}, payload="encoder"), target)
    needs_more = Target(target.model, None, {}, "ast-base (stride 10)", payload="model")
    with pytest.raises(ConversionError, match=r"missing key 'model.weight' in the spec of ast-base \(stride 10\)"):
        conversion.expected_source(source, needs_more)


def test_a_converter_without_an_example_says_so_by_name() -> None:
    with pytest.raises(LookupError, match="converter 'bare' has no example"):
        converter_named("bare").examples()


# -- a converter's validator ---------------------------------------------------------------------------------


def refuse_every_option(options: dict[str, Any]) -> None:
    raise ConversionError(f"--checkpoint {options['checkpoint']} is refused by the validator")


class Unreadable(Conversion):
    def read(self) -> Source:
        raise AssertionError("read ran: the validator's refusal was not made first")


def test_a_validators_refusal_comes_before_any_check_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out = tmp_path / "original.pt", tmp_path / "converted"
    checkpoint.write_bytes(b"not read")
    converter = converter_named("validated", conversion=Unreadable, validate=f"{__name__}:refuse_every_option")
    code = run(converter, ["--checkpoint", str(checkpoint), "--out", str(out)])
    error = " ".join(capsys.readouterr().err.split())  # the message is wrapped to the terminal
    assert code == 1, error
    assert f"--checkpoint {checkpoint} is refused by the validator; nothing was written" in error
    assert not out.exists()


def validator_with_a_bug(options: dict[str, Any]) -> None:
    raise KeyError("a bug of the validator")


def test_a_bug_outside_the_checks_is_an_internal_error_of_the_tool_with_its_traceback_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the log is written
    checkpoint, out = tmp_path / "original.pt", tmp_path / "converted"
    checkpoint.write_bytes(b"not read")
    converter = converter_named("buggy", conversion=Unreadable, validate=f"{__name__}:validator_with_a_bug")
    argv = ["--checkpoint", str(checkpoint), "--out", str(out)]
    assert run(converter, argv) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "convert-buggy-checkpoint: internal error in convert-buggy-checkpoint: 'a bug of the validator';" in error
    assert "nothing was written. This is a bug in the tool, not a fault of your files; the traceback is in" in error
    (log,) = tmp_path.glob("convert-buggy-checkpoint-*.log")
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"convert-buggy-checkpoint {' '.join(argv)}"
    assert "internal error in convert-buggy-checkpoint" in lines and "KeyError: 'a bug of the validator'" in lines
    assert not out.exists()
