"""Synthetic checkpoints in openai-whisper's format, built through its own code: ``whisper.model.Whisper`` of the
given dims, every parameter drawn anew (``randomize_``; the encoder's sinusoidal positions are the model's own), in
float16 as the published checkpoints are, saved as ``whisper.load_model`` reads them:
``torch.save({"dims": asdict(dims), "model_state_dict": state})``.
``EXAMPLE`` is the converter's example (``converters.contract.Example``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch

from converters.randomize import randomize_
from converters.whisper.dims import Dims

# A multilingual vocabulary (its special tokens' ids are derived from its size) on a narrow model.
TINY = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2, n_audio_layer=2, n_vocab=51865,
            n_text_ctx=448, n_text_state=16, n_text_head=2, n_text_layer=2)  # fmt: skip
# the published sizes' dims (whisper's model card): base 74M, small 244M parameters
BASE = Dims(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
SMALL = Dims(80, 1500, 768, 12, 12, 51865, 448, 768, 12, 12)


def original_model(dims: Dims, seed: int = 0) -> Any:
    """openai-whisper's model of ``dims``, every parameter randomized (seeded), in eval mode."""
    from whisper.model import ModelDimensions, Whisper

    return randomize_(Whisper(ModelDimensions(**asdict(dims))), seed).eval()


def write_checkpoint(path: Path, dims: Dims = TINY, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    model = original_model(dims, seed).to(dtype)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


class WhisperExample:
    """A multilingual model of a narrow width, or of the published base or small size."""

    sizes: tuple[str, ...] = ("tiny", "base", "small")
    models: ClassVar[dict[str, Dims]] = {"tiny": TINY, "base": BASE, "small": SMALL}

    def build(self, directory: Path, size: str = "tiny") -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        return {"checkpoint_path": write_checkpoint(directory / f"whisper-{size}.pt", self.models[size])}

    def rewrite(self, source: Path, destination: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """The checkpoint's model_state_dict, as the mapping sees it, changed (its dims kept)."""
        checkpoint = torch.load(source, weights_only=True)
        checkpoint["model_state_dict"] = change(dict(checkpoint["model_state_dict"]))
        torch.save(checkpoint, destination)

    def unchecked(self, options: dict[str, Any], output: Path) -> None:
        """transformers' own script's way (``convert_openai_to_hf.py``), the benchmark's baseline: the checkpoint
        loaded whole, renamed, a randomly initialised model, ``load_state_dict``, one forward, ``save_pretrained``
        (with the feature extractor its ``--convert_preprocessor`` writes); no check."""
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        from converters.hub_layout import load_serialized
        from converters.whisper.dims import hf_config
        from converters.whisper.mapping import WHISPER_MAPPING

        checkpoint = torch.load(options["checkpoint_path"], map_location="cpu", weights_only=True)
        dims = Dims(**checkpoint["dims"])
        state = checkpoint["model_state_dict"]
        model = WhisperForConditionalGeneration(hf_config(dims, next(iter(state.values())).dtype)).eval()
        load_serialized(model, WHISPER_MAPPING.apply(state))
        extractor = WhisperFeatureExtractor(feature_size=dims.n_mels)
        features = extractor(torch.randn(16000 * 2).numpy(), sampling_rate=16000, return_tensors="pt").input_features
        model(input_features=features.to(model.dtype), decoder_input_ids=torch.tensor([[dims.end_of_text + 1]]))
        model.save_pretrained(output)
        extractor.save_pretrained(output)


EXAMPLE = WhisperExample()
