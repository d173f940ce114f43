"""The published AST checkpoints: everything the model name fixes, in one table."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlparse

from converters.ast.spec import AUDIOSET, SPEECH_COMMANDS, Recipe, Spec
from converters.errors import ConversionError


@dataclass(frozen=True)
class Variant:
    name: str
    stride: int
    dataset: Recipe  # the recipe it was trained with
    # logits[0, :3] on the published sample audio, as transformers' integration test checks them.
    expected_slice: tuple[float, float, float]
    url: str
    # The file the published slice was measured on, looked for beside the checkpoints.
    sample_audio: str

    @property
    def frequency_stride(self) -> int:
        return self.stride

    @property
    def time_stride(self) -> int:
        return self.stride

    @property
    def max_length(self) -> int:
        return self.dataset.max_length

    @property
    def checkpoint_filename(self) -> str:
        return urlparse(self.url).path.rsplit("/", 1)[-1]

    @cached_property
    def spec(self) -> Spec:
        from converters.ast.labels import id2label

        labels = id2label(self.dataset)
        return Spec(self.stride, self.stride, self.max_length, self.dataset.feature_mean, self.dataset.feature_std,
                    labels=tuple(labels[i] for i in range(len(labels))))  # fmt: skip


AUDIOSET_SAMPLE = "sample_audio.flac"  # hub dataset nielsr/audio-spectogram-transformer-checkpoint
SPEECH_COMMANDS_SAMPLE = "speech_commands_v2_validation_0.wav"  # speech_commands v0.02, validation[0]

_A = AUDIOSET
_S = SPEECH_COMMANDS
_DROPBOX = "https://www.dropbox.com/s/"

# fmt: off
VARIANTS: tuple[Variant, ...] = (
    Variant("ast-finetuned-audioset-10-10-0.4593", 10, _A, (-0.8760, -7.0042, -8.6602),
            _DROPBOX + "ca0b1v2nlxzyeb4/audioset_10_10_0.4593.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-audioset-10-10-0.450", 10, _A, (-1.1986, -7.0903, -8.2718),
            _DROPBOX + "1tv0hovue1bxupk/audioset_10_10_0.4495.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-audioset-10-10-0.448", 10, _A, (-2.6128, -8.0080, -9.4344),
            _DROPBOX + "6u5sikl4b9wo4u5/audioset_10_10_0.4483.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-audioset-10-10-0.448-v2", 10, _A, (-1.5080, -7.4534, -8.8917),
            _DROPBOX + "kt6i0v9fvfm1mbq/audioset_10_10_0.4475.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-audioset-12-12-0.447", 12, _A, (-0.5050, -6.5833, -8.0843),
            _DROPBOX + "snfhx3tizr4nuc8/audioset_12_12_0.4467.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-audioset-14-14-0.443", 14, _A, (-0.3826, -7.0336, -8.2413),
            _DROPBOX + "z18s6pemtnxm4k7/audioset_14_14_0.4431.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-audioset-16-16-0.442", 16, _A, (-1.2113, -6.9101, -8.3470),
            _DROPBOX + "mdsa4t1xmcimia6/audioset_16_16_0.4422.pth?dl=1", AUDIOSET_SAMPLE),
    Variant("ast-finetuned-speech-commands-v2", 10, _S, (6.1589, -8.0566, -8.7984),
            _DROPBOX + "q0tbqpwv44pquwy/speechcommands_10_10_0.9812.pth?dl=1", SPEECH_COMMANDS_SAMPLE),
)
# fmt: on

BY_NAME = {variant.name: variant for variant in VARIANTS}


HUB_OWNER = "MIT/"  # the published conversions' hub repositories: MIT/<name>


def variant(name: str) -> Variant:
    """The variant of a model name (``MIT/<name>``, as the hub names it, too), or a ConversionError that suggests the
    nearest name and lists the supported ones."""
    found = BY_NAME.get(name.removeprefix(HUB_OWNER))
    if found is not None:
        return found
    nearest = difflib.get_close_matches(name.removeprefix(HUB_OWNER), list(BY_NAME), n=1, cutoff=0.6)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    raise ConversionError(f"unknown model name {name!r}{hint} Supported: {', '.join(BY_NAME)}")
