"""One AST conversion: the hooks the generic checks call (``converters.contract.Conversion``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.ast import convert as ast_convert
from converters.ast.config import feature_extractor, hf_config
from converters.ast.convert import target_spec, write_files
from converters.ast.derive import Derived, derive
from converters.ast.features import original_fbank, original_features, transformers_fbank
from converters.ast.features import tolerance as features_tolerance
from converters.ast.layout import Layout, layout_of
from converters.ast.spec import Spec
from converters.ast.variants import AUDIOSET_SAMPLE, Variant, variant
from converters.audio import SAMPLING_RATE, directory_extractor, read_audio
from converters.contract import Comparison, Conversion, Source, Target
from converters.derivation import Field
from converters.errors import first_line
from converters.fetch import Fetcher, FetchFailure
from converters.golden import Recorded, described
from converters.locator import Divergence, StageDifference, Tap, largest_difference, widened_in_turn
from converters.mapping import KeyMapping
from converters.recordings import RECORDINGS, Recording, recordings
from converters.safe_load import as_state_dict, weights_dtype

LOGITS_ATOL = 1e-4  # transformers' AST integration test uses atol=1e-4 on the published slice
# What fixes the written model's function and its input features (the rest of config.json is bookkeeping).
CONFIG_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
    "qkv_bias", "patch_size", "frequency_stride", "time_stride", "max_length", "num_mel_bins",
)  # fmt: skip
EXTRACTOR_FIELDS = ("feature_size", "sampling_rate", "num_mel_bins", "max_length", "do_normalize", "mean", "std")
SAMPLE_REPO = "nielsr/audio-spectogram-transformer-checkpoint"
MODEL_RECORDING = "voice-loud-10.5s"  # the built-in recording both models run on
SAMPLE = "sample audio"  # the published slice's recording, or the user's


def dtype_tolerance(dtype: torch.dtype, scale: float) -> float:
    """What running in ``dtype`` costs: a few units of its rounding step at the logits' magnitude."""
    return max(LOGITS_ATOL, 4 * torch.finfo(dtype).eps * max(1.0, scale))


@dataclass(frozen=True)
class Sample:
    """The recording a published slice was measured on: its waveform and what it is, or why there is none."""

    waveform: np.ndarray | None
    what: str  # where it came from; without a waveform, why there is none


def published_sample(given: Path | None, chosen: Variant | None, fetcher: Fetcher) -> Sample:
    """The sample audio: as given; else, for a published model, the recording its slice was measured on, as the
    seed script fetched it: the AudioSet one from the hub (its cache first), Speech Commands' from the datasets
    library, where it is installed."""
    if given is not None:
        return Sample(read_audio(given), str(given))
    if chosen is None:
        return Sample(None, "not a published model: no published logits to hold it to")
    if chosen.sample_audio == AUDIOSET_SAMPLE:
        try:
            path = fetcher.hub_file(SAMPLE_REPO, AUDIOSET_SAMPLE, repo_type="dataset")
        except FetchFailure as failure:
            return Sample(None, f"no --sample_audio given, and {failure}")
        return Sample(read_audio(path), str(path))
    return speech_commands_sample()


def speech_commands_sample() -> Sample:
    """``speech_commands`` v0.02, validation item 0, through the datasets library (streamed: one item, not the
    split), as the seed script read it."""
    what = "speech_commands v0.02 validation[0]"
    try:
        import datasets
    except ImportError:
        return Sample(None, f"the slice was published for {what}: install datasets (pip install datasets) to fetch "
                            f"it, or give --sample_audio (that item as a 16 kHz WAV)")  # fmt: skip
    try:
        item = next(iter(datasets.load_dataset("speech_commands", "v0.02", split="validation", streaming=True)))
        audio = item["audio"]
    except Exception as error:  # offline, unreachable, refused: the datasets library's own errors
        return Sample(None, f"{what} could not be fetched through datasets: {first_line(error)}")
    if int(audio["sampling_rate"]) != SAMPLING_RATE:
        return Sample(None, f"{what} is sampled at {audio['sampling_rate']} Hz; the models expect {SAMPLING_RATE}")
    return Sample(np.asarray(audio["array"], dtype=np.float32), f"{what} (datasets)")


@dataclass(frozen=True)
class Reference:
    """The original pipeline's features of each recording both models run on, and the original model's logits on
    them, computed while the checkpoint is held."""

    inputs: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    sources: dict[str, str]  # where each input's features came from
    original: frozenset[str]  # the inputs whose features are the original pipeline's (else the converter's)


def layout_fields(layout: Layout) -> tuple[Field, ...]:
    """What the weights fix, as the report lists it."""
    backbone = layout.backbone
    key = layout.key
    fields = [
        Field("hidden_size", backbone.hidden_size, f"{key('v.cls_token')}'s width: {backbone.size}"),
        Field("num_hidden_layers", backbone.num_layers, f"the {key('v.blocks.N')} keys"),
        Field("num_attention_heads", backbone.num_heads, "the width / 64, as in every DeiT size"),
        Field("intermediate_size", backbone.intermediate_size, f"{key('v.blocks.0.mlp.fc1.weight')}'s rows"),
    ]
    if layout.pretraining:
        dropped = ", ".join(key(name) for name in ("cpredlayer", "gpredlayer", "mask_embed", "p_input_fdim"))
        fields.append(Field("architectures", ["ASTModel"], f"an SSAST pretraining checkpoint: no mlp_head; its encoder "
                            f"is converted, its pretext heads dropped ({dropped}, ...)"))  # fmt: skip
    return tuple(fields)


def outputs_of(model: Any, features: torch.Tensor) -> torch.Tensor:
    """What a model computes: the logits, or, for an encoder without a head, its last hidden state."""
    out = model(input_values=features)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


class ASTConversion(Conversion):
    concurrent_reference = True  # the original's forward pass, while the files are written
    _derived: Derived | None = None

    @property
    def derived(self) -> Derived:
        """What the options and the checkpoint's shapes fix (set by ``target``)."""
        if self._derived is None:
            raise RuntimeError("the spec is read off the checkpoint: ask for the target first")
        return self._derived

    @property
    def spec(self) -> Spec:
        return self.derived.spec

    @property
    def variant(self) -> Variant | None:
        """The published model named, or read off the checkpoint's shapes; None for any other checkpoint."""
        return self.derived.variant

    @cached_property
    def sample(self) -> Sample:
        return published_sample(self.options.get("sample_audio"), self.variant, self.fetcher)

    def read(self) -> Source:
        return Source(as_state_dict(self.loader.load(self.source_path), self.where))

    def layout(self, source: Source) -> Layout:
        return layout_of(source.tensors, self.where)

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        return ast_convert.mapping_for(target.payload)

    def target(self, source: Source) -> Target:
        layout = self.layout(source)
        self._derived = derive(layout, self.options, self.where)
        weights = ast_convert.mapping_for(layout).converted_sources(source.tensors)
        config = hf_config(self.spec, layout.backbone, weights_dtype(weights, self.where))
        needs = ast_convert.needs(self.spec, self.variant.name if self.variant is not None else None)
        model = f"transformers:{ast_convert.model_class(config)}"
        fields = (*self.derived.fields, *layout_fields(layout))
        return Target(model, config, lambda: target_spec(config), needs, layout, fields)

    def write(
        self, source: Source, target: Target, tensors: dict[str, torch.Tensor], directory: Path
    ) -> dict[str, torch.Tensor]:
        write_files(target.config, tensors, self.spec, directory)
        return tensors

    def function_fields(self, target: Target) -> dict[str, dict[str, Any]]:
        extractor = feature_extractor(self.spec).to_dict()
        head = () if target.payload.pretraining else ("id2label",)
        return {
            "config.json": {name: getattr(target.config, name) for name in (*CONFIG_FIELDS, *head)},
            "preprocessor_config.json": {name: extractor[name] for name in EXTRACTOR_FIELDS},
        }

    @cached_property
    def recordings(self) -> dict[str, tuple[np.ndarray, Recording | None]]:
        """The recordings both pipelines are fed, by name: the built-in loud one, as long as the longest input
        (cut: every position and patch sees structure), and the sample audio when given. Each AST forward pass
        is most of a conversion's time; the other built-in recordings are compared at the input only, where
        their lengths and levels matter (padding, cutting, the log of quiet frames)."""
        found: dict[str, tuple[np.ndarray, Recording | None]] = {
            recording.name: (recording.waveform(), recording) for recording in recordings(MODEL_RECORDING)
        }
        if self.sample.waveform is not None:
            found[SAMPLE] = (self.sample.waveform, None)
        return found

    def original_input(self, waveform: np.ndarray, recording: Recording | None) -> tuple[torch.Tensor | None, str]:
        """The original pipeline's features of a recording, and whence: ``(None, why)`` where its fbank cannot be
        computed here (torchaudio does not load, and it is not a built-in recording)."""
        spec = self.spec
        fbank, source = original_fbank(waveform, spec.num_mel_bins, recording)
        if fbank is None:
            return None, source
        return original_features(fbank, spec.max_length, spec.feature_mean, spec.feature_std), source

    @torch.no_grad()
    def reference(self, source: Source, target: Target) -> Reference:
        from converters.ast.original import load_original  # timm: imported by the checks that need it

        inputs, sources, originals = {}, {}, set()
        for name, (waveform, recording) in self.recordings.items():
            features, sources[name] = self.original_input(waveform, recording)
            if features is None:  # the model side alone: both models on the features the converter would write
                features = feature_extractor(self.spec)(waveform, sampling_rate=SAMPLING_RATE,
                                                        return_tensors="pt").input_values  # fmt: skip
                sources[name] = f"the converter's feature extractor ({sources[name]})"
            else:
                originals.add(name)
            inputs[name] = features
        original = load_original(source.tensors, self.spec)  # holds the checkpoint's own tensors
        logits = {name: original(features) for name, features in inputs.items()}
        return Reference(inputs, logits, sources, frozenset(originals))

    def input_stage(self, extractor: Any, reference: Reference) -> tuple[StageDifference, list[str]]:
        """The directory's features against the original's, on every built-in recording (and the sample audio
        where its original fbank could be computed): the locator's first stage, and a line per recording."""
        tolerance = features_tolerance(self.spec.num_mel_bins, self.spec.feature_std)
        compared: dict[str, tuple[np.ndarray, torch.Tensor, str]] = {}
        for builtin in RECORDINGS:
            if builtin.ast:
                features, source = self.original_input(builtin.waveform(), builtin)
                if features is not None:
                    compared[builtin.name] = (builtin.waveform(), features, builtin.level)
        for name, (waveform, recording) in self.recordings.items():
            if name not in compared and name in reference.original:
                compared[name] = (waveform, reference.inputs[name], recording.level if recording else "")
        _, source = self.original_input(*self.recordings[MODEL_RECORDING])
        lines = [f"features: transformers' ASTFeatureExtractor computed {transformers_fbank()}; the original's "
                 f"pipeline, kaldi fbank from {source}:"]  # fmt: skip
        worst = (-1.0, "")
        for name, (waveform, original, level) in compared.items():
            theirs = extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_values
            difference = largest_difference(original, theirs)
            shape = (
                "" if theirs.shape == original.shape else f" (shape {tuple(theirs.shape)}, not {tuple(original.shape)})"
            )
            lines.append(f"  {name} ({len(waveform) / SAMPLING_RATE:.3g} s{', ' + level if level else ''}): largest "
                         f"difference {difference:.3g}{shape} (tolerance {tolerance:.3g})")  # fmt: skip
            worst = max(worst, (difference, name), key=lambda item: item[0])
        if not compared:
            lines.append(f"  none: {source}")
        return StageDifference("input features", max(worst[0], 0.0), tolerance, f"largest on {worst[1]}"), lines

    def recorded(self, model: nn.Module, extractor: Any) -> Recorded:
        """What the extractor makes of every AST recording, and the model's outputs on those the comparison runs
        both models on: the built-in one, and the sample audio where the run has it (given, or a published
        model's, fetched)."""
        import hashlib

        chosen = [recording for recording in RECORDINGS if recording.ast]
        waveforms = {r.name: r.waveform() for r in chosen}
        digests = {r.name: described(r) for r in chosen}
        sample = self.sample if self._derived is not None else published_sample(
            self.options.get("sample_audio"), self.named_variant(), self.fetcher)  # fmt: skip
        if sample.waveform is not None:
            waveforms[SAMPLE] = sample.waveform
            digest = hashlib.sha256(np.asarray(sample.waveform, np.float32).tobytes()).hexdigest()
            digests[SAMPLE] = {"kind": sample.what, "seconds": len(sample.waveform) / SAMPLING_RATE, "sha256": digest}
        inputs = {name: extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_values
                  for name, waveform in waveforms.items()}  # fmt: skip
        outputs = {name: outputs_of(model, inputs[name]) for name in (MODEL_RECORDING, SAMPLE) if name in inputs}
        return Recorded(digests, inputs, outputs)

    def named_variant(self) -> Variant | None:
        """The published model ``--model_name`` names, where it names one (a gate reads no checkpoint's shapes)."""
        named = self.options.get("model_name")
        return variant(str(named)) if named is not None else None

    def taps(self, model: nn.Module) -> list[tuple[str, Tap]]:
        from converters.ast.stages import converted_taps

        return converted_taps(model)

    @torch.no_grad()
    def compare(self, model: nn.Module, reference: Reference, target: Target) -> Comparison:
        """From each recording, the directory's extractor (loaded as a user loads it) and the written model in float32
        (the checkpoint's own values, without reduced-precision noise) against the original's fbank pipeline and
        model. Past a tolerance, the locator names the stage: the input features first, then both models run on
        the original's features stage by stage in float64 (the model side alone)."""
        from converters.ast.stages import hf_layers

        extractor = directory_extractor(self.staging)
        inputs, notes = self.input_stage(extractor, reference)
        logits, differences = {}, {}
        # in float32 without a float32 copy of a narrower directory: a block widened at a time
        with widened_in_turn(model, list(hf_layers(model)), torch.float32):
            for name, (waveform, _) in self.recordings.items():
                features = extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_values
                if features.shape != reference.inputs[name].shape:  # the model cannot even take them
                    differences[name] = math.inf
                    continue
                logits[name] = outputs_of(model, features)
                differences[name] = (logits[name] - reference.logits[name]).abs().nan_to_num(nan=math.inf).max().item()
        worst = max(differences.items(), key=lambda item: item[1])
        notes.append(f"outputs from the recording: largest difference {worst[1]:.3g} on {worst[0]} (tolerance "
                     f"{LOGITS_ATOL:g}); the original's input from {reference.sources[worst[0]]}")  # fmt: skip
        recording = StageDifference("outputs from the recording", worst[1], LOGITS_ATOL)
        failed = inputs.diverged or recording.diverged
        measured = {name: (difference, LOGITS_ATOL) for name, difference in differences.items()}
        if not failed and not self.wants_stages:
            passed = Divergence((inputs, recording))
            return Comparison(worst[1], LOGITS_ATOL, passed, outputs=logits, notes=tuple(notes), measured=measured)
        from converters.ast.original import load_original
        from converters.ast.stages import locate_divergence

        original = load_original(self.read().tensors, self.spec)
        located = locate_divergence(original, model, reference.inputs[worst[0]], LOGITS_ATOL)
        divergence = Divergence((inputs, *located.stages, recording))
        cause = ""
        if inputs.diverged:
            cause = (f"the directory's feature extractor computes other features than the original's pipeline: "
                     f"largest difference {inputs.difference:.3g} on {inputs.note.removeprefix('largest on ')} "
                     f"(tolerance {inputs.tolerance:.3g}); {divergence.summary()}")  # fmt: skip
        elif failed:
            cause = (f"logits differ from the original implementation by {worst[1]:.3g} on {worst[0]} "
                     f"(tolerance {LOGITS_ATOL:g}); {divergence.summary()}")  # fmt: skip
        return Comparison(worst[1], LOGITS_ATOL, divergence, cause, outputs=logits, notes=tuple(notes),
                          measured=measured)  # fmt: skip
