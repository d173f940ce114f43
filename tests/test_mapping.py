"""The key-mapping rules one by one: what each refusal says, and what each helper returns."""

from __future__ import annotations

import pytest
import torch

from converters.errors import ConversionError
from converters.mapping import (
    Chunk,
    Concat,
    Discard,
    KeyMapping,
    Merge,
    Rename,
    Rule,
    Split,
    Squeeze,
    Tie,
    Transpose,
    Unsqueeze,
    expand,
    key_difference,
    shape_mismatch,
)

MAPPING = KeyMapping(
    (
        Rename("a.weight", "A.weight"),
        Split("blocks.{n}.qkv", ("layers.{n}.q", "layers.{n}.k", "layers.{n}.v")),
        Rename("blocks.{n}.norm", "layers.{n}.norm"),
        Discard("head"),
    )
)


def state(depth: int = 2) -> dict[str, torch.Tensor]:
    tensors = {"a.weight": torch.randn(2, 2), "head": torch.randn(3)}
    for n in range(depth):
        tensors[f"blocks.{n}.qkv"] = torch.randn(6, 2)
        tensors[f"blocks.{n}.norm"] = torch.randn(2)
    return tensors


def test_apply_maps_every_rule_and_drops_discards() -> None:
    source = state()
    converted = MAPPING.apply(source)
    assert sorted(converted) == sorted(MAPPING.target_keys(2))
    assert torch.equal(converted["layers.1.k"], source["blocks.1.qkv"][2:4])
    assert torch.equal(converted["A.weight"], source["a.weight"])


def test_an_unexpected_key_is_named_with_where() -> None:
    with pytest.raises(
        ConversionError, match=r"^unexpected key 'blocks.0.extra' in ckpt.pth: no mapping rule consumes it$"
    ):
        MAPPING.apply({**state(), "blocks.0.extra": torch.zeros(1)}, where="ckpt.pth")


def test_the_first_missing_key_in_rule_order_is_named_and_the_rest_counted() -> None:
    source = state(3)
    del source["blocks.1.norm"], source["blocks.2.qkv"]
    with pytest.raises(ConversionError, match=r"^missing key 'blocks.2.qkv' in ckpt.pth \(and 1 more\)$"):
        MAPPING.apply(source, where="ckpt.pth")


def test_a_single_missing_key_is_named_alone() -> None:
    source = state()
    del source["a.weight"]
    with pytest.raises(ConversionError, match=r"^missing key 'a.weight' in the checkpoint$"):
        MAPPING.apply(source)


def test_a_discarded_key_may_be_absent() -> None:
    source = state()
    del source["head"]
    assert "head" not in MAPPING.required_source_keys(2) and "head" in MAPPING.source_keys(2)
    MAPPING.apply(source)


def test_the_depth_is_one_past_the_deepest_layer() -> None:
    assert MAPPING.num_layers(state(3)) == 3
    assert MAPPING.num_layers({"a.weight": torch.zeros(1)}) == 0
    assert MAPPING.num_layers(["blocks.7.norm", "blocks.x.norm", "other"]) == 8


def test_layer_indices_are_canonical_numbers() -> None:
    assert MAPPING.match("blocks.01.norm") is None  # a leading zero would alias blocks.1
    assert MAPPING.match("blocks.10.norm") == (2, 0, (("n", 10),))
    assert MAPPING.match("a.weight") == (0, 0, ())
    assert expand("blocks.{n}.norm", 4) == "blocks.4.norm" and expand("a.weight", None) == "a.weight"
    assert expand("enc.{e}.dec.{d}", {"e": 3, "d": 0}) == "enc.3.dec.0"


def test_an_ambiguous_mapping_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        KeyMapping((Rename("x", "y"), Rename("x", "z"))).match("x")


def test_a_template_names_each_placeholder_once_and_a_rule_shares_them() -> None:
    with pytest.raises(ValueError, match="repeats a placeholder"):
        Rename("a.{n}.b.{n}", "c.{n}")
    with pytest.raises(ValueError, match="share their placeholders"):
        Rename("a.{n}", "c")  # every layer's tensor onto one key: not injective
    with pytest.raises(ValueError, match="same placeholders"):
        Tie("out.{n}", "embed")


@pytest.mark.parametrize(("shape", "shown"), [((5, 2), r"\(5, 2\)"), ((7,), r"\(7,\)"), ((), r"\(\)")])
def test_split_refuses_what_does_not_divide(shape: tuple[int, ...], shown: str) -> None:
    source = {**state(1), "blocks.0.qkv": torch.randn(shape)}
    with pytest.raises(ConversionError, match=rf"^blocks.0.qkv has shape {shown}, which does not split into 3 equal"):
        MAPPING.apply(source)


def test_merge_refuses_unequal_shapes_naming_them() -> None:
    merge = Merge(("q", "k"), "qk")
    with pytest.raises(ConversionError, match=r"^cannot merge tensors of unequal shapes: q \(2, 3\), k \(2, 4\)$"):
        merge.apply((torch.zeros(2, 3), torch.zeros(2, 4)), ("q", "k"))
    (merged,) = Merge(("q", "k"), "qk", dim=1).apply((torch.zeros(2, 3), torch.ones(2, 4)), ("q", "k"))
    assert merged.shape == (2, 7) and merged[:, 3:].eq(1).all()


ENCODER_DECODER = KeyMapping(
    (
        Rename("embed", "decoder.embed_tokens.weight"),
        Split("enc.{e}.qkv", ("encoder.layers.{e}.q", "encoder.layers.{e}.k", "encoder.layers.{e}.v")),
        Rename("dec.{d}.fc", "decoder.layers.{d}.fc.weight", Transpose()),
        Rename("dec.{d}.experts.{x}.scale", "decoder.layers.{d}.experts.{x}.scale", Unsqueeze(0)),
    ),
    ties=(Tie("proj_out.weight", "decoder.embed_tokens.weight"),),
)


def encoder_decoder_state(encoder: int, decoder: int, experts: int = 2) -> dict[str, torch.Tensor]:
    state = {"embed": torch.randn(5, 4)}
    state.update({f"enc.{e}.qkv": torch.randn(12, 4) for e in range(encoder)})
    state.update({f"dec.{d}.fc": torch.randn(4, 8) for d in range(decoder)})
    state.update({f"dec.{d}.experts.{x}.scale": torch.randn(4) for d in range(decoder) for x in range(experts)})
    return state


def test_each_placeholder_has_a_depth_of_its_own() -> None:
    state = encoder_decoder_state(encoder=5, decoder=2, experts=3)
    assert ENCODER_DECODER.depths(state) == {"e": 5, "d": 2, "x": 3}
    converted = ENCODER_DECODER.apply(state)
    assert sorted(converted) == sorted(ENCODER_DECODER.target_keys({"e": 5, "d": 2, "x": 3}))
    assert len(ENCODER_DECODER.source_keys({"e": 5, "d": 2, "x": 3})) == 1 + 5 + 2 + 2 * 3
    assert converted["decoder.layers.1.fc.weight"].shape == (8, 4)
    assert converted["decoder.layers.1.experts.2.scale"].shape == (1, 4)
    del state["dec.0.experts.1.scale"]
    with pytest.raises(ConversionError, match=r"^missing key 'dec.0.experts.1.scale' in the checkpoint$"):
        ENCODER_DECODER.apply(state)


def test_a_tied_target_is_the_tensor_it_is_tied_to_and_listed_as_such() -> None:
    converted = ENCODER_DECODER.apply(encoder_decoder_state(2, 1))
    assert converted["proj_out.weight"] is converted["decoder.embed_tokens.weight"]
    assert ENCODER_DECODER.tied_keys({"e": 2, "d": 1, "x": 2}) == {"proj_out.weight"}
    assert "proj_out.weight" in ENCODER_DECODER.target_keys(1)
    # mapped back, the tied target needs no source of its own
    back = ENCODER_DECODER.inverse().apply(converted)
    state = encoder_decoder_state(2, 1)
    assert back.keys() == state.keys()


def test_the_inverse_undoes_every_operation_exactly() -> None:
    state = encoder_decoder_state(3, 2)
    back = ENCODER_DECODER.inverse().apply(ENCODER_DECODER.apply(state))
    assert all(torch.equal(back[key], tensor) for key, tensor in state.items())
    for op in (Chunk(3, 1), Concat(2, 0), Transpose(0, 2), Unsqueeze(1), Squeeze(1)):
        assert op.inverse().inverse() == op


@pytest.mark.parametrize(("op", "shape", "cause"), [
    (Transpose(0, 2), (3, 4), r"has shape \(3, 4\), which has no dimension to transpose"),
    (Squeeze(0), (3, 4), r"has shape \(3, 4\), not size 1 in dimension 0"),
    (Squeeze(2), (3, 1), r"has shape \(3, 1\), not size 1 in dimension 2"),  # no such dimension
])  # fmt: skip
def test_an_operation_refuses_a_shape_it_cannot_take(op: object, shape: tuple[int, ...], cause: str) -> None:
    rule = Rename("x", "y", op)  # type: ignore[arg-type]
    with pytest.raises(ConversionError, match=rf"^x {cause}$"):
        KeyMapping((rule,)).apply({"x": torch.zeros(shape)})


def test_a_rule_without_targets_is_optional_and_has_no_inverse() -> None:
    assert Discard("head") == Rule(("head",), optional=True) and Discard("head").inverse() is None


def test_converted_sources_are_the_keys_that_become_weights() -> None:
    source = {**state(1), "stray": torch.zeros(1)}
    assert sorted(MAPPING.converted_sources(source)) == ["a.weight", "blocks.0.norm", "blocks.0.qkv"]


def test_shape_mismatch_names_the_first_difference_and_ignores_absent_keys() -> None:
    spec = {"a": torch.empty(2, 3), "b": torch.empty(4), "c": torch.empty(1)}
    assert shape_mismatch({"a": torch.zeros(2, 3), "b": torch.zeros(5)}, spec) == ("b", (5,), (4,))
    assert shape_mismatch({"a": torch.zeros(2, 3)}, spec) is None


def test_key_difference_names_three_of_each_side_at_most() -> None:
    expected = {f"k{i}" for i in range(6)}
    assert key_difference(expected, expected) == ""
    assert key_difference({"k0", "z1", "z2", "z3", "z4"}, expected) == (
        "missing ['k1', 'k2', 'k3'], unexpected ['z1', 'z2', 'z3']"
    )
    assert key_difference({"k0"}, {"k0", "k1"}) == "missing ['k1']"
    assert key_difference({"k0", "k9"}, {"k0"}) == "unexpected ['k9']"


def test_depths_are_the_deepest_index_whatever_order_the_keys_come_in() -> None:
    layers_backwards = {f"blocks.{n}.qkv": torch.randn(6, 2) for n in (2, 0, 1)}
    layers_backwards |= {f"blocks.{n}.norm": torch.randn(2) for n in (2, 0, 1)}
    assert MAPPING.depths({"a.weight": torch.randn(2, 2), **layers_backwards}) == {"n": 3}


def test_a_tie_with_a_placeholder_ties_each_layer() -> None:
    mapping = KeyMapping(
        (Rename("dec.{d}.embed", "decoder.layers.{d}.embed"),),
        ties=(Tie("decoder.layers.{d}.out", "decoder.layers.{d}.embed"),),
    )
    assert mapping.tied_keys({"d": 3}) == {f"decoder.layers.{d}.out" for d in range(3)}
    converted = mapping.apply({f"dec.{d}.embed": torch.randn(2) for d in range(2)})
    assert all(converted[f"decoder.layers.{d}.out"] is converted[f"decoder.layers.{d}.embed"] for d in range(2))


def test_a_merge_maps_back_to_its_parts() -> None:
    parts = {"q": torch.randn(2, 3), "k": torch.randn(2, 3), "v": torch.randn(2, 3)}
    mapping = KeyMapping((Merge(("q", "k", "v"), "qkv"),))
    back = mapping.inverse().apply(mapping.apply(parts))
    assert back.keys() == parts.keys() and all(torch.equal(back[k], parts[k]) for k in parts)
