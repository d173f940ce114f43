"""One S3PRL conversion: the hooks the generic checks call (``converters.contract.Conversion``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.contract import Comparison, Conversion, Source, Target
from converters.golden import Recorded, described
from converters.hub_layout import taken_state
from converters.locator import Tap
from converters.mapping import KeyMapping
from converters.s3prl import convert as s3prl_convert
from converters.s3prl.checkpoint import S3PRLCheckpoint, read
from converters.s3prl.convert import base_attribute, build_model, expected_sources, target_for
from converters.s3prl.derive import BASE_FIELDS, HEAD_FIELDS, TIE, generic
from converters.s3prl.families import Head, resolve
from converters.s3prl.preprocessing import PADDED, S3PRL_RECORDINGS, feature_extractor


@dataclass(frozen=True)
class Plan:
    """What the target's payload holds: the classifier's family, head and config, and the base model."""

    head: s3prl_convert.Target
    base: Path


class S3PRLConversion(Conversion):
    @cached_property
    def base(self) -> Path:
        return s3prl_convert.resolve_base(self.options["base_model_name"])

    def read(self) -> Source:
        checkpoint = read(self.source_path, self.loader)
        return Source(checkpoint.flattened(), checkpoint)

    def target(self, source: Source) -> Target:
        head = target_for(source.payload, self.base, self.options.get("config_path"), self.options.get("labels"),
                          self.options.get("normalize_waveform"))  # fmt: skip
        spec = s3prl_convert.model_spec(head)
        return Target(head.model_class, head.config, spec, "the config", Plan(head, self.base))

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        return target.payload.head.mapping

    def expected_source(self, source: Source, target: Target) -> dict[str, torch.Tensor]:
        return expected_sources(target.payload.head)

    def write(
        self, source: Source, target: Target, tensors: dict[str, torch.Tensor], directory: Path
    ) -> dict[str, torch.Tensor]:
        """The head class loaded from the base model with the classifier config, the converted head set."""
        model = build_model(self.base, target.payload.head, tensors)
        model.save_pretrained(directory)
        feature_extractor(target.payload.head.extractor).save_pretrained(directory)
        return taken_state(model)  # the base model's file unmapped once the digests are taken

    def written(self, source: Source, target: Target, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The whole model: the base model's weights and the converted head."""
        return taken_state(build_model(self.base, target.payload.head, tensors))

    def function_fields(self, target: Target) -> dict[str, dict[str, Any]]:
        head = target.payload.head
        names = ["architectures", "num_labels", "use_weighted_layer_sum", TIE, *HEAD_FIELDS[head.head]]
        names += [name for name in BASE_FIELDS if hasattr(head.config, name)]
        config = {name: getattr(head.config, name, None) for name in names}
        config[TIE] = bool(config[TIE])
        config["architectures"] = [head.family.model_class(head.head)]
        labels = [field for field in head.fields if field.name == "id2label"]
        if labels and not generic(dict(enumerate(labels[0].value))):  # names the checkpoint fixes
            config["id2label"] = dict(enumerate(labels[0].value))
        extractor = {field.name: field.value for field in head.extractor}
        return {"config.json": config, "preprocessor_config.json": extractor}

    def reference(self, source: Source, target: Target) -> S3PRLCheckpoint:
        return source.payload  # s3prl's modules are built from it, fed the written model's hidden states

    def compare(self, model: nn.Module, reference: S3PRLCheckpoint, target: Target) -> Comparison:
        """From the built-in recordings, the directory's feature extractor (loaded as a user loads it) and model
        against s3prl's pipeline (``converters.s3prl.stages.compare_with_s3prl``)."""
        from converters.audio import directory_extractor
        from converters.s3prl.stages import compare_with_s3prl

        found = compare_with_s3prl(model, reference, target.payload.head, directory_extractor(self.staging))
        divergence = found.divergence
        worst = divergence.worst()
        cause = "" if divergence.first is None else divergence.summary()
        if divergence.stages[0].diverged:
            cause = f"the directory's feature extractor hands the model other waveforms than s3prl does; {cause}"
        return Comparison(worst.difference, worst.tolerance, divergence, cause, notes=found.notes,
                          measured=found.measured)  # fmt: skip

    def recorded(self, model: nn.Module, extractor: Any) -> Recorded:
        """What the extractor makes of each recording and of the three as a padded batch, and the model's outputs
        on them: the logits, or an x-vector head's ReLU(embeddings), which s3prl scores trials with (no padded
        batch for it: s3prl's pooling differs on one by design)."""
        head = resolve(type(model).__name__)[1]
        batches = {r.name: [r.waveform()] for r in S3PRL_RECORDINGS}
        if head is not Head.XVECTOR:
            batches[PADDED] = [r.waveform() for r in S3PRL_RECORDINGS]
        inputs, outputs = {}, {}
        for name, batch in batches.items():
            given = extractor(batch, sampling_rate=16000, padding=True, return_tensors="pt")
            inputs[name] = given["input_values"]
            out = model(**given)
            outputs[name] = torch.relu(out.embeddings) if head is Head.XVECTOR else out.logits
            if head is Head.FRAME and given.get("attention_mask") is not None:  # padded frames: no one's output
                base: Any = getattr(model, base_attribute(model))
                lengths = base._get_feat_extract_output_lengths(given["attention_mask"].sum(-1))
                frames = torch.arange(outputs[name].shape[1])[None, :] < lengths[:, None]
                outputs[name] = outputs[name] * frames[..., None]
        return Recorded({r.name: described(r) for r in S3PRL_RECORDINGS}, inputs, outputs)

    def taps(self, model: nn.Module) -> list[tuple[str, Tap]]:
        """The base model's feature encoder and encoder layers, then the head's stages (the locator's, on the
        converted side), in forward order."""
        from converters.s3prl.taps import converted_head_taps

        base: Any = getattr(model, base_attribute(model))
        encoder = base.encoder
        layers = encoder.layers if hasattr(encoder, "layers") else encoder.encoder.layer  # SEW-D nests its layers
        taps = [("feature encoder", Tap(base.feature_extractor))]
        taps += [(f"encoder layer {n}", Tap(layer)) for n, layer in enumerate(layers)]
        return taps + converted_head_taps(model, resolve(type(model).__name__)[1])
