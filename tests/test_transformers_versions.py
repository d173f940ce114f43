"""The differences between transformers majors that the suite gates on, measured so that a fix shows.

See fixtures/transformers_versions.py: each gated test is a strict xfail, and these tests pin the
behaviour behind the gate directly on transformers' own models.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers

from fixtures.transformers_versions import MAJOR

SMALL = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": (32, 32), "conv_stride": (5, 4), "conv_kernel": (10, 8), "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}  # fmt: skip
# every model whose encoder ends in a LayerNorm: stable-layer-norm (the "large" checkpoints) and Conformer
FINAL_NORM_MODELS = [
    ("Wav2Vec2", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("WavLM", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("Hubert", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("UniSpeechSat", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("Wav2Vec2Conformer", {}),
]


def randomized(name: str, extra: dict[str, Any]) -> Any:
    config = getattr(transformers, f"{name}Config")(**SMALL, **extra)
    model = getattr(transformers, f"{name}Model")(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


@pytest.mark.parametrize(("name", "extra"), FINAL_NORM_MODELS, ids=[name for name, _ in FINAL_NORM_MODELS])
@torch.no_grad()
def test_the_last_hidden_state_includes_the_final_layer_norm_only_in_transformers4(name: str, extra: dict) -> None:
    """s3prl's upstreams take the encoder's output (after its final LayerNorm) as the last hidden state."""
    model = randomized(name, extra)
    out = model(torch.randn(1, 8000, generator=torch.Generator().manual_seed(1)), output_hidden_states=True)
    difference = (out.hidden_states[-1] - out.last_hidden_state).abs().max().item()
    if MAJOR >= 5:
        assert difference > 1e-2, f"transformers {transformers.__version__} now includes the final norm: lift the gate"
    else:
        assert difference == 0.0
