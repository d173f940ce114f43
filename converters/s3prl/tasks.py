"""What s3prl's downstream experts are, as data: which task trains which head, and what its settings may be.

Read from s3prl 0.4.18's experts (``s3prl/downstream/<task>/expert.py``, the same in ESPnet's fork).
Nothing here imports s3prl: the conversion core reads checkpoints without it. The tests compare these
tables with s3prl's own modules and sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from converters.s3prl.families import Head

# The experts that put ``projector`` (nn.Linear(upstream_dim, projector_dim)) before ``model_cls(input_dim=
# projector_dim, output_dim=classes, **modelrc[select])``: transformers' sequence head, when model_cls is
# UtteranceLevel with mean pooling. fluent_commands' outputs are its slots' values side by side.
UTTERANCE_TASKS = ("speech_commands", "voxceleb1", "emotion", "fluent_commands")
TASK_HEADS: dict[str, Head] = {
    **dict.fromkeys(UTTERANCE_TASKS, Head.SEQUENCE),
    "diarization": Head.FRAME,
    "sv_voxceleb1": Head.XVECTOR,
}

# A Downstream key that only its head's expert has: what a checkpoint without ``Args.downstream`` was.
HEAD_MARKERS: dict[Head, str] = {
    Head.SEQUENCE: "projector.weight",
    Head.FRAME: "model.linear.weight",
    Head.XVECTOR: "connector.weight",
}

# Class lists s3prl fixes in its source, in training-index order (speech_commands/dataset.py CLASSES);
# every other task builds its list from the dataset it was trained on.
STATIC_CLASSES: dict[str, tuple[str, ...]] = {
    "speech_commands": (
        "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_",
    ),
}  # fmt: skip

# sv_voxceleb1's XVector: five TDNNs whose (context, dilation) shorten a sequence by 4 + 4 + 6 frames.
XVECTOR_KERNELS = (5, 3, 3, 1, 1)
XVECTOR_DILATIONS = (1, 2, 3, 1, 1)
XVECTOR_SHORTENING = 14


@dataclass(frozen=True)
class Setting:
    """A ``modelrc`` value the expert reads, and the values transformers' head can compute."""

    path: tuple[str, ...]  # into Config["downstream_expert"]["modelrc"]; "{select}" is modelrc["select"]
    default: Any  # what the expert uses when the path is absent
    accepted: tuple[Any, ...]
    reason: str

    def parts(self, modelrc: Mapping[str, Any]) -> list[str]:
        return [str(modelrc.get("select")) if part == "{select}" else part for part in self.path]

    def value(self, modelrc: Mapping[str, Any]) -> Any:
        node: Any = modelrc
        for part in self.parts(modelrc):
            if not isinstance(node, Mapping) or part not in node:
                return self.default
            node = node[part]
        return node

    def name(self, modelrc: Mapping[str, Any]) -> str:
        return ".".join(self.parts(modelrc))


SETTINGS: dict[Head, tuple[Setting, ...]] = {
    Head.SEQUENCE: (
        Setting(("select",), None, ("UtteranceLevel",), "transformers' sequence head is UtteranceLevel's layout"),
        Setting(("{select}", "pooling"), "MeanPooling", ("MeanPooling",), "transformers' sequence head mean-pools"),
        Setting(("{select}", "pre_net"), None, (None,), "transformers' sequence head has no pre_net"),
    ),
    Head.FRAME: (Setting(("rnn_layers",), None, (0,), "transformers' frame head is one linear layer, without an RNN"),),
    Head.XVECTOR: (
        Setting(("module",), None, ("XVector",), "transformers' x-vector head is s3prl's XVector"),
        Setting(("agg_module",), None, ("SP",), "transformers pools with mean and standard deviation (SP)"),
        Setting(("utter_module",), None, ("UtteranceExtractor",), "transformers' x-vector head ends in two linears"),
        Setting(("module_config", "XVector", "batch_norm"), False, (False,), "transformers' TDNNs have no batch norm"),
        Setting(("ObjectiveLoss",), None, ("AMSoftmaxLoss",), "transformers' x-vector objective is AMSoftmaxLoss"),
    ),
}

# Sizes a runner's Config declares, and the Downstream tensor dimension that must agree with each.
DECLARED_SIZES: dict[Head, tuple[tuple[tuple[str, ...], str, int], ...]] = {
    Head.SEQUENCE: ((("projector_dim",), "projector.weight", 0),),
    Head.FRAME: (),
    Head.XVECTOR: (
        (("input_dim",), "connector.weight", 0),
        (("module_config", "XVector", "agg_dim"), "model.framelevel_feature_extractor.module.4.kernel.weight", 0),
    ),
}


def modelrc_of(config: object) -> dict[str, Any]:
    """``Config["downstream_expert"]["modelrc"]`` of a runner checkpoint, or empty where it is absent."""
    if not isinstance(config, Mapping):
        return {}
    expert = config.get("downstream_expert")
    modelrc = expert.get("modelrc") if isinstance(expert, Mapping) else None
    return dict(modelrc) if isinstance(modelrc, Mapping) else {}
