"""One AST conversion: the hooks the generic checks call (``converters.contract.Conversion``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.ast import convert as ast_convert
from converters.ast.config import backbone_of, feature_extractor, hf_config
from converters.ast.convert import target_spec, write_files
from converters.ast.variants import AUDIOSET_SAMPLE, Variant, variant
from converters.audio import probe_signal, read_audio
from converters.contract import Comparison, Conversion, Source, Target
from converters.errors import ConversionError
from converters.hub import cached_hub_file
from converters.mapping import KeyMapping
from converters.safe_load import as_state_dict, weights_dtype

LOGITS_ATOL = 1e-4  # transformers' AST integration test uses atol=1e-4 on the published slice
# What fixes the written model's function and its input features (the rest of config.json is bookkeeping).
CONFIG_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
    "qkv_bias", "patch_size", "frequency_stride", "time_stride", "max_length", "num_mel_bins", "id2label",
)  # fmt: skip
EXTRACTOR_FIELDS = ("feature_size", "sampling_rate", "num_mel_bins", "max_length", "do_normalize", "mean", "std")
SAMPLE_REPO = "nielsr/audio-spectogram-transformer-checkpoint"


def dtype_tolerance(dtype: torch.dtype, scale: float) -> float:
    """What running in ``dtype`` costs: a few units of its rounding step at the logits' magnitude."""
    return max(LOGITS_ATOL, 4 * torch.finfo(dtype).eps * max(1.0, scale))


def resolve_sample(given: Path | None, chosen: Variant) -> Path | None:
    """The sample audio: as given, else the AudioSet sample if the local hub cache holds it."""
    if given is not None or chosen.sample_audio != AUDIOSET_SAMPLE:
        return given
    return cached_hub_file(SAMPLE_REPO, AUDIOSET_SAMPLE)


@dataclass(frozen=True)
class Reference:
    """The original model's logits on each input, computed while the checkpoint is held."""

    inputs: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]


def variants_fitting(state: Mapping[str, torch.Tensor]) -> list[Variant]:
    """The published variants whose patch grid and label count the checkpoint's shapes have."""
    from converters.ast.config import NUM_MEL_BINS, PATCH
    from converters.ast.variants import VARIANTS

    rows = state["module.v.pos_embed"].shape[1] if "module.v.pos_embed" in state else None
    labels = state["module.mlp_head.1.weight"].shape[0] if "module.mlp_head.1.weight" in state else None

    def grid(v: Variant) -> int:
        return ((NUM_MEL_BINS - PATCH) // v.stride + 1) * ((v.max_length - PATCH) // v.stride + 1) + 2

    return [v for v in VARIANTS if grid(v) == rows and v.dataset.num_labels == labels]


class ASTConversion(Conversion):
    chosen: Variant | None = None
    concurrent_reference = True  # the original's forward pass, while the files are written

    @property
    def variant(self) -> Variant:
        """The variant named by ``--model_name``, or the one the checkpoint's shapes fit (set by ``target``)."""
        if self.options.get("model_name") is not None:
            return variant(self.options["model_name"])
        if self.chosen is None:
            raise RuntimeError("the variant is read off the checkpoint: ask for the target first")
        return self.chosen

    def variant_of(self, source: Source) -> Variant:
        if self.options.get("model_name") is not None:
            return self.variant
        fitting = variants_fitting(source.tensors)
        if len(fitting) != 1:
            rows = tuple(source.tensors["module.v.pos_embed"].shape) if "module.v.pos_embed" in source.tensors else None
            found = f"module.v.pos_embed has shape {rows}" if rows else "it has no module.v.pos_embed"
            which = ", ".join(v.name for v in fitting) if fitting else "no published variant"
            raise ConversionError(f"{self.where} fits {which} ({found}); name the variant with --model_name")
        self.chosen = fitting[0]
        return self.chosen

    @cached_property
    def sample_audio(self) -> Path | None:
        return resolve_sample(self.options.get("sample_audio"), self.variant)

    def read(self) -> Source:
        return Source(as_state_dict(self.loader.load(self.source_path), self.where))

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        return ast_convert.AST_MAPPING  # looked up on the module: a test may replace it with a broken one

    def target(self, source: Source) -> Target:
        v = self.variant_of(source)
        weights = ast_convert.AST_MAPPING.converted_sources(source.tensors)
        config = hf_config(v, backbone_of(source.tensors), weights_dtype(weights, self.where))
        needs = f"{v.name} (stride {v.stride}, max_length {v.max_length}, {v.dataset.num_labels} labels)"
        return Target("transformers:ASTForAudioClassification", config, lambda: target_spec(config), needs)

    def write(
        self, source: Source, target: Target, tensors: dict[str, torch.Tensor], directory: Path
    ) -> dict[str, torch.Tensor]:
        write_files(target.config, tensors, self.variant, directory)
        return tensors

    def function_fields(self, target: Target) -> dict[str, dict[str, Any]]:
        extractor = feature_extractor(self.variant).to_dict()
        return {
            "config.json": {name: getattr(target.config, name) for name in CONFIG_FIELDS},
            "preprocessor_config.json": {name: extractor[name] for name in EXTRACTOR_FIELDS},
        }

    def inputs(self) -> dict[str, torch.Tensor]:
        """Spectrograms both models see: a structured probe signal, and the sample if given.

        The probe fills the model's whole input (``max_length`` frames of 10 ms), so that every position and
        every patch sees structure; a second, noise input would double the check's cost (each AST forward is
        most of a conversion's time) without reaching a weight the probe does not.
        """
        extractor = feature_extractor(self.variant)
        seconds = (self.variant.max_length + 2) / 100  # 10 ms hop, 25 ms window
        probe = extractor(probe_signal(seconds), sampling_rate=16000, return_tensors="pt").input_values
        features = {"probe signal": probe}
        if self.sample_audio is not None:
            waveform = read_audio(self.sample_audio)
            features["sample audio"] = extractor(waveform, sampling_rate=16000, return_tensors="pt").input_values
        return features

    @torch.no_grad()
    def reference(self, source: Source, target: Target) -> Reference:
        from converters.ast.original import load_original  # timm: imported by the checks that need it

        inputs = self.inputs()
        original = load_original(source.tensors, self.variant)  # holds the checkpoint's own tensors
        return Reference(inputs, {name: original(features) for name, features in inputs.items()})

    @torch.no_grad()
    def compare(self, model: nn.Module, reference: Reference, target: Target) -> Comparison:
        """The written model's logits in float32 (the checkpoint's own values, without reduced-precision noise)
        on every input; past the tolerance, the original is rebuilt and both run stage by stage."""
        float32: Any = model if model.dtype == torch.float32 else copy.deepcopy(model).float()  # type: ignore[operator]
        logits = {name: float32(input_values=features).logits for name, features in reference.inputs.items()}
        differences = {name: (logits[name] - reference.logits[name]).abs().nan_to_num(nan=math.inf) for name in logits}
        worst = max(((name, difference.max().item()) for name, difference in differences.items()), key=lambda i: i[1])
        if worst[1] <= LOGITS_ATOL and not self.wants_stages:
            return Comparison(worst[1], LOGITS_ATOL, None, outputs=logits)
        from converters.ast.original import load_original
        from converters.ast.stages import locate_divergence

        original = load_original(self.read().tensors, self.variant)
        divergence = locate_divergence(original, float32, reference.inputs[worst[0]], LOGITS_ATOL)
        cause = (
            ""
            if worst[1] <= LOGITS_ATOL
            else (
                f"logits differ from the original implementation by {worst[1]:.3g} on the {worst[0]} "
                f"(tolerance {LOGITS_ATOL:g}); {divergence.summary()}"
            )
        )
        return Comparison(worst[1], LOGITS_ATOL, divergence, cause, outputs=logits)
