"""Original AST state-dict keys to transformers' serialized (hub) layout, one rule per parameter.

Source: ``torch.save(DataParallel(ASTModel).state_dict())`` from YuanGongND/ast, so every key starts
with ``module.``; ``module.v`` is timm's DeiT (distilled) backbone. Target: the layout
``save_pretrained`` writes and every transformers release loads
(``audio_spectrogram_transformer.encoder.layer.N.attention.attention.query.weight``).
"""

from converters.mapping import Discard, KeyMapping, Rename, Rule, Split

SRC = "module.v."
DST = "audio_spectrogram_transformer."
BLOCK = SRC + "blocks.{n}."
LAYER = DST + "encoder.layer.{n}."


# The helpers below run once, at import; mutmut switches mutants per call and cannot reach them (hence
# "no mutate"). The table they build is pinned by tests/test_mapping_properties.py (exactly transformers'
# keys, exact round trip) and by the equivalence tests.
def _weight_and_bias(source: str, target: str) -> tuple[Rule, ...]:
    return tuple(Rename(f"{source}.{p}", f"{target}.{p}") for p in ("weight", "bias"))  # pragma: no mutate


def _qkv(param: str) -> Rule:
    return Split(  # pragma: no mutate
        BLOCK + f"attn.qkv.{param}",  # pragma: no mutate
        tuple(LAYER + f"attention.attention.{name}.{param}" for name in ("query", "key", "value")),  # pragma: no mutate
    )


AST_MAPPING = KeyMapping(
    (
        Rename(SRC + "cls_token", DST + "embeddings.cls_token"),
        Rename(SRC + "dist_token", DST + "embeddings.distillation_token"),
        Rename(SRC + "pos_embed", DST + "embeddings.position_embeddings"),
        *_weight_and_bias(SRC + "patch_embed.proj", DST + "embeddings.patch_embeddings.projection"),
        *_weight_and_bias(BLOCK + "norm1", LAYER + "layernorm_before"),
        # timm's fused projection holds q, k, v stacked in that order along the output rows.
        _qkv("weight"),
        _qkv("bias"),
        *_weight_and_bias(BLOCK + "attn.proj", LAYER + "attention.output.dense"),
        *_weight_and_bias(BLOCK + "norm2", LAYER + "layernorm_after"),
        *_weight_and_bias(BLOCK + "mlp.fc1", LAYER + "intermediate.dense"),
        *_weight_and_bias(BLOCK + "mlp.fc2", LAYER + "output.dense"),
        *_weight_and_bias(SRC + "norm", DST + "layernorm"),
        *_weight_and_bias("module.mlp_head.0", "classifier.layernorm"),
        *_weight_and_bias("module.mlp_head.1", "classifier.dense"),
        # DeiT's ImageNet heads ride along in every AST checkpoint; AST never calls them.
        Discard(SRC + "head.weight"),
        Discard(SRC + "head.bias"),
        Discard(SRC + "head_dist.weight"),
        Discard(SRC + "head_dist.bias"),
    )
)
