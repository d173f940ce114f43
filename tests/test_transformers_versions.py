"""The differences between transformers majors the converters depend on, measured on transformers' own models.

See fixtures/transformers_versions.py for the gates; here: the final encoder LayerNorm that transformers 5
leaves out of ``hidden_states[-1]``, for exactly the encoders ``Family.ends_in_layer_norm`` names, and the
``tie_last_hidden_states`` flag that puts it back, which the S3PRL converter writes (and refuses without).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers

from converters.s3prl import release
from converters.s3prl.convert import Target
from converters.s3prl.families import FAMILIES, FinalNorm, Head
from fixtures.transformers_versions import MAJOR

SMALL = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": (32, 32), "conv_stride": (5, 4), "conv_kernel": (10, 8), "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}  # fmt: skip
STABLE = {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}
# Every family s3prl has an upstream for, in each encoder layout it has (SEW and SEW-D squeeze their hidden
# states to another frame rate than their output's; s3prl has no upstream for them).
ENCODERS = [
    pytest.param(family, extra, id=family.name + ("-stable" if extra else ""))
    for family in FAMILIES
    if family.s3prl_upstream
    for extra in ([{}, STABLE] if family.final_norm is FinalNorm.STABLE else [{}])
]


def randomized(family: Any, extra: dict[str, Any], **fields: Any) -> Any:
    config = getattr(transformers, family.config_class)(**SMALL, **extra, **fields)
    model = getattr(transformers, f"{family.name}Model")(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def last_state_gap(model: Any) -> float:
    with torch.no_grad():
        out = model(torch.randn(1, 8000, generator=torch.Generator().manual_seed(1)), output_hidden_states=True)
    return (out.hidden_states[-1] - out.last_hidden_state).abs().max().item()


@pytest.mark.parametrize(("family", "extra"), ENCODERS)
def test_the_last_hidden_state_lacks_the_final_norm_exactly_where_transformers5_leaves_it_out(
    family: Any, extra: dict[str, Any]
) -> None:
    """s3prl's upstreams take the encoder's output (after any final LayerNorm) as the last hidden state."""
    model = randomized(family, extra)
    gap = last_state_gap(model)
    if MAJOR >= 5 and family.ends_in_layer_norm(model.config):
        assert gap > 1e-2, f"transformers {transformers.__version__} now includes the final norm: review the tie flag"
    else:
        assert gap == 0.0


@pytest.mark.parametrize(("family", "extra"), ENCODERS)
def test_the_tie_flag_makes_the_last_hidden_state_the_encoders_output(family: Any, extra: dict[str, Any]) -> None:
    assert last_state_gap(randomized(family, extra, tie_last_hidden_states=True)) == 0.0


def stable_target(family: Any = FAMILIES[0]) -> Target:
    config = getattr(transformers, family.config_class)(**SMALL, **STABLE, tie_last_hidden_states=True)
    return Target(family, Head.SEQUENCE, config)


def test_the_installed_release_is_probed_for_the_tie_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that ignores the flag (simulated: the probe sets a field no release knows) is refused by name
    under transformers 5, where the flag is needed; 4.x computes the norm into the last state anyway."""
    release.check_release(stable_target())  # the installed release honours it: no refusal
    monkeypatch.setattr(release, "PROBED_FLAG", "tie_last_hidden_states_unknown_to_any_release")
    if MAJOR < 5:
        release.check_release(stable_target())
        return
    from converters.errors import ConversionError

    with pytest.raises(ConversionError) as refusal:
        release.check_release(stable_target())
    assert str(refusal.value).startswith(
        f"transformers {transformers.__version__} returns hidden_states[-1] before the Wav2Vec2 encoder's final "
        f"LayerNorm and does not honour config.tie_last_hidden_states"
    )


def test_the_probe_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    release.last_hidden_state_gap(stable_target())
    assert torch.equal(torch.rand(3), expected)
