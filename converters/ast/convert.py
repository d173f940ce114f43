"""The AST conversion core: original state dict in, transformers config and hub-layout tensors out."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import ASTConfig

from converters.ast.config import Backbone, backbone_of, feature_extractor, hf_config
from converters.ast.mapping import AST_MAPPING
from converters.ast.variants import Variant
from converters.errors import ConversionError
from converters.hub_layout import serialized_state
from converters.mapping import shape_mismatch
from converters.output import write_safetensors
from converters.safe_load import check_weights, weights_dtype


@dataclass(frozen=True)
class Converted:
    variant: Variant
    backbone: Backbone
    config: ASTConfig
    tensors: dict[str, torch.Tensor]


def target_spec(config: ASTConfig) -> dict[str, torch.Tensor]:
    """The serialized key set and shapes transformers expects for ``config`` (meta tensors, no memory)."""
    return dict(_target_spec(config.to_json_string()))


@functools.lru_cache(maxsize=8)
def _target_spec(config_json: str) -> dict[str, torch.Tensor]:
    # Building the model, even on the meta device, and reverting transformers 5's renames takes ~0.4 s;
    # a conversion's checks ask for the same spec several times.
    from transformers import ASTForAudioClassification  # the model's code: 1.5 s to import, for the checks alone

    with torch.device("meta"):
        model = ASTForAudioClassification(ASTConfig.from_dict(json.loads(config_json)))
    return serialized_state(model)


def source_spec(config: ASTConfig) -> dict[str, torch.Tensor]:
    """What an original checkpoint must hold for ``config``: the target spec mapped back (meta tensors)."""
    return AST_MAPPING.inverse().apply(target_spec(config), where="the target spec")


def check_shapes(tensors: Mapping[str, torch.Tensor], spec: Mapping[str, torch.Tensor], variant: Variant) -> None:
    """Every tensor has the shape ``spec`` gives it; the first that does not is named."""
    mismatch = shape_mismatch(tensors, spec)
    if mismatch:
        key, found, expected = mismatch
        raise ConversionError(
            f"{key} has shape {found}, but {variant.name} (stride {variant.stride}, max_length "
            f"{variant.max_length}, {variant.dataset.num_labels} labels) needs {expected}"
        )


def convert(state: Mapping[str, torch.Tensor], variant: Variant, where: str = "the checkpoint") -> Converted:
    """Map an original AST state dict onto transformers' layout, refusing anything that does not fit."""
    check_weights(state, where)
    backbone = backbone_of(state)
    config = hf_config(variant, backbone, weights_dtype(state, where))
    tensors = AST_MAPPING.apply(state, where=where)
    check_shapes(state, source_spec(config), variant)
    check_shapes(tensors, target_spec(config), variant)
    return Converted(variant, backbone, config, tensors)


def write_files(config: ASTConfig, tensors: Mapping[str, torch.Tensor], variant: Variant, directory: Path) -> None:
    """Write config.json, model.safetensors and preprocessor_config.json into an existing directory."""
    config.save_pretrained(directory)
    write_safetensors(tensors, directory / "model.safetensors")
    feature_extractor(variant).save_pretrained(directory)


def write(converted: Converted, directory: Path) -> None:
    write_files(converted.config, converted.tensors, converted.variant, directory)
