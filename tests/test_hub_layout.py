"""Moving tensors between transformers' serialized layout and a model built in memory."""

from __future__ import annotations

import pytest
import torch
from transformers import ASTConfig, ASTForAudioClassification

from converters.hub_layout import assign_serialized, digests, load_serialized, serialized_state

CONFIG = ASTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, max_length=16)


def model() -> ASTForAudioClassification:
    return ASTForAudioClassification(CONFIG).eval()


def numbered(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor distinct: value i + position / 1000 for the i-th key."""
    return {key: i + torch.arange(t.numel()).reshape(t.shape) / 1000 for i, (key, t) in enumerate(state.items())}


def test_serialized_names_are_what_save_pretrained_writes(tmp_path: object) -> None:
    from safetensors import safe_open

    built = model()
    built.save_pretrained(str(tmp_path))
    with safe_open(f"{tmp_path}/model.safetensors", "pt") as written:
        assert set(written.keys()) == set(serialized_state(built))


def test_load_serialized_puts_each_tensor_in_its_place() -> None:
    target = numbered(serialized_state(model()))
    loaded = serialized_state(load_serialized(model(), target))
    assert loaded.keys() == target.keys()
    for key, tensor in target.items():
        assert torch.equal(loaded[key], tensor), key


def test_assign_serialized_reports_what_was_not_given() -> None:
    target = numbered(serialized_state(model()))
    left_out = sorted(target)[0]
    del target[left_out]
    assert len(assign_serialized(model(), target)) == 1
    with pytest.raises(KeyError, match="not given"):
        load_serialized(model(), target)
    for key in sorted(target)[:4]:
        del target[key]
    unassigned = assign_serialized(model(), target)
    assert len(unassigned) == 5
    with pytest.raises(KeyError) as refused:
        load_serialized(model(), target)
    assert refused.value.args[0] == f"not given: {sorted(unassigned)[:3]}"  # the first three, not a wall of names


def test_an_unknown_serialized_key_is_named() -> None:
    with pytest.raises(KeyError, match=r"nonexistent\.weight"):
        assign_serialized(model(), {"nonexistent.weight": torch.zeros(1)})


def test_digests_tell_bitwise_identity_dtype_and_shape() -> None:
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    same = digests({"w": base.clone()})
    assert digests({"w": base}) == same
    assert digests({"w": base.reshape(3, 2)}) != same
    assert digests({"w": base.double()})["w"][2] != same["w"][2]
    assert digests({"w": base.to(torch.bfloat16)})["w"][:2] == ("torch.bfloat16", (2, 3))
    nudged = base.clone()
    nudged[1, 2] = torch.nextafter(nudged[1, 2], torch.tensor(10.0))
    assert digests({"w": nudged}) != same
    assert digests({"w": torch.tensor(-0.0)}) != digests({"w": torch.tensor(0.0)})  # torch.equal says equal
