"""The S3PRL conversion core: a runner checkpoint's head onto a transformers base model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PretrainedConfig, Wav2Vec2FeatureExtractor

from converters.errors import ConversionError, first_line
from converters.hub_layout import assign_serialized, serialized_state
from converters.mapping import KeyMapping, shape_mismatch
from converters.s3prl.checkpoint import S3PRLCheckpoint
from converters.s3prl.families import Family, Head, resolve
from converters.s3prl.mapping import UNREPRESENTABLE, head_mapping
from converters.s3prl.original import XVECTOR_DILATIONS, XVECTOR_KERNELS
from converters.safe_load import check_weights, weights_dtype

# Fields of the classifier config that must equal the base model's, or the base weights do not fit it.
BASE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim")


@dataclass(frozen=True)
class Target:
    family: Family
    head: Head
    config: PretrainedConfig

    @property
    def model_class(self) -> Any:
        return getattr(transformers, self.family.model_class(self.head))

    @property
    def mapping(self) -> KeyMapping:
        return head_mapping(self.head, bool(self.config.use_weighted_layer_sum))


def read_config(path: Path) -> Target:
    """The classifier config; its ``architectures[0]`` picks the family and the head."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConversionError(f"config {path} cannot be read as JSON: {error}") from None
    architectures = raw.get("architectures") or []
    if not architectures:
        raise ConversionError(f"config {path} names no architectures; set architectures[0], e.g. Wav2Vec2ForXVector")
    family, head = resolve(architectures[0])
    config = getattr(transformers, family.config_class).from_pretrained(path)
    return Target(family, head, config)


def base_attribute(model: Any) -> str:
    """The attribute holding the base model. Not ``base_model_prefix``: transformers 4.x gives SEW-D's as
    ``sew-d`` while the attribute (and every serialized key) is ``sew_d``."""
    return next(name for name, child in model.named_children() if isinstance(child, transformers.PreTrainedModel))


def head_spec(target: Target) -> dict[str, torch.Tensor]:
    """The head's serialized keys and shapes for this config (meta tensors; the base model left out)."""
    with torch.device("meta"):
        model = target.model_class(target.config)
    prefix = base_attribute(model) + "."
    return {k: v for k, v in serialized_state(model).items() if not k.startswith(prefix)}


def check_representable(checkpoint: S3PRLCheckpoint, target: Target) -> None:
    """Refuse what transformers' head cannot compute the way s3prl did, naming the cause."""
    args, config, where = checkpoint.args, target.config, checkpoint.path
    if "Upstream" in checkpoint.entries:
        raise ConversionError(
            f"{where} holds a fine-tuned 'Upstream': its base model differs from the one given, and converting "
            f"s3prl upstream weights is not supported"
        )
    if args.get("upstream_feature_normalize"):
        raise ConversionError(
            f"{where} was trained with upstream_feature_normalize=True (each hidden state layer-normed before the "
            f"weighted sum); transformers has no such step"
        )
    selection = args.get("upstream_feature_selection", "hidden_states")
    if selection not in ("hidden_states", "last_hidden_state"):
        raise ConversionError(
            f"{where} was trained on upstream feature {selection!r}; transformers' heads read hidden states"
        )
    for key in checkpoint.flattened():
        for rule in UNREPRESENTABLE:
            if rule.matches(key):
                raise ConversionError(f"{where}: {key} cannot be converted: {rule.reason}")
    weights = checkpoint.featurizer.get("weights")
    layers = config.num_hidden_layers + 1
    if config.use_weighted_layer_sum:
        if weights is None:
            raise ConversionError(
                f"the config sets use_weighted_layer_sum, but {where} has no Featurizer.weights (it was trained on "
                f"one layer, upstream_layer_selection={args.get('upstream_layer_selection')})"
            )
        if tuple(weights.shape) != (layers,):
            raise ConversionError(
                f"Featurizer.weights in {where} has shape {tuple(weights.shape)}, but a weighted sum over "
                f"num_hidden_layers + 1 = {layers} hidden states needs ({layers},)"
            )
    else:
        if weights is not None:
            raise ConversionError(
                f"Featurizer.weights in {where} (a weighted sum over {weights.numel()} hidden states) would be left "
                f"unused: set use_weighted_layer_sum in the config"
            )
        chosen = args.get("upstream_layer_selection")
        if chosen is not None and chosen not in (config.num_hidden_layers, -1):
            raise ConversionError(
                f"{where} was trained on hidden state {chosen}; without a weighted sum transformers reads the last "
                f"one ({config.num_hidden_layers})"
            )
    if target.head is Head.XVECTOR and (
        tuple(config.tdnn_kernel) != XVECTOR_KERNELS or tuple(config.tdnn_dilation) != XVECTOR_DILATIONS
    ):
        raise ConversionError(
            f"the config has tdnn_kernel {list(config.tdnn_kernel)} and tdnn_dilation {list(config.tdnn_dilation)}; "
            f"s3prl's XVector uses {list(XVECTOR_KERNELS)} and {list(XVECTOR_DILATIONS)}"
        )


def check_shapes(tensors: dict[str, torch.Tensor], spec: dict[str, torch.Tensor], where: str) -> None:
    mismatch = shape_mismatch(tensors, spec)
    if mismatch:
        key, found, expected = mismatch
        raise ConversionError(f"{key} in {where} has shape {found}, but the config needs {expected}")


def convert_head(checkpoint: S3PRLCheckpoint, target: Target) -> dict[str, torch.Tensor]:
    """Map and shape-check the head; every Downstream and Featurizer key must be used exactly once."""
    check_representable(checkpoint, target)
    source = checkpoint.flattened()
    tensors = target.mapping.apply(source, where=str(checkpoint.path))
    weights = target.mapping.converted_sources(source)
    check_weights(weights, str(checkpoint.path))
    dtype = weights_dtype(weights, str(checkpoint.path))
    if torch.finfo(dtype).bits > 32:
        # The head joins a float32 base model; float16 and bfloat16 widen exactly, float64 would be rounded.
        raise ConversionError(f"{checkpoint.path}: the head's weights are {dtype}, which float32 cannot hold exactly")
    spec = head_spec(target)
    # A head parameter the rules do not know (a new transformers release) is named here, not left random.
    expected = target.mapping.inverse().apply(spec, where=f"transformers' {target.model_class.__name__} head")
    check_shapes(source, expected, str(checkpoint.path))
    missing = sorted(spec.keys() - tensors.keys())
    if missing:
        raise ConversionError(f"{checkpoint.path} provides no weights for {', '.join(missing)}")
    return tensors


def resolve_base(name: str) -> Path:
    """A local transformers model directory; a hub name is looked up in the local cache only."""
    path = Path(name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not a directory and not cached: the same answer for every reason
        raise ConversionError(
            f"base model {name!r} is neither a local directory nor in the local Hugging Face cache"
        ) from None


def check_base_config(base: Path, target: Target) -> None:
    try:
        base_config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConversionError(f"base model {base} has no readable config.json: {error}") from None
    for name in BASE_FIELDS:
        ours = getattr(target.config, name, None)
        theirs = base_config.get(name, ours)
        if (list(ours) if isinstance(ours, list | tuple) else ours) != theirs:
            raise ConversionError(f"the config's {name} is {ours}, but base model {base} has {theirs}")


def _mismatch(entry: Any, model: Any) -> str:
    """One of from_pretrained's mismatched keys: (name, found, expected) in transformers 5, a name in 4.x."""
    if isinstance(entry, tuple):
        key, found, expected = entry
        return f"{key} has shape {tuple(found)}, but the config needs {tuple(expected)}"
    return f"{entry} has a shape other than the config's {tuple(model.state_dict()[entry].shape)}"


def build_model(base: Path, target: Target, head: dict[str, torch.Tensor]) -> Any:
    """The head class loaded from the base model with the classifier config, then the converted head."""
    check_base_config(base, target)
    # The head is missing from the base model by design, and checked below: keep transformers' load
    # report (which calls it "newly initialized") out of the user's way.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        # ignore_mismatched_sizes: report a wrong-shaped base weight by name here, not as transformers'
        # "set ignore_mismatched_sizes" advice
        loaded: Any = target.model_class.from_pretrained(
            base, config=target.config, output_loading_info=True, ignore_mismatched_sizes=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    model, info = loaded
    if info["mismatched_keys"]:
        first = min(info["mismatched_keys"], key=str)
        raise ConversionError(f"base model {base} does not fit the config: {_mismatch(first, model)}")
    # The head is what the base model lacks; anything else it lacks is refused. (In-memory and serialized
    # names agree for every family here, on transformers 4 and 5.)
    base_missing = sorted(set(info["missing_keys"]) - head.keys())
    if base_missing:
        raise ConversionError(f"base model {base} lacks {', '.join(base_missing[:3])}")
    assign_serialized(model, head)
    return model.eval()


def feature_extractor(base: Path) -> Wav2Vec2FeatureExtractor:
    """As the original script built it: the base model's, with an attention mask and no normalisation."""
    try:
        return Wav2Vec2FeatureExtractor.from_pretrained(base, return_attention_mask=True, do_normalize=False)
    except OSError as error:
        raise ConversionError(f"base model {base} has no feature extractor config: {first_line(error)}") from None
