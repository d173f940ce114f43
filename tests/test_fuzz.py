"""Corrupted original checkpoints of both formats: every case ends in the converter's own refusal.

Hypothesis mutates valid synthetic checkpoints (drop, add, rename, reshape, retype keys; wrong
containers; non-tensor values) and calls the library API; anything but a ConversionError, or no error
at all, fails. A sample of the same mutations runs through the commands in test_ast_cli.py and
test_s3prl_cli.py. `HYPOTHESIS_PROFILE=deep pytest tests/test_fuzz.py` runs 2000 cases per test.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.ast.convert import convert
from converters.ast.example import original_model, original_state_dict
from converters.ast.mapping import AST_MAPPING
from converters.ast.variants import BY_NAME
from converters.errors import ConversionError
from converters.mapping import KeyMapping
from converters.s3prl.checkpoint import read
from converters.s3prl.convert import convert_head, read_config
from converters.s3prl.example import ALL_CASES, TINY, S3PRLCase, runner_checkpoint
from converters.safe_load import as_state_dict

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
# Examples per test come from the profile: 120 in the fast suite, 2000 with HYPOTHESIS_PROFILE=deep.
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # large reprs


@cache
def ast_state() -> dict[str, torch.Tensor]:
    return original_state_dict(original_model(TENTEN))


def mutations(keys: list[str]) -> st.SearchStrategy[tuple[str, str, Any]]:
    """(operation, key, argument) over the given keys."""
    key = st.sampled_from(keys)
    name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._0123456789", min_size=1, max_size=40)
    return st.one_of(
        st.tuples(st.just("drop"), key, st.none()),
        st.tuples(st.just("add"), name, st.integers(1, 8)),
        st.tuples(st.just("rename"), key, name),
        st.tuples(st.just("reshape"), key, st.integers(-3, 3).filter(bool)),
        st.tuples(st.just("retype"), key, st.sampled_from([torch.int64, torch.bool, torch.float64, torch.uint8])),
        st.tuples(st.just("value"), key, st.sampled_from([None, 1.5, "weights", [1.0, 2.0], {"w": 1}])),
    )


def mutate(state: dict[str, Any], operation: str, key: str, argument: Any) -> dict[str, Any]:
    state = dict(state)
    if operation == "drop":
        del state[key]
    elif operation == "add":
        state[key if key not in state else key + ".extra"] = torch.randn(argument)
    elif operation == "rename":
        state[key + "." + argument] = state.pop(key)
    elif operation == "reshape":
        tensor = state[key]
        state[key] = torch.randn(max(1, tensor.numel() + argument)).reshape(-1)
        if state[key].shape == tensor.shape:  # a 1-d tensor grown by 0 elements is no mutation: add one
            state[key] = torch.randn(tensor.numel() + 1)
    elif operation == "retype":
        state[key] = state[key].to(argument)
    else:
        state[key] = argument
    return state


def ignored(mapping: KeyMapping, key: str, operation: str) -> bool:
    """Mutations of a key the mapping discards (unused heads, the best-score buffer) change nothing."""
    found = mapping.match(key)
    return operation in ("drop", "reshape", "retype") and found is not None and not mapping.rules[found[0]].targets


def refused(call: Callable[[], object]) -> None:
    with pytest.raises(ConversionError):
        call()


@FUZZ
@given(mutation=mutations(sorted(ast_state())))
def test_corrupted_ast_checkpoints_are_refused(mutation: tuple[str, str, Any]) -> None:
    operation, key, argument = mutation
    if ignored(AST_MAPPING, key, operation):
        return
    state = mutate(ast_state(), operation, key, argument)
    refused(lambda: convert(as_state_dict(state, "fuzzed.pth"), TENTEN, "fuzzed.pth"))


@FUZZ
@given(container=st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.just(torch.zeros(3)),
                           st.dictionaries(st.integers(), st.integers(), min_size=1)))  # fmt: skip
def test_wrong_containers_are_refused(container: Any) -> None:
    refused(lambda: as_state_dict(container, "fuzzed.pth"))


@pytest.fixture(scope="module")
def s3prl_inputs(
    s3prl_case: Callable[..., S3PRLCase], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[S3PRLCase, dict[str, Any]]]:
    inputs = []
    for family, head in ALL_CASES[:3]:  # Wav2Vec2's three heads: the mapping does not depend on the family
        case = s3prl_case(family, head)
        inputs.append((case, runner_checkpoint(case.base, family, head, TINY)))
    return inputs


@FUZZ
@given(data=st.data())
def test_corrupted_s3prl_checkpoints_are_refused(
    s3prl_inputs: list[tuple[S3PRLCase, dict[str, Any]]], tmp_path: Path, data: st.DataObject
) -> None:
    case, checkpoint = data.draw(st.sampled_from(s3prl_inputs))
    entry = data.draw(st.sampled_from(["Downstream", "Featurizer"]))
    keys = sorted(checkpoint[entry])
    operation, key, argument = data.draw(mutations(keys))
    target = read_config(case.config)
    if ignored(target.mapping, f"{entry}.{key}", operation):
        return
    corrupted = {**checkpoint, entry: mutate(checkpoint[entry], operation, key, argument)}
    path = tmp_path / "fuzzed.ckpt"
    torch.save(corrupted, path)
    refused(lambda: convert_head(read(path), target))


@FUZZ
@given(data=st.data())
def test_s3prl_checkpoints_missing_entries_or_of_wrong_types_are_refused(
    s3prl_inputs: list[tuple[S3PRLCase, dict[str, Any]]], tmp_path: Path, data: st.DataObject
) -> None:
    case, checkpoint = data.draw(st.sampled_from(s3prl_inputs))
    entry = data.draw(st.sampled_from(["Downstream", "Featurizer", "Args"]))
    value = data.draw(st.one_of(st.just("drop"), st.none(), st.integers(), st.text(), st.lists(st.floats())))
    corrupted = dict(checkpoint)
    if value == "drop" and entry != "Args":
        del corrupted[entry]
    else:
        corrupted[entry] = value
    path = tmp_path / "fuzzed.ckpt"
    torch.save(corrupted, path)
    if entry == "Args" and value in (None, "drop"):
        return  # a runner checkpoint without Args is still convertible: the defaults apply
    refused(lambda: convert_head(read(path), read_config(case.config)))
