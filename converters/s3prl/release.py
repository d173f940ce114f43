"""Whether the installed transformers can compute what s3prl computed, where transformers releases differ.

transformers 5 records ``hidden_states`` from each encoder layer's output, so for an encoder that ends in a
LayerNorm ``hidden_states[-1]`` lacks that norm, where s3prl's upstreams (and transformers 4.x) include it;
``config.tie_last_hidden_states = True`` makes it the encoder's output again. A release that does not honour
the flag cannot represent such a head: the conversion is refused, naming the release.
"""

from __future__ import annotations

import torch
import transformers

from converters.errors import ConversionError
from converters.s3prl.convert import Target
from converters.s3prl.derive import TIE

# The field through which the probe asks the release for the encoder's output as the last hidden state.
PROBED_FLAG = TIE
# The smallest encoder of a family: enough to tell whether hidden_states[-1] is the final norm's output.
PROBE = {
    "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8, "conv_dim": (8,),
    "conv_kernel": (10,), "conv_stride": (5,), "num_conv_pos_embeddings": 2, "num_conv_pos_embedding_groups": 1,
}  # fmt: skip


@torch.no_grad()
def last_hidden_state_gap(target: Target) -> float:
    """Largest |hidden_states[-1] - last_hidden_state| of a tiny encoder of the target's kind, the tie flag set
    as the target sets it: zero where the installed release returns the final norm's output last."""
    config = getattr(transformers, target.family.config_class)(**PROBE)
    for name in ("do_stable_layer_norm", "feat_extract_norm"):
        if hasattr(target.config, name):
            setattr(config, name, getattr(target.config, name))
    setattr(config, PROBED_FLAG, getattr(target.config, TIE, None))
    with torch.random.fork_rng(devices=[]):  # the probe's own weights and input; the caller's RNG is left as it was
        torch.manual_seed(0)
        model = getattr(transformers, f"{target.family.name}Model")(config).eval()
        out = model(torch.randn(1, 400), output_hidden_states=True)
    return (out.hidden_states[-1] - out.last_hidden_state).abs().max().item()


def check_release(target: Target) -> None:
    """Refuse a head the installed transformers computes otherwise than s3prl did."""
    if not getattr(target.config, TIE, False):
        return
    gap = last_hidden_state_gap(target)
    if gap != 0.0:
        raise ConversionError(
            f"transformers {transformers.__version__} returns hidden_states[-1] before the {target.family.name} "
            f"encoder's final LayerNorm and does not honour config.{TIE} (a difference of {gap:.3g}): a weighted-sum "
            f"head cannot compute s3prl's function with it; convert and run with transformers 4.57 or 5.24"
        )
