"""The Whisper converter's record: original openai-whisper checkpoints to transformers'
``WhisperForConditionalGeneration``. Cheap to import: the conversion itself is ``conversion.py``."""

from __future__ import annotations

import difflib
from typing import Any

from converters.contract import Converter, Option, Requirement, Role
from converters.errors import ConversionError
from converters.whisper.published import PUBLISHED, address

VERSION = "20250625"  # the openai-whisper release the reference is pinned to (tox, CI)


def validate(options: dict[str, Any]) -> None:
    """An unknown model name is refused before any check, suggesting the nearest and listing the published ones."""
    name = options.get("model_name")
    if name is not None and name not in PUBLISHED:
        nearest = difflib.get_close_matches(name, list(PUBLISHED), n=1, cutoff=0.6)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        raise ConversionError(f"unknown model name {name!r}{hint} Published: {', '.join(PUBLISHED)}")


def published_original(options: dict[str, Any]) -> str | None:
    """Where a published model's original is fetched from, when no --checkpoint_path is given."""
    name = options.get("model_name")
    return address(name) if name in PUBLISHED else None


CONVERTER = Converter(
    name="whisper",
    command="convert-whisper-checkpoint",
    description="Convert an original openai-whisper checkpoint (torch.save of its dims and model_state_dict, as "
    "whisper.load_model reads it) to transformers' WhisperForConditionalGeneration, with its feature extractor and "
    "generation config, writing the output only if every check passes against the openai-whisper package's own "
    "model and log-Mel spectrogram.",
    options=(
        Option(
            "--model_name",
            f"a published model: {', '.join(PUBLISHED)} (its original is fetched where no --checkpoint_path is "
            "given) (default: none)",
            metavar="NAME",
        ),
        Option(
            "--checkpoint_path",
            "the original .pt file, or an http(s) address to fetch it from (cached as torch.hub caches: "
            "torch.hub.get_dir()/checkpoints) (default: with --model_name, the published model's original, fetched "
            "likewise)",
            Role.SOURCE,
            metavar="FILE|URL",
            key="checkpoint",
        ),
        Option("--pytorch_dump_folder_path", "output directory", Role.OUTPUT, required=True),
    ),
    conversion="converters.whisper.conversion:WhisperConversion",
    files=frozenset({"config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json"}),
    requires=(
        Requirement(
            "whisper",
            f"pip install --no-deps openai-whisper=={VERSION} && pip install numba tiktoken more-itertools tqdm",
            distributions=("openai-whisper",),
            # openai-whisper declares triton, which pins a torch of its own: installed without its dependencies
            pip=((f"openai-whisper=={VERSION}", "--no-deps"), ("numba", "tiktoken", "more-itertools", "tqdm")),
        ),
    ),
    validate="converters.whisper.converter:validate",
    default_source="converters.whisper.converter:published_original",
    default_source_option="--model_name",
    example="converters.whisper.example:EXAMPLE",
)
