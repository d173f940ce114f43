"""Original AST state-dict keys to transformers' serialized (hub) layout, one rule per parameter.

Source: ``torch.save(DataParallel(ASTModel).state_dict())`` from YuanGongND/ast, so every key starts
with ``module.`` (or, saved by a loop of one's own, without it); ``v`` is timm's DeiT (distilled) backbone.
Target: the layout ``save_pretrained`` writes and every transformers release loads
(``audio_spectrogram_transformer.encoder.layer.N.attention.attention.query.weight``; for ``ASTModel``, an SSAST
pretraining checkpoint's encoder without a head, the same without ``audio_spectrogram_transformer.``).
"""

import functools

from converters.ast.layout import PRETRAINING_KEYS
from converters.mapping import Discard, KeyMapping, Rename, Rule, Split


# The helpers below run once, at import; mutmut switches mutants per call and cannot reach them (hence
# "no mutate"). The table they build is pinned by tests/test_mapping_properties.py (exactly transformers'
# keys, exact round trip) and by the equivalence tests.
def _weight_and_bias(source: str, target: str) -> tuple[Rule, ...]:
    return tuple(Rename(f"{source}.{p}", f"{target}.{p}") for p in ("weight", "bias"))  # pragma: no mutate


def _qkv(block: str, layer: str, param: str) -> Rule:
    return Split(  # pragma: no mutate
        block + f"attn.qkv.{param}",  # pragma: no mutate
        tuple(layer + f"attention.attention.{name}.{param}" for name in ("query", "key", "value")),  # pragma: no mutate
    )


@functools.cache
def ast_mapping(prefix: str = "module.", pretraining: bool = False) -> KeyMapping:  # pragma: no mutate
    """The rules for a checkpoint whose keys start with ``prefix``; ``pretraining``: an SSAST pretraining
    checkpoint's encoder onto ``ASTModel`` (its pretext heads dropped), else the whole model onto
    ``ASTForAudioClassification``."""
    src = prefix + "v."  # pragma: no mutate
    dst = "" if pretraining else "audio_spectrogram_transformer."  # pragma: no mutate
    block, layer = src + "blocks.{n}.", dst + "encoder.layer.{n}."  # pragma: no mutate
    head = (
        *_weight_and_bias(prefix + "mlp_head.0", "classifier.layernorm"),
        *_weight_and_bias(prefix + "mlp_head.1", "classifier.dense"),
    )  # pragma: no mutate
    dropped = tuple(Discard(prefix + key) for key in PRETRAINING_KEYS)  # pragma: no mutate
    return KeyMapping(
        (
            Rename(src + "cls_token", dst + "embeddings.cls_token"),
            Rename(src + "dist_token", dst + "embeddings.distillation_token"),
            Rename(src + "pos_embed", dst + "embeddings.position_embeddings"),
            *_weight_and_bias(src + "patch_embed.proj", dst + "embeddings.patch_embeddings.projection"),
            *_weight_and_bias(block + "norm1", layer + "layernorm_before"),
            # timm's fused projection holds q, k, v stacked in that order along the output rows.
            _qkv(block, layer, "weight"),
            _qkv(block, layer, "bias"),
            *_weight_and_bias(block + "attn.proj", layer + "attention.output.dense"),
            *_weight_and_bias(block + "norm2", layer + "layernorm_after"),
            *_weight_and_bias(block + "mlp.fc1", layer + "intermediate.dense"),
            *_weight_and_bias(block + "mlp.fc2", layer + "output.dense"),
            *_weight_and_bias(src + "norm", dst + "layernorm"),
            *(dropped if pretraining else head),
            # DeiT's ImageNet heads ride along in the original's checkpoints; AST never calls them.
            Discard(src + "head.weight"),
            Discard(src + "head.bias"),
            Discard(src + "head_dist.weight"),
            Discard(src + "head_dist.bias"),
        )
    )


AST_MAPPING = ast_mapping()  # the recipes' checkpoints: saved through DataParallel
