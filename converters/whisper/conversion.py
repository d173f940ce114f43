"""One Whisper conversion: the hooks the generic checks call (``converters.contract.Conversion``).

The reference (``reference``) is openai-whisper's own model holding the checkpoint's tensors and its own input
pipeline; it returns what the original computes (its features and logits), so that the source is let go before
the written model is loaded back; the locator reads the source anew only where the outputs part.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.audio import SAMPLING_RATE, directory_extractor
from converters.contract import Comparison, Conversion, Source, Target
from converters.errors import ConversionError
from converters.golden import Recorded, described
from converters.locator import (
    Divergence,
    StageDifference,
    Tap,
    largest_difference,
    locate_side_by_side,
    widened_in_turn,
)
from converters.mapping import KeyMapping
from converters.recordings import RECORDINGS
from converters.safe_load import weights_dtype
from converters.whisper.dims import Dims, check_supported, declared, dims_fields, generation_config, hf_config
from converters.whisper.mapping import WHISPER_MAPPING

MODEL_RECORDING = "speech-4.8s"  # the built-in recording both models run on (every one is a full 30 s window)
LOGITS_ATOL = 1e-4  # as transformers' Whisper integration tests hold logits
RTOL = 1e-5  # beside it, of the logits' magnitude: float32 sums over a 51865-token vocabulary's width
STAGE_ATOL = STAGE_RTOL = 1e-5  # the locator's, in float32 (both models in float32)
# log-Mel features: transformers computes the Slaney mel bank itself, openai-whisper reads librosa's from a file;
# the two agree to float32 rounding (2.4e-7 measured on the built-in recordings).
FEATURES_ATOL = 1e-5  # transformers documents its Whisper log-Mel as openai-whisper's "with 1e-5 tolerance"
# The config fields that change what the model computes; and the special tokens a transcription starts and ends with
# (transformers' own script writes <|endoftext|> one below openai-whisper's for a multilingual v1/v2 vocabulary).
CONFIG_FIELDS = (
    "vocab_size", "num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
    "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", "max_source_positions", "max_target_positions",
    "activation_function", "scale_embedding", "tie_word_embeddings", "decoder_start_token_id", "eos_token_id",
)  # fmt: skip
EXTRACTOR_FIELDS = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "padding_value", "dither")
NOT_WRITTEN = (
    "not written: the tokenizer (openai-whisper reads its BPE ranks from files, which transformers' script fetches "
    "from GitHub), and generation_config.json's suppress_tokens and alignment_heads (openai-whisper knows these for "
    "its published models only); transformers' WhisperProcessor needs a tokenizer of the published model's"
)


@dataclass(frozen=True)
class Payload:
    dims: Dims


@dataclass(frozen=True)
class Reference:
    """What the original computes on the model recording: its features and logits; and its features of every
    built-in recording (the input stage's)."""

    features: dict[str, torch.Tensor]
    logits: torch.Tensor
    tokens: torch.Tensor


def feature_extractor(dims: Dims) -> Any:
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=dims.n_mels)  # the rest: openai-whisper's audio.py constants


class WhisperConversion(Conversion):
    concurrent_reference = True  # the original's forward pass, while the files are written
    declares = True  # its dims

    def read(self) -> Source:
        loaded = self.loader.load(self.source_path)
        if not isinstance(loaded, dict) or "model_state_dict" not in loaded:
            found = sorted(map(str, loaded)) if isinstance(loaded, dict) else type(loaded).__name__
            raise ConversionError(f"{self.where} is no openai-whisper checkpoint: it has no 'model_state_dict' "
                                  f"beside 'dims' (found {found})")  # fmt: skip
        dims = Dims.of(loaded.get("dims"), self.where)
        state = loaded["model_state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConversionError(f"{self.where}: model_state_dict is not a mapping of names to tensors")
        return Source(dict(state), Payload(dims))

    def declared(self, source: Source) -> dict[str, tuple[Any, Any]]:
        return dict(declared(source.payload.dims, source.tensors))

    def target(self, source: Source) -> Target:
        dims = source.payload.dims
        check_supported(dims, self.where)
        dtype = weights_dtype(WHISPER_MAPPING.converted_sources(source.tensors), self.where)
        config = hf_config(dims, dtype)

        def shapes() -> dict[str, torch.Tensor]:
            from transformers import WhisperForConditionalGeneration

            from converters.hub_layout import serialized_state

            with torch.device("meta"):
                return serialized_state(WhisperForConditionalGeneration(config))

        needs = f"the checkpoint's dims ({dims.n_audio_layer} encoder and {dims.n_text_layer} decoder layers)"
        return Target("transformers:WhisperForConditionalGeneration", config, shapes, needs, source.payload,
                      dims_fields(dims))  # fmt: skip

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        return WHISPER_MAPPING

    def write(
        self, source: Source, target: Target, tensors: dict[str, torch.Tensor], directory: Path
    ) -> dict[str, torch.Tensor]:
        from converters.output import write_safetensors

        dims = target.payload.dims
        tied = WHISPER_MAPPING.tied_keys(WHISPER_MAPPING.depths(source.tensors))
        target.config.save_pretrained(directory)
        generation_config(dims).save_pretrained(directory)
        write_safetensors({key: tensor for key, tensor in tensors.items() if key not in tied},
                          directory / "model.safetensors")  # fmt: skip
        feature_extractor(dims).save_pretrained(directory)
        return tensors

    def function_fields(self, target: Target) -> dict[str, dict[str, Any]]:
        extractor = feature_extractor(target.payload.dims).to_dict()
        return {
            "config.json": {name: getattr(target.config, name) for name in CONFIG_FIELDS},
            "preprocessor_config.json": {name: extractor[name] for name in EXTRACTOR_FIELDS},
        }

    @torch.no_grad()
    def reference(self, source: Source, target: Target) -> Reference:
        from converters.whisper.original import load_original, original_features, original_logits, prompt

        dims = target.payload.dims
        features = {r.name: original_features(r.waveform(), dims.n_mels) for r in RECORDINGS}
        tokens = prompt(dims)
        model = load_original(source.tensors, dims)  # the checkpoint's tensors; run in float32 (original_logits)
        return Reference(features, original_logits(model, features[MODEL_RECORDING], tokens), tokens)

    @torch.no_grad()
    def compare(self, model: nn.Module, reference: Reference, target: Target) -> Comparison:
        """From each built-in recording, the directory's extractor against openai-whisper's log-Mel spectrogram;
        on one of them, the written model (float32) against openai-whisper's, decoder logits under teacher
        forcing. Past a tolerance, the locator names the stage: the input first, then both models run on the
        original's features stage by stage."""
        extractor = directory_extractor(self.staging)
        notes = ["features: transformers' WhisperFeatureExtractor against openai-whisper's log_mel_spectrogram "
                 "of each recording's 30-second window:"]  # fmt: skip
        worst = (-1.0, "")
        ours: dict[str, torch.Tensor] = {}
        for recording in RECORDINGS:
            found = extractor(recording.waveform(), sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
            ours[recording.name] = found
            theirs = reference.features[recording.name]
            difference = largest_difference(theirs, found) if found.shape == theirs.shape else math.inf
            notes.append(f"  {recording.name} ({recording.seconds:g} s, {recording.level}): largest difference "
                         f"{difference:.3g} (tolerance {FEATURES_ATOL:g})")  # fmt: skip
            worst = max(worst, (difference, recording.name), key=lambda item: item[0])
        inputs = StageDifference("input features", worst[0], FEATURES_ATOL, f"largest on {worst[1]}")
        with in_float32(model) as float32:
            logits = float32(input_features=ours[MODEL_RECORDING], decoder_input_ids=reference.tokens).logits
        tolerance = LOGITS_ATOL + RTOL * reference.logits.abs().max().item()
        difference = (
            largest_difference(reference.logits, logits) if logits.shape == reference.logits.shape else math.inf
        )
        outputs = StageDifference("outputs from the recording", difference, tolerance)
        notes.append(f"outputs from the recording: decoder logits on {MODEL_RECORDING} under teacher forcing "
                     f"({reference.tokens.shape[1]} tokens): largest difference {difference:.3g} (tolerance "
                     f"{tolerance:.3g})")  # fmt: skip
        notes.append(NOT_WRITTEN)
        measured = {MODEL_RECORDING: (difference, tolerance)}
        failed = inputs.diverged or outputs.diverged
        if not failed and not self.wants_stages:
            return Comparison(difference, tolerance, Divergence((inputs, outputs)), outputs=logits, notes=tuple(notes),
                              measured=measured)  # fmt: skip
        located = self.locate(model, reference)
        divergence = Divergence((inputs, *located.stages, outputs))
        cause = ""
        if inputs.diverged:
            cause = (f"the directory's feature extractor computes other features than openai-whisper's "
                     f"log_mel_spectrogram: largest difference {worst[0]:.3g} on {worst[1]} (tolerance "
                     f"{FEATURES_ATOL:g}); {divergence.summary()}")  # fmt: skip
        elif outputs.diverged:
            cause = (f"logits differ from openai-whisper's by {difference:.3g} on {MODEL_RECORDING} (tolerance "
                     f"{tolerance:.3g}); {divergence.summary()}")  # fmt: skip
        return Comparison(difference, tolerance, divergence, cause, outputs=logits, notes=tuple(notes),
                          measured=measured)  # fmt: skip

    def locate(self, model: Any, reference: Reference) -> Divergence:
        """Both models on openai-whisper's features of the model recording, stage by stage (the source read anew),
        each in float32 a block at a time, in turn, meeting at each stage: neither is copied whole."""
        from converters.whisper import original as openai
        from converters.whisper.stages import whisper_stages

        source = self.read()
        original = openai.load_original(source.tensors, source.payload.dims)
        features, tokens = reference.features[MODEL_RECORDING], reference.tokens
        with openai.in_float32(original), in_float32(model):
            return locate_side_by_side(whisper_stages(original, model), lambda: original(features, tokens),
                                       lambda: model(input_features=features, decoder_input_ids=tokens),
                                       atol=STAGE_ATOL, rtol=STAGE_RTOL)  # fmt: skip

    # -- golden records -----------------------------------------------------------------------------------------------

    def recorded(self, model: nn.Module, extractor: Any) -> Recorded:
        """What the extractor makes of every built-in recording; the logits on the model recording, under teacher
        forcing on the comparison's tokens."""
        from converters.whisper.original import prompt

        dims = dims_of(model)
        inputs = {r.name: extractor(r.waveform(), sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
                  for r in RECORDINGS}  # fmt: skip
        logits = model(input_features=inputs[MODEL_RECORDING], decoder_input_ids=prompt(dims)).logits
        return Recorded({r.name: described(r) for r in RECORDINGS}, inputs, {MODEL_RECORDING: logits})

    def taps(self, model: nn.Module) -> list[tuple[str, Tap]]:
        from converters.whisper.stages import converted_taps

        return converted_taps(model)


def in_float32(model: Any) -> contextlib.AbstractContextManager[Any]:
    """transformers' model computing in float32 (the original's CPU dtype) without a float32 copy: its layers widened
    in turn."""
    layers = [*model.model.encoder.layers, *model.model.decoder.layers]
    return widened_in_turn(model, layers, torch.float32)


def dims_of(model: Any) -> Dims:
    """The dims a written model's config stands for (a gate reads no checkpoint)."""
    config = model.config
    return Dims(config.num_mel_bins, config.max_source_positions, config.d_model, config.encoder_attention_heads,
                config.encoder_layers, config.vocab_size, config.max_target_positions, config.d_model,
                config.decoder_attention_heads, config.decoder_layers)  # fmt: skip
