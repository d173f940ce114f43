"""Properties of the S3PRL mapping: the TDNN weight layout, and every Downstream key used exactly once."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from s3prl.downstream.sv_voxceleb1.model import TDNN
from transformers import Wav2Vec2Config
from transformers.models.wav2vec2.modeling_wav2vec2 import TDNNLayer

from converters.randomize import randomize_
from converters.s3prl.convert import Target, expected_sources, head_spec
from converters.s3prl.example import Size, classifier_config, s3prl_expert
from converters.s3prl.families import FAMILIES, Head
from converters.s3prl.mapping import head_mapping


@settings(max_examples=60, deadline=None)
@given(
    width_in=st.integers(1, 12), width_out=st.integers(1, 12), context=st.integers(1, 6),
    dilation=st.integers(1, 4), extra=st.integers(0, 20), batch=st.integers(1, 3), seed=st.integers(0, 2**31),
)  # fmt: skip
@torch.no_grad()
def test_s3prl_tdnn_equals_transformers_tdnn(
    width_in: int, width_out: int, context: int, dilation: int, extra: int, batch: int, seed: int
) -> None:
    """s3prl's unfold + Linear and transformers' conv1d over ``kernel.weight.view(out, k, in)`` agree,
    with the kernel tensors copied as the mapping copies them (renamed, never reshaped)."""
    s3prl = randomize_(TDNN(input_dim=width_in, output_dim=width_out, context_size=context, dilation=dilation), seed)
    config = Wav2Vec2Config(tdnn_dim=(width_in, width_out), tdnn_kernel=(1, context), tdnn_dilation=(1, dilation))
    layer = TDNNLayer(config, layer_id=1)
    layer.kernel.weight.copy_(s3prl.kernel.weight)
    layer.kernel.bias.copy_(s3prl.kernel.bias)
    frames = (context - 1) * dilation + 1 + extra
    x = torch.randn(batch, frames, width_in, generator=torch.Generator().manual_seed(seed))
    expected = s3prl(x)
    assert expected.shape == (batch, extra + 1, width_out)
    assert torch.allclose(layer(x), expected, atol=1e-5, rtol=1e-5)


sizes = st.builds(
    lambda projector, tdnn_in, tdnn_agg, labels: Size("random", {"hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64}, projector, (tdnn_in, tdnn_agg), labels),
    st.integers(1, 24), st.integers(1, 24), st.integers(1, 24), st.integers(2, 12),
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(head=st.sampled_from(list(Head)), size=sizes, weighted=st.booleans())
def test_every_downstream_key_is_used_exactly_once(head: Head, size: Size, weighted: bool) -> None:
    """For any head sizes: s3prl's Downstream (and Featurizer) keys map one to one onto exactly the keys
    transformers' head serializes, and mapping back gives the same tensors."""
    expert = randomize_(s3prl_expert(head, size, upstream_dim=32), 0)
    source = {f"Downstream.{k}": v for k, v in expert.state_dict().items()}
    if weighted:
        source["Featurizer.weights"] = torch.randn(3)
    mapping = head_mapping(head, weighted)
    converted = mapping.apply(source)
    target = Target(FAMILIES[0], head, classifier_config(FAMILIES[0], head, size, weighted))
    assert converted.keys() == head_spec(target).keys()
    assert len(converted) == len(source) - 1  # everything but the best_score buffer
    back = mapping.inverse().apply(converted)
    assert back.keys() == source.keys() - {"Downstream.best_score"}
    assert all(torch.equal(back[k], source[k]) for k in back)
    # what the key-coverage check requires is what s3prl's own head loads, best_score aside: a key the
    # reference needs is never first missed inside it
    assert expected_sources(target).keys() == source.keys() - {"Downstream.best_score"}
