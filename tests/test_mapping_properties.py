"""Properties of the key mapping and the qkv split, for any size the format allows."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import ASTConfig, ASTForAudioClassification

from converters.ast.config import Backbone
from converters.ast.convert import target_spec
from converters.ast.example import original_state_dict, randomize_
from converters.ast.mapping import AST_MAPPING
from converters.ast.original import OriginalAST
from converters.hub_layout import load_serialized
from converters.mapping import Concat, Split

depths = st.integers(min_value=1, max_value=24)


def random_tensor(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@given(rows=st.integers(1, 64), columns=st.integers(0, 16), parts=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_split_then_merge_is_the_identity(rows: int, columns: int, parts: int, seed: int) -> None:
    fused = random_tensor((rows * parts, columns) if columns else (rows * parts,), seed)
    split = Split("fused", tuple(f"part{i}" for i in range(parts)))
    chunks = split.apply((fused,), ("fused",))
    assert len(chunks) == parts and all(c.shape[0] == rows for c in chunks)
    merge = split.inverse()
    assert merge is not None
    (merged,) = merge.apply(chunks, split.targets)
    assert torch.equal(merged, fused)
    assert merge.ops == (Concat(parts, 0),) and merge.inverse() == split


@given(rows=st.integers(1, 8), columns=st.integers(1, 16), parts=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_split_and_merge_along_the_last_dimension_round_trip(rows: int, columns: int, parts: int, seed: int) -> None:
    fused = random_tensor((rows, columns * parts), seed)
    split = Split("fused", tuple(f"part{i}" for i in range(parts)), dim=1)
    chunks = split.apply((fused,), ("fused",))
    assert all(c.shape == (rows, columns) for c in chunks)
    merge = split.inverse()
    assert merge is not None and merge.ops == (Concat(parts, 1),) and merge.inverse() == split
    (merged,) = merge.apply(chunks, split.targets)
    assert torch.equal(merged, fused)


def tiny_ast_config(hidden: int, heads: int, depth: int, labels: int = 3) -> ASTConfig:
    return ASTConfig(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        layer_norm_eps=1e-6,
        frequency_stride=16,
        time_stride=16,
        max_length=32,
        id2label={i: f"label {i}" for i in range(labels)},
    )


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 6),
    head_dim=st.sampled_from([4, 8, 16, 32]),
    depth=st.integers(1, 2),
    seed=st.integers(0, 2**31),
)
@torch.no_grad()
def test_fused_qkv_equals_the_three_projections(heads: int, head_dim: int, depth: int, seed: int) -> None:
    """timm's fused attention and transformers' split q/k/v compute the same thing, for any head layout."""
    hidden = heads * head_dim
    original = OriginalAST(Backbone(hidden, depth, 2 * hidden, head_dim=head_dim), 16, 16, 32, 3)
    randomize_(original, seed).eval()
    original.head_norm.eps = 1e-6  # transformers' single eps; the head's 1e-5 is measured elsewhere
    converted = AST_MAPPING.apply(original_state_dict(original))
    hf = load_serialized(ASTForAudioClassification(tiny_ast_config(hidden, heads, depth)), converted).eval()
    x = random_tensor((2, 32, 128), seed)
    assert torch.allclose(hf(input_values=x).logits, original(x), atol=1e-5, rtol=0)


@given(depth=depths)
def test_the_mapping_is_injective(depth: int) -> None:
    sources, targets = AST_MAPPING.source_keys(depth), AST_MAPPING.target_keys(depth)
    assert len(set(sources)) == len(sources)
    assert len(set(targets)) == len(targets)
    assert all(AST_MAPPING.match(key) is not None for key in sources)


@settings(deadline=None)
@given(depth=depths)
def test_mapped_keys_are_exactly_the_serialized_hf_keys(depth: int) -> None:
    """No rule is dead and none is missing: the produced key set is what transformers writes and reads."""
    assert set(AST_MAPPING.target_keys(depth)) == set(target_spec(tiny_ast_config(64, 1, depth)))


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_original_to_hf_to_original_is_exact(depth: int, seed: int) -> None:
    original = randomize_(OriginalAST(Backbone(64, depth, 128), 16, 16, 32, 3), seed)
    source = original_state_dict(original)
    back = AST_MAPPING.inverse().apply(AST_MAPPING.apply(source))
    discarded = {key for key in source if key.startswith(("module.v.head.", "module.v.head_dist."))}
    assert back.keys() == source.keys() - discarded
    assert all(torch.equal(back[key], source[key]) for key in back)
