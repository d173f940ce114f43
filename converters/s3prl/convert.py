"""The S3PRL conversion core: a runner checkpoint's head onto a transformers base model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PretrainedConfig

from converters.errors import ConversionError, first_line
from converters.hub import model_directory
from converters.hub_layout import assign_serialized, serialized_state
from converters.mapping import KeyMapping, shape_mismatch
from converters.s3prl.checkpoint import S3PRLCheckpoint
from converters.s3prl.derive import TIE, Field, apply, derive, disagreements, generic, read_json
from converters.s3prl.families import BY_MODEL_TYPE, Family, Head, resolve
from converters.s3prl.mapping import UNREPRESENTABLE, head_mapping
from converters.safe_load import check_weights, weights_dtype

BASE_SUFFIXES = ("Model", "ForPreTraining")  # a base model's architectures: facebook/wav2vec2-base has the second


@dataclass(frozen=True)
class Target:
    family: Family
    head: Head
    config: PretrainedConfig
    fields: tuple[Field, ...] = ()  # where each derived field came from (empty: a config taken as given)
    extractor: tuple[Field, ...] = ()  # the feature extractor's fields, where each came from

    @property
    def normalizes(self) -> bool:
        """Whether s3prl's upstream layer-normalized each waveform the head was trained on."""
        return any(field.name == "do_normalize" and field.value for field in self.extractor)

    @property
    def model_class(self) -> Any:
        return getattr(transformers, self.family.model_class(self.head))

    @property
    def mapping(self) -> KeyMapping:
        return head_mapping(self.head, bool(self.config.use_weighted_layer_sum))


def read_config(path: Path) -> Target:
    """A hand-written classifier config; its ``architectures[0]`` picks the family and the head."""
    raw = read_json(path, f"config {path}")
    architectures = raw.get("architectures") or []
    if raw.get("model_type") in BY_MODEL_TYPE and all(str(a).endswith(BASE_SUFFIXES) for a in architectures):
        shown = f" (architectures {architectures})" if architectures else ""
        raise ConversionError(
            f"config {path} is a base model's config{shown}, not a classifier's: leave --config_path out; the "
            f"classifier config is derived from the checkpoint and the base model"
        )
    if not architectures:
        raise ConversionError(f"config {path} names no architectures; set architectures[0], e.g. Wav2Vec2ForXVector")
    family, head = resolve(architectures[0])
    try:
        config = getattr(transformers, family.config_class).from_pretrained(path)
    except (ValueError, TypeError) as error:  # transformers' own validation of the fields
        raise ConversionError(f"config {path} is not a valid {family.config_class}: {first_line(error)}") from None
    return Target(family, head, config)


def target_for(
    checkpoint: S3PRLCheckpoint, base: Path, config_path: Path | None = None, labels_path: Path | None = None,
    normalize_waveform: str | None = None,
) -> Target:  # fmt: skip
    """The classifier config the checkpoint implies on ``base``; a given config must agree with it in every
    field that changes what the model computes (each disagreement is named), and is then used as written,
    with the fields only the derivation knows (label names it lacks, the tie flag) filled in. The feature
    extractor follows from the upstream the head was trained on (``normalize_waveform``: yes or no decides)."""
    from converters.s3prl.preprocessing import extractor_fields, normalization

    derived = derive(checkpoint, base, labels_path, config_given=config_path is not None)
    normalize = normalization(checkpoint.args, derived.family, derived.config, str(base), normalize_waveform)
    extractor = extractor_fields(normalize)
    if config_path is None:
        return Target(derived.family, derived.head, derived.config, derived.fields, extractor)
    given = read_config(config_path)
    found = disagreements(derived, given.config, read_json(config_path, f"config {config_path}"), base)
    if found:
        raise ConversionError(
            f"config {config_path} disagrees with what the checkpoint and the base model imply: " + "; ".join(found)
        )
    labels = derived.field("id2label")
    if generic(given.config.id2label or {}) and not generic(dict(enumerate(labels.value))):
        apply(given.config, labels)
    apply(given.config, derived.field(TIE))
    return Target(given.family, given.head, given.config, derived.fields, extractor)


def base_attribute(model: Any) -> str:
    """The attribute holding the base model. Not ``base_model_prefix``: transformers 4.x gives SEW-D's as
    ``sew-d`` while the attribute (and every serialized key) is ``sew_d``."""
    return next(name for name, child in model.named_children() if isinstance(child, transformers.PreTrainedModel))


def model_spec(target: Target) -> dict[str, torch.Tensor]:
    """Every serialized key and shape of the classifier model for this config (meta tensors, no memory)."""
    with torch.device("meta"):
        return serialized_state(target.model_class(target.config))


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
    if weights is not None and tuple(weights.shape) != (layers,):
        raise ConversionError(
            f"Featurizer.weights in {where} has shape {tuple(weights.shape)}, but a weighted sum over "
            f"num_hidden_layers + 1 = {layers} hidden states needs ({layers},)"
        )
    chosen = args.get("upstream_layer_selection")
    if weights is None and chosen is not None and chosen not in (config.num_hidden_layers, -1):
        raise ConversionError(
            f"{where} was trained on hidden state {chosen}; without a weighted sum transformers reads the last "
            f"one ({config.num_hidden_layers})"
        )


def check_shapes(tensors: dict[str, torch.Tensor], spec: dict[str, torch.Tensor], where: str) -> None:
    mismatch = shape_mismatch(tensors, spec)
    if mismatch:
        key, found, expected = mismatch
        raise ConversionError(f"{key} in {where} has shape {found}, but the config needs {expected}")


def expected_sources(target: Target) -> dict[str, torch.Tensor]:
    """The checkpoint keys and shapes transformers' head needs for this config (meta tensors): its serialized
    head mapped back. A head parameter the rules do not know (a new transformers release) is named here,
    not left at its random initialization."""
    return target.mapping.inverse().apply(head_spec(target), where=f"transformers' {target.model_class.__name__} head")


def check_keys(
    checkpoint: S3PRLCheckpoint, target: Target, expected: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Every Downstream and Featurizer key is used by exactly one rule, and every key the head needs is there.

    Returns the converted head. The keys s3prl's own modules need are these and ``best_score`` (training
    bookkeeping); tests/test_s3prl_properties.py holds the two sets equal for any head sizes.
    """
    source = checkpoint.flattened()
    tensors = target.mapping.apply(source, where=str(checkpoint.path))
    missing = [key for key in (expected_sources(target) if expected is None else expected) if key not in source]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConversionError(f"missing key {missing[0]!r} in {checkpoint.path}{more}")
    return tensors


def convert_head(checkpoint: S3PRLCheckpoint, target: Target) -> dict[str, torch.Tensor]:
    """Map and check the head: representable, every key used exactly once, finite floats, shapes."""
    check_representable(checkpoint, target)
    expected = expected_sources(target)
    tensors = check_keys(checkpoint, target, expected)
    source = checkpoint.flattened()
    weights = target.mapping.converted_sources(source)
    check_weights(weights, str(checkpoint.path))
    dtype = weights_dtype(weights, str(checkpoint.path))
    if torch.finfo(dtype).bits > 32:
        # The head joins a float32 base model; float16 and bfloat16 widen exactly, float64 would be rounded.
        raise ConversionError(f"{checkpoint.path}: the head's weights are {dtype}, which float32 cannot hold exactly")
    check_shapes(source, expected, str(checkpoint.path))
    return tensors


def resolve_base(name: str) -> Path:
    """A local transformers model directory; a hub name is looked up in the local cache only."""
    return model_directory(name)


def _mismatch(entry: Any, model: Any) -> str:
    """One of from_pretrained's mismatched keys: (name, found, expected) in transformers 5, a name in 4.x."""
    if isinstance(entry, tuple):
        key, found, expected = entry
        return f"{key} has shape {tuple(found)}, but the config needs {tuple(expected)}"
    return f"{entry} has a shape other than the config's {tuple(model.state_dict()[entry].shape)}"


def build_model(base: Path, target: Target, head: dict[str, torch.Tensor]) -> Any:
    """The head class loaded from the base model with the classifier config, then the converted head."""
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
