"""Which transformers class a classifier config's ``architectures[0]`` names, and what it is."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from converters.errors import ConversionError


class Head(Enum):
    """The three transformers heads an s3prl downstream maps onto, by class-name suffix."""

    SEQUENCE = "ForSequenceClassification"  # utterance tasks: keyword spotting, speaker id, emotion, intent
    FRAME = "ForAudioFrameClassification"  # speaker diarization without RNN layers
    XVECTOR = "ForXVector"  # speaker verification (sv_voxceleb1's XVector)


ALL_HEADS = (Head.SEQUENCE, Head.FRAME, Head.XVECTOR)


class FinalNorm(Enum):
    """Whether the family's encoder ends in a LayerNorm after its last layer (measured on both majors by
    tests/test_transformers_versions.py)."""

    NEVER = "never"
    STABLE = "with do_stable_layer_norm"  # the "large" checkpoints' pre-norm encoder
    ALWAYS = "always"


@dataclass(frozen=True)
class Family:
    name: str  # class-name prefix: Wav2Vec2, WavLM, ...
    model_type: str  # the base config's model_type
    heads: tuple[Head, ...]
    final_norm: FinalNorm = FinalNorm.STABLE
    # s3prl ships an upstream for it (wav2vec2, wavlm, unispeech_sat, hubert, data2vec experts), whose
    # hidden states are the reference; SEW and SEW-D have none, so transformers' own hidden states are.
    s3prl_upstream: bool = True

    @property
    def config_class(self) -> str:
        return f"{self.name}Config"

    def model_class(self, head: Head) -> str:
        return f"{self.name}{head.value}"

    def ends_in_layer_norm(self, config: Any) -> bool:
        """Whether this config's encoder applies a LayerNorm after its last layer."""
        if self.final_norm is FinalNorm.STABLE:
            return bool(getattr(config, "do_stable_layer_norm", False))
        return self.final_norm is FinalNorm.ALWAYS


# Every transformers family whose heads take raw 16 kHz waveforms through a wav2vec2-style conv encoder
# and have these head layouts. Wav2Vec2Bert (mel-feature input) is left out: s3prl has no such upstream.
FAMILIES = (
    Family("Wav2Vec2", "wav2vec2", ALL_HEADS),
    Family("WavLM", "wavlm", ALL_HEADS),
    Family("UniSpeechSat", "unispeech-sat", ALL_HEADS),
    Family("Hubert", "hubert", (Head.SEQUENCE,)),  # transformers has no Hubert frame or x-vector head
    Family("Data2VecAudio", "data2vec-audio", ALL_HEADS, FinalNorm.NEVER),
    Family("Wav2Vec2Conformer", "wav2vec2-conformer", ALL_HEADS, FinalNorm.ALWAYS),
    Family("UniSpeech", "unispeech", (Head.SEQUENCE,)),
    Family("SEW", "sew", (Head.SEQUENCE,), FinalNorm.NEVER, s3prl_upstream=False),
    Family("SEWD", "sew-d", (Head.SEQUENCE,), FinalNorm.NEVER, s3prl_upstream=False),
)

SUPPORTED = {family.model_class(head): (family, head) for family in FAMILIES for head in family.heads}
BY_MODEL_TYPE = {family.model_type: family for family in FAMILIES}


def resolve(architecture: str) -> tuple[Family, Head]:
    """The family and head of a transformers class name, or a refusal listing the supported ones."""
    try:
        return SUPPORTED[architecture]
    except KeyError:
        raise ConversionError(
            f"architectures[0] is {architecture!r}, which no s3prl downstream converts to; supported: "
            + ", ".join(SUPPORTED)
        ) from None


def family_of(model_type: object, where: str) -> Family:
    """The family of a base config's ``model_type``, or a refusal listing the supported ones."""
    try:
        return BY_MODEL_TYPE[str(model_type)]
    except KeyError:
        raise ConversionError(
            f"{where} has model_type {model_type!r}, which no s3prl downstream converts onto; supported: "
            + ", ".join(BY_MODEL_TYPE)
        ) from None
