"""Original openai-whisper state-dict keys to transformers' serialized (hub) layout, one rule per parameter.

Source: ``Whisper.state_dict()`` (``whisper/model.py``): ``encoder.conv1``, ``encoder.conv2``, the encoder's
sinusoidal ``positional_embedding`` (a buffer, saved), ``encoder.blocks.{e}`` and ``decoder.blocks.{d}``
(``attn`` with ``query``, ``key`` (no bias), ``value``, ``out``; ``cross_attn`` in the decoder; ``mlp.0`` and
``mlp.2`` around a GELU; a LayerNorm before each), ``encoder.ln_post``, ``decoder.token_embedding``, the
decoder's learnt ``positional_embedding`` and ``decoder.ln``. Every rule renames: openai-whisper keeps q, k and v
apart and stores its weights as ``nn.Linear`` does. The logits are the decoder's output against the token
embedding: transformers' ``proj_out`` is tied to ``embed_tokens`` and written once.
"""

from converters.mapping import KeyMapping, Rename, Rule, Tie


# The helpers below run once, at import; mutmut switches mutants per call and cannot reach them (hence
# "no mutate"). The table they build is pinned by the mapping property tests (exactly transformers' keys, exact
# round trip) and by the equivalence tests.
def _weight_and_bias(source: str, target: str, bias: bool = True) -> tuple[Rule, ...]:
    kinds = ("weight", "bias") if bias else ("weight",)  # pragma: no mutate
    return tuple(Rename(f"{source}.{p}", f"{target}.{p}") for p in kinds)  # pragma: no mutate


def _attention(source: str, target: str) -> tuple[Rule, ...]:
    return (
        *_weight_and_bias(source + ".query", target + ".q_proj"),
        *_weight_and_bias(source + ".key", target + ".k_proj", bias=False),  # openai-whisper's key has no bias
        *_weight_and_bias(source + ".value", target + ".v_proj"),
        *_weight_and_bias(source + ".out", target + ".out_proj"),
    )  # pragma: no mutate


def _block(source: str, target: str, cross: bool) -> tuple[Rule, ...]:
    return (
        *_weight_and_bias(source + ".attn_ln", target + ".self_attn_layer_norm"),
        *_attention(source + ".attn", target + ".self_attn"),
        *(
            (
                *_weight_and_bias(source + ".cross_attn_ln", target + ".encoder_attn_layer_norm"),
                *_attention(source + ".cross_attn", target + ".encoder_attn"),
            )
            if cross
            else ()
        ),
        *_weight_and_bias(source + ".mlp_ln", target + ".final_layer_norm"),
        *_weight_and_bias(source + ".mlp.0", target + ".fc1"),
        *_weight_and_bias(source + ".mlp.2", target + ".fc2"),
    )  # pragma: no mutate


WHISPER_MAPPING = KeyMapping(
    (
        *_weight_and_bias("encoder.conv1", "model.encoder.conv1"),
        *_weight_and_bias("encoder.conv2", "model.encoder.conv2"),
        Rename("encoder.positional_embedding", "model.encoder.embed_positions.weight"),
        *_block("encoder.blocks.{e}", "model.encoder.layers.{e}", cross=False),
        *_weight_and_bias("encoder.ln_post", "model.encoder.layer_norm"),
        Rename("decoder.token_embedding.weight", "model.decoder.embed_tokens.weight"),
        Rename("decoder.positional_embedding", "model.decoder.embed_positions.weight"),
        *_block("decoder.blocks.{d}", "model.decoder.layers.{d}", cross=True),
        *_weight_and_bias("decoder.ln", "model.decoder.layer_norm"),
    ),
    ties=(Tie("proj_out.weight", "model.decoder.embed_tokens.weight"),),
)  # pragma: no mutate
