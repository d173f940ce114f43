"""The AST conversion core: original state dict in, transformers config and hub-layout tensors out."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import ASTConfig

from converters.ast.config import Backbone, as_spec, feature_extractor, hf_config
from converters.ast.layout import Layout, layout_of
from converters.ast.mapping import AST_MAPPING, ast_mapping
from converters.ast.spec import Spec
from converters.ast.variants import Variant
from converters.errors import ConversionError
from converters.hub_layout import serialized_state
from converters.mapping import KeyMapping, shape_mismatch
from converters.output import write_safetensors
from converters.safe_load import check_weights, weights_dtype


@dataclass(frozen=True)
class Converted:
    spec: Spec
    backbone: Backbone
    config: ASTConfig
    tensors: dict[str, torch.Tensor]


def mapping_for(layout: Layout) -> KeyMapping:
    """The rules for a checkpoint of this layout; the recipes' own (``module.``, a head) is looked up on this module,
    where a test may replace it with a broken one."""
    if layout.prefix == "module." and not layout.pretraining:
        return AST_MAPPING  # a module global, read when called
    return ast_mapping(layout.prefix, layout.pretraining)


def model_class(config: ASTConfig) -> str:
    """The class the written directory loads as: ``ASTModel`` for an encoder without a head."""
    return "ASTModel" if (config.architectures or [""])[0] == "ASTModel" else "ASTForAudioClassification"


def target_spec(config: ASTConfig) -> dict[str, torch.Tensor]:
    """The serialized key set and shapes transformers expects for ``config`` (meta tensors, no memory)."""
    return dict(_target_spec(config.to_json_string()))


@functools.lru_cache(maxsize=8)
def _target_spec(config_json: str) -> dict[str, torch.Tensor]:
    # Building the model, even on the meta device, and reverting transformers 5's renames takes ~0.4 s;
    # a conversion's checks ask for the same spec several times.
    import transformers  # the model's code: 1.5 s to import, for the checks alone

    config = ASTConfig.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = getattr(transformers, model_class(config))(config)
    return serialized_state(model)


def source_spec(config: ASTConfig, mapping: KeyMapping = AST_MAPPING) -> dict[str, torch.Tensor]:
    """What an original checkpoint must hold for ``config``: the target spec mapped back (meta tensors)."""
    return mapping.inverse().apply(target_spec(config), where="the target spec")


def check_shapes(tensors: Mapping[str, torch.Tensor], spec: Mapping[str, torch.Tensor], needs: str) -> None:
    """Every tensor has the shape ``spec`` gives it; the first that does not is named."""
    mismatch = shape_mismatch(tensors, spec)
    if mismatch:
        key, found, expected = mismatch
        raise ConversionError(f"{key} has shape {found}, but {needs} needs {expected}")


def needs(spec: Spec, name: str | None = None) -> str:
    """How a refusal names what the shapes must fit."""
    return f"{name} ({spec.described()})" if name else spec.described()


def convert(state: Mapping[str, torch.Tensor], spec: Spec | Variant, where: str = "the checkpoint") -> Converted:
    """Map an original AST state dict onto transformers' layout, refusing anything that does not fit."""
    name = spec.name if isinstance(spec, Variant) else None
    spec = as_spec(spec)
    layout = layout_of(state, where)
    mapping = mapping_for(layout)
    check_weights(mapping.converted_sources(state), where)
    config = hf_config(spec, layout.backbone, weights_dtype(mapping.converted_sources(state), where))
    tensors = mapping.apply(state, where=where)
    check_shapes(state, source_spec(config, mapping), needs(spec, name))
    check_shapes(tensors, target_spec(config), needs(spec, name))
    return Converted(spec, layout.backbone, config, tensors)


def write_files(config: ASTConfig, tensors: Mapping[str, torch.Tensor], spec: Spec | Variant, directory: Path) -> None:
    """Write config.json, model.safetensors and preprocessor_config.json into an existing directory."""
    config.save_pretrained(directory)
    write_safetensors(tensors, directory / "model.safetensors")
    feature_extractor(spec).save_pretrained(directory)


def write(converted: Converted, directory: Path) -> None:
    write_files(converted.config, converted.tensors, converted.spec, directory)
