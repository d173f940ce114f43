"""Which transformers class a classifier config's ``architectures[0]`` names, and what it is."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from converters.errors import ConversionError


class Head(Enum):
    """The three transformers heads an s3prl downstream maps onto, by class-name suffix."""

    SEQUENCE = "ForSequenceClassification"  # utterance tasks: keyword spotting, speaker id, emotion, intent
    FRAME = "ForAudioFrameClassification"  # speaker diarization without RNN layers
    XVECTOR = "ForXVector"  # speaker verification (sv_voxceleb1's XVector)


ALL_HEADS = (Head.SEQUENCE, Head.FRAME, Head.XVECTOR)


@dataclass(frozen=True)
class Family:
    name: str  # class-name prefix: Wav2Vec2, WavLM, ...
    heads: tuple[Head, ...]
    # s3prl ships an upstream for it (wav2vec2, wavlm, unispeech_sat, hubert, data2vec experts), whose
    # hidden states are the reference; SEW and SEW-D have none, so transformers' own hidden states are.
    s3prl_upstream: bool = True

    @property
    def config_class(self) -> str:
        return f"{self.name}Config"

    def model_class(self, head: Head) -> str:
        return f"{self.name}{head.value}"


# Every transformers family whose heads take raw 16 kHz waveforms through a wav2vec2-style conv encoder
# and have these head layouts. Wav2Vec2Bert (mel-feature input) is left out: s3prl has no such upstream.
FAMILIES = (
    Family("Wav2Vec2", ALL_HEADS),
    Family("WavLM", ALL_HEADS),
    Family("UniSpeechSat", ALL_HEADS),
    Family("Hubert", (Head.SEQUENCE,)),  # transformers has no Hubert frame or x-vector head
    Family("Data2VecAudio", ALL_HEADS),
    Family("Wav2Vec2Conformer", ALL_HEADS),
    Family("UniSpeech", (Head.SEQUENCE,)),
    Family("SEW", (Head.SEQUENCE,), s3prl_upstream=False),
    Family("SEWD", (Head.SEQUENCE,), s3prl_upstream=False),
)

SUPPORTED = {family.model_class(head): (family, head) for family in FAMILIES for head in family.heads}


def resolve(architecture: str) -> tuple[Family, Head]:
    """The family and head of a transformers class name, or a refusal listing the supported ones."""
    try:
        return SUPPORTED[architecture]
    except KeyError:
        raise ConversionError(
            f"architectures[0] is {architecture!r}, which no s3prl downstream converts to; supported: "
            + ", ".join(SUPPORTED)
        ) from None
