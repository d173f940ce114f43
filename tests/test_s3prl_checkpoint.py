"""Reading an s3prl runner checkpoint: the layout it must have, and what each refusal names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.errors import ConversionError
from converters.s3prl.checkpoint import read


def runner(**entries: Any) -> dict[str, Any]:
    checkpoint: dict[str, Any] = {
        "Downstream": {"projector.weight": torch.randn(2, 3)},
        "Featurizer": {"weights": torch.randn(3)},
        "Args": argparse.Namespace(upstream="wav2vec2_local", downstream="synthetic"),
        "Step": 7,
    }
    checkpoint.update(entries)
    return {key: value for key, value in checkpoint.items() if value is not None}


def saved(tmp_path: Path, checkpoint: object) -> Path:
    torch.save(checkpoint, tmp_path / "states.ckpt")
    return tmp_path / "states.ckpt"


def test_a_runner_checkpoint_is_read_with_its_arguments(tmp_path: Path) -> None:
    path = saved(tmp_path, runner())
    checkpoint = read(str(path))  # type: ignore[arg-type]
    assert checkpoint.path == path
    assert checkpoint.flattened().keys() == {"Downstream.projector.weight", "Featurizer.weights"}
    assert checkpoint.args == {"upstream": "wav2vec2_local", "downstream": "synthetic"}
    assert checkpoint.entries == ("Downstream", "Featurizer", "Args", "Step")


def test_tensors_in_the_args_are_counted_as_storages(tmp_path: Path) -> None:
    """The loader matches every storage with a data record, also those held by the Namespace stand-in."""
    path = saved(tmp_path, runner(Args=argparse.Namespace(upstream="wav2vec2_local", mean=torch.full((3,), 0.5))))
    assert torch.equal(read(path).args["mean"], torch.full((3,), 0.5))


def test_args_saved_as_a_dict_are_read_too(tmp_path: Path) -> None:
    assert read(saved(tmp_path, runner(Args={"upstream": "hubert_local"}))).args == {"upstream": "hubert_local"}


def test_something_other_than_a_dict_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, [torch.zeros(1)])
    with pytest.raises(ConversionError, match=rf"^{path} holds a list, expected an s3prl runner checkpoint"):
        read(path)


@pytest.mark.parametrize("entry", ["Downstream", "Featurizer"])
def test_a_missing_entry_is_named_with_the_entries_found(tmp_path: Path, entry: str) -> None:
    path = saved(tmp_path, runner(**{entry: None}))
    left = ", ".join(k for k in ("Downstream", "Featurizer", "Args", "Step") if k != entry)
    with pytest.raises(ConversionError, match=rf"^{path} has no '{entry}' entry \(entries: {left}\)"):
        read(path)


def test_args_of_another_type_are_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, runner(Args=[1, 2]))
    with pytest.raises(ConversionError, match=rf"^{path}: 'Args' is a list, expected an argparse.Namespace"):
        read(path)


@pytest.mark.parametrize("entry", ["Downstream", "Featurizer"])
def test_an_entry_that_is_not_a_state_dict_names_the_entry(tmp_path: Path, entry: str) -> None:
    path = saved(tmp_path, runner(**{entry: {"weights": 3}}))
    with pytest.raises(ConversionError, match=rf"^{path} entry '{entry}': 'weights' is a int, expected a tensor"):
        read(path)
