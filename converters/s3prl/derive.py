"""The classifier config a runner checkpoint implies, each field with where it came from.

Everything transformers' head needs is in the checkpoint and the base model: ``Args.downstream`` names the
task and so the head, ``Config["downstream_expert"]["modelrc"]`` the head's settings, the Downstream
tensors' shapes its sizes, ``Featurizer.weights`` whether it weighs every hidden state, and the base
model's config.json the family and the encoder. A hand-written config, where one is given, is checked
against the same derivation, field by field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers
from transformers import PretrainedConfig

from converters.derivation import Field
from converters.errors import ConversionError, first_line
from converters.s3prl.checkpoint import S3PRLCheckpoint
from converters.s3prl.families import Family, Head, family_of
from converters.s3prl.tasks import (
    DECLARED_SIZES,
    HEAD_MARKERS,
    SETTINGS,
    STATIC_CLASSES,
    TASK_HEADS,
    XVECTOR_DILATIONS,
    XVECTOR_KERNELS,
    modelrc_of,
)

# Fields of the base model's config that fix what its encoder computes: a classifier config must agree.
BASE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
    "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "position_embeddings_type", "num_buckets",
    "max_bucket_distance", "squeeze_factor", "add_adapter",
)  # fmt: skip
# Head fields that change what the head computes, besides architectures, num_labels and the layer sum.
HEAD_FIELDS = {
    Head.SEQUENCE: ("classifier_proj_size",),
    Head.FRAME: (),
    Head.XVECTOR: ("tdnn_dim", "tdnn_kernel", "tdnn_dilation", "xvector_output_dim"),
}
TIE = "tie_last_hidden_states"


@dataclass(frozen=True)
class Derived:
    family: Family
    head: Head
    config: PretrainedConfig
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def _plain(value: Any) -> Any:
    """Config values as config.json holds them: sequences as lists."""
    return list(value) if isinstance(value, list | tuple) else value


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConversionError(f"{what} cannot be read as JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"{what} holds a JSON {type(raw).__name__}, expected an object")
    return raw


def base_config(base: Path) -> tuple[Family, PretrainedConfig]:
    """The base model's family (from ``model_type``) and its config, as its family's config class reads it."""
    try:
        raw = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConversionError(f"base model {base} has no readable config.json: {error}") from None
    family = family_of(raw.get("model_type"), f"base model {base}")
    try:
        return family, getattr(transformers, family.config_class).from_dict(raw)
    except (ValueError, TypeError) as error:  # transformers' own validation of the fields
        raise ConversionError(f"base model {base} has an invalid config.json: {first_line(error)}") from None


def head_of(checkpoint: S3PRLCheckpoint) -> tuple[Head, Field]:
    """The head: from ``Args.downstream``, else from the keys only one head's expert has."""
    task = checkpoint.args.get("downstream")
    marked = [head for head, key in HEAD_MARKERS.items() if key in checkpoint.downstream]
    if task is None:
        if len(marked) != 1:
            raise ConversionError(
                f"{checkpoint.path} names no task (Args.downstream) and its Downstream keys fit "
                f"{'no' if not marked else 'more than one'} head; pass --config_path"
            )
        head = marked[0]
        return head, Field("head", head.name.lower(), f"Downstream.{HEAD_MARKERS[head]} (no Args.downstream)")
    if task not in TASK_HEADS:
        raise ConversionError(
            f"{checkpoint.path} was trained for s3prl task {task!r} (Args.downstream), which has no transformers "
            f"head; supported tasks: {', '.join(TASK_HEADS)}"
        )
    head = TASK_HEADS[task]
    if marked and marked != [head]:
        raise ConversionError(
            f"{checkpoint.path}: Args.downstream {task!r} trains a {head.name.lower()} head, but its Downstream "
            f"holds {HEAD_MARKERS[marked[0]]}, a {marked[0].name.lower()} head's"
        )
    return head, Field("head", head.name.lower(), f"Args.downstream {task!r}")


def check_settings(checkpoint: S3PRLCheckpoint, head: Head) -> None:
    """Refuse modelrc settings transformers' head cannot compute, and declared sizes the tensors contradict."""
    modelrc = modelrc_of(checkpoint.config)
    if not modelrc:  # a checkpoint trimmed to its weights: its keys and shapes decide alone
        return
    for setting in SETTINGS[head]:
        value = setting.value(modelrc)
        if value not in setting.accepted:
            raise ConversionError(
                f"{checkpoint.path} was trained with modelrc {setting.name(modelrc)} = {value!r}; {setting.reason}"
            )
    for path, key, dim in DECLARED_SIZES[head]:
        node: Any = modelrc
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        tensor = checkpoint.downstream.get(key)
        if node is not None and tensor is not None and tensor.dim() > dim and tensor.shape[dim] != node:
            raise ConversionError(
                f"{checkpoint.path} is inconsistent: its Config declares modelrc {'.'.join(path)} = {node!r}, but "
                f"Downstream.{key} has shape {tuple(tensor.shape)}"
            )


def _size(checkpoint: S3PRLCheckpoint, key: str, dim: int, field: str) -> tuple[int, str]:
    tensor = checkpoint.downstream.get(key)
    if tensor is None or tensor.dim() <= dim:
        found = "is missing" if tensor is None else f"has shape {tuple(tensor.shape)}"
        raise ConversionError(f"Downstream.{key} {found} in {checkpoint.path}; {field} is read from it")
    what = ("rows", "columns")[dim] if dim < 2 else f"entries along dimension {dim}"
    return int(tensor.shape[dim]), f"Downstream.{key} ({tensor.shape[dim]} {what})"


def head_fields(checkpoint: S3PRLCheckpoint, head: Head) -> list[Field]:
    """The head's sizes, each read from the shape of the one tensor that fixes it."""
    read = [("num_labels", {Head.SEQUENCE: ("model.post_net.linear.weight", 0), Head.FRAME: ("model.linear.weight", 0),
                            Head.XVECTOR: ("objective.W", 1)}[head])]  # fmt: skip
    if head is Head.SEQUENCE:
        read.append(("classifier_proj_size", ("projector.weight", 0)))
    if head is Head.XVECTOR:
        read.append(("xvector_output_dim", ("model.utterancelevel_feature_extractor.linear1.weight", 0)))
    fields = [Field(name, *_size(checkpoint, key, dim, name)) for name, (key, dim) in read]
    if head is Head.XVECTOR:
        layers = [
            _size(checkpoint, f"model.framelevel_feature_extractor.module.{n}.kernel.weight", 0, "tdnn_dim")
            for n in range(len(XVECTOR_KERNELS))
        ]
        fields += [
            Field("tdnn_dim", [width for width, _ in layers], "the output rows of Downstream.model."
                  "framelevel_feature_extractor.module.{0..4}.kernel.weight"),
            Field("tdnn_kernel", list(XVECTOR_KERNELS), "s3prl's XVector (fixed)"),
            Field("tdnn_dilation", list(XVECTOR_DILATIONS), "s3prl's XVector (fixed)"),
        ]  # fmt: skip
    return fields


def read_labels(path: Path) -> list[str]:
    """One label per line; empty lines and repeated labels are refused by line number."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"labels file {path} cannot be read: {error}") from None
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        label = line.strip()
        if not label:
            raise ConversionError(f"labels file {path}: line {number} is empty (one label per line)")
        if label in seen:
            raise ConversionError(f"labels file {path}: line {number} repeats {label!r} from line {seen[label]}")
        seen[label] = number
    return [line.strip() for line in lines]


def labels_in_order(id2label: Mapping[Any, str]) -> list[str]:
    """A config's label names by output index (config.json writes the indices as strings)."""
    return [label for _, label in sorted(id2label.items(), key=lambda item: int(item[0]))]


def generic(id2label: Mapping[Any, str]) -> bool:
    """transformers' placeholder names, LABEL_0 ... : no names given."""
    return all(label == f"LABEL_{index}" for index, label in enumerate(labels_in_order(id2label)))


def label_field(checkpoint: S3PRLCheckpoint, num_labels: int, labels: Sequence[str] | None,
                labels_path: Path | None) -> Field:  # fmt: skip
    task = checkpoint.args.get("downstream")
    static = STATIC_CLASSES.get(str(task))
    if labels is not None:
        if len(labels) != num_labels:
            raise ConversionError(
                f"labels file {labels_path} has {len(labels)} labels, but the checkpoint's head has {num_labels} "
                f"outputs"
            )
        if static is not None and len(static) == num_labels and list(static) != list(labels):
            raise ConversionError(
                f"labels file {labels_path} disagrees with s3prl's {task} class list {list(static)}, which fixes "
                f"the order the head was trained in"
            )
        return Field("id2label", list(labels), f"--labels {labels_path}")
    if static is not None and len(static) == num_labels:
        return Field("id2label", list(static), f"s3prl's {task} class list, in training order")
    return Field("id2label", [f"LABEL_{i}" for i in range(num_labels)], "no names in the checkpoint (LABEL_i)")


def layer_sum(checkpoint: S3PRLCheckpoint, config_given: bool) -> Field:
    """A weighted sum where the Featurizer saved weights; else the one layer the runner was told to read.

    No weights where ``Args`` ask for a weighted sum is a checkpoint missing a tensor, not a one-layer head;
    no weights and no ``Args`` leave the layer unknown, unless a given config says.
    """
    weights = checkpoint.featurizer.get("weights")
    if weights is not None:
        return Field("use_weighted_layer_sum", True, f"Featurizer.weights ({weights.numel()} layer weights)")
    layer = checkpoint.args.get("upstream_layer_selection")
    if layer is not None:
        return Field("use_weighted_layer_sum", False, f"no Featurizer.weights (Args.upstream_layer_selection {layer})")
    if checkpoint.args.get("upstream_feature_selection") == "last_hidden_state":
        return Field("use_weighted_layer_sum", False,
                     "no Featurizer.weights (Args.upstream_feature_selection 'last_hidden_state')")  # fmt: skip
    if checkpoint.args:
        raise ConversionError(
            f"Featurizer.weights is missing in {checkpoint.path}: its Args train a weighted sum over every hidden "
            f"state (upstream_layer_selection None)"
        )
    if config_given:
        return Field("use_weighted_layer_sum", False, "no Featurizer.weights and no Args: one layer, as the config")
    raise ConversionError(
        f"{checkpoint.path} has neither Featurizer.weights nor Args: the hidden state its head was trained on is "
        f"unknown; pass --config_path (use_weighted_layer_sum false: the last layer)"
    )


def derive(
    checkpoint: S3PRLCheckpoint, base: Path, labels_path: Path | None = None, config_given: bool = False
) -> Derived:
    """The classifier config for ``checkpoint`` on the base model in ``base`` (``config_given``: a hand-written
    config will be checked against it, and decides what the checkpoint leaves open)."""
    family, config = base_config(base)
    head, head_source = head_of(checkpoint)
    if head not in family.heads:
        raise ConversionError(
            f"transformers has no {family.model_class(head)}: {family.name} has only "
            + ", ".join(family.model_class(h) for h in family.heads)
            + f" (the head is the {head_source.source}'s; the family is base model {base}'s model_type)"
        )
    check_settings(checkpoint, head)
    fields = [
        Field("architectures", [family.model_class(head)],
              f"{head_source.source} -> {head.name.lower()} head; base model model_type {config.model_type!r}"),
        *head_fields(checkpoint, head),
    ]  # fmt: skip
    fields.append(layer_sum(checkpoint, config_given))
    weighted = bool(fields[-1].value)
    num_labels = next(f.value for f in fields if f.name == "num_labels")
    labels = read_labels(labels_path) if labels_path is not None else None
    fields.append(label_field(checkpoint, num_labels, labels, labels_path))
    tie = weighted and family.ends_in_layer_norm(config)
    fields.append(
        Field(TIE, tie, f"the encoder ends in a LayerNorm ({family.final_norm.value}) and the head weighs hidden "
              f"states: transformers 5 must return that norm's output as the last one" if tie else
              "the head reads no hidden state that transformers 5 leaves unnormed")
    )  # fmt: skip
    for f in fields:
        apply(config, f)
    return Derived(family, head, config, tuple(fields))


def apply(config: PretrainedConfig, field: Field) -> None:
    if field.name == "head":
        return
    if field.name == "id2label":
        config.id2label = dict(enumerate(field.value))
        config.label2id = {label: index for index, label in enumerate(field.value)}
    elif field.name == TIE:
        if field.value:
            setattr(config, TIE, True)
    else:
        setattr(config, field.name, field.value)


def disagreements(derived: Derived, given: PretrainedConfig, given_raw: Mapping[str, Any], base: Path) -> list[str]:
    """Every function-changing field in which a hand-written config differs from the derived one, with both."""
    found = []
    ours = given.architectures[0] if given.architectures else None
    arch = derived.field("architectures")
    if ours != arch.value[0]:
        found.append(f"architectures[0] is {ours!r}, but {arch.value[0]!r} from {arch.source}")
    names = ("num_labels", "use_weighted_layer_sum", *HEAD_FIELDS[derived.head])
    for name in names:
        field = derived.field(name)
        value = _plain(getattr(given, name, None))
        if value != _plain(field.value):
            found.append(f"{name} is {value!r}, but {_plain(field.value)!r} from {field.source}")
    for name in BASE_FIELDS:
        if not hasattr(derived.config, name):
            continue
        value, base_value = _plain(getattr(given, name, None)), _plain(getattr(derived.config, name))
        if value != base_value:
            found.append(f"{name} is {value!r}, but base model {base} has {base_value!r}")
    labels = derived.field("id2label")
    given_labels = labels_in_order(given.id2label or {})
    named = not generic(dict(enumerate(labels.value))) and not generic(given.id2label or {})
    if named and given_labels != labels.value:
        found.append(f"id2label is {given_labels}, but {labels.value} from {labels.source}")
    tie = derived.field(TIE)
    if TIE in given_raw and bool(given_raw[TIE]) != tie.value:
        found.append(f"{TIE} is {given_raw[TIE]!r}, but {tie.value!r}: {tie.source}")
    return found
