"""The classifier config derived from a runner checkpoint and its base model, and a given one checked against it.

Checkpoints are built from s3prl's own modules with ``Args`` and ``Config`` as s3prl's runner writes them
(converters/s3prl/example.py); the hand-written configs are what a user wrote for the seed script.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.errors import ConversionError
from converters.s3prl.checkpoint import read
from converters.s3prl.convert import target_for
from converters.s3prl.derive import BASE_FIELDS, TIE, derive, disagreements, read_labels
from converters.s3prl.example import (
    ALL_CASES,
    FINAL_NORM_CASES,
    TINY,
    S3PRLCase,
    Size,
    classifier_config,
    runner_checkpoint,
)
from converters.s3prl.families import FAMILIES, Head
from converters.s3prl.tasks import STATIC_CLASSES, TASK_HEADS, UTTERANCE_TASKS

WAV2VEC2 = FAMILIES[0]
HUBERT = next(family for family in FAMILIES if family.name == "Hubert")


def saved(path: Path, checkpoint: dict[str, Any]) -> Path:
    torch.save(checkpoint, path)
    return path


CASES = [
    *(pytest.param(family, head, False, id=family.model_class(head)) for family, head in ALL_CASES),
    *(pytest.param(family, head, True, id=f"{family.model_class(head)}-stable")
      for family, head, stable in FINAL_NORM_CASES if stable),
]  # fmt: skip


@pytest.mark.parametrize(("family", "head", "stable"), CASES)
def test_the_derived_config_is_the_hand_written_one_field_by_field(
    family: Any, head: Head, stable: bool, s3prl_case: Callable[..., S3PRLCase]
) -> None:
    """Every field of the config a user wrote for the seed script that changes what the model computes, derived
    from the checkpoint and base model alone; the one field more is the tie flag, where the encoder ends in
    a LayerNorm."""
    case = s3prl_case(family, head, stable=stable)
    derived = derive(read(case.checkpoint), case.base)
    written = classifier_config(family, head, TINY, stable=stable)
    compared = [f.name for f in derived.fields if f.name not in ("id2label", TIE)] + ["id2label", "label2id"]
    compared += [name for name in BASE_FIELDS if hasattr(written, name)]
    differing = {name: (getattr(derived.config, name), getattr(written, name)) for name in compared
                 if json.dumps(getattr(derived.config, name)) != json.dumps(getattr(written, name))}  # fmt: skip
    assert differing == {}
    assert getattr(derived.config, TIE, None) is (True if family.ends_in_layer_norm(written) else None)
    assert disagreements(derived, written, {}, case.base) == []


def test_each_derived_field_names_where_it_came_from(s3prl_case: Callable[..., S3PRLCase]) -> None:
    case = s3prl_case(WAV2VEC2, Head.XVECTOR, stable=True)
    derived = derive(read(case.checkpoint), case.base)
    sources = {field.name: (field.value, field.source) for field in derived.fields}
    tdnn = "model.framelevel_feature_extractor.module.{0..4}.kernel.weight"
    assert sources == {
        "architectures": (["Wav2Vec2ForXVector"], "Args.downstream 'sv_voxceleb1' -> xvector head; base model "
                                                  "model_type 'wav2vec2'"),
        "num_labels": (5, "Downstream.objective.W (5 columns)"),
        "xvector_output_dim": (16, "Downstream.model.utterancelevel_feature_extractor.linear1.weight (16 rows)"),
        "tdnn_dim": ([16, 16, 16, 16, 24], f"the output rows of Downstream.{tdnn}"),
        "tdnn_kernel": ([5, 3, 3, 1, 1], "s3prl's XVector (fixed)"),
        "tdnn_dilation": ([1, 2, 3, 1, 1], "s3prl's XVector (fixed)"),
        "use_weighted_layer_sum": (True, "Featurizer.weights (3 layer weights)"),
        "id2label": ([f"LABEL_{i}" for i in range(5)], "no names in the checkpoint (LABEL_i)"),
        TIE: (True, "the encoder ends in a LayerNorm (with do_stable_layer_norm) and the head weighs hidden states: "
                    "transformers 5 must return that norm's output as the last one"),
    }  # fmt: skip


def test_every_disagreement_of_a_given_config_is_named(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    config = json.loads(case.config.read_text())
    config.update(num_labels=7, id2label={str(i): f"LABEL_{i}" for i in range(7)}, classifier_proj_size=16,
                  hidden_act="relu", tie_last_hidden_states=True, architectures=["Wav2Vec2ForXVector"])  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConversionError) as refusal:
        target_for(read(case.checkpoint), case.base, path)
    assert str(refusal.value) == (
        f"config {path} disagrees with what the checkpoint and the base model imply: "
        "architectures[0] is 'Wav2Vec2ForXVector', but 'Wav2Vec2ForSequenceClassification' from Args.downstream "
        "'speech_commands' -> sequence head; base model model_type 'wav2vec2'; "
        "num_labels is 7, but 5 from Downstream.model.post_net.linear.weight (5 rows); "
        "classifier_proj_size is 16, but 8 from Downstream.projector.weight (8 rows); "
        f"hidden_act is 'relu', but base model {case.base} has 'gelu'; "
        "tie_last_hidden_states is True, but False: the head reads no hidden state that transformers 5 leaves unnormed"
    )


def test_a_given_config_is_used_as_written_with_the_tie_flag_added(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=True)
    config = json.loads(case.config.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate("abcde")}
    config["label2id"] = {name: i for i, name in enumerate("abcde")}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    target = target_for(read(case.checkpoint), case.base, path)
    assert target.config.id2label == dict(enumerate("abcde"))  # the user's names: the checkpoint has none
    assert getattr(target.config, TIE) is True


def with_args(case: S3PRLCase, tmp_path: Path, head: Head | None = None, size: Size = TINY, **args: Any) -> Path:
    checkpoint = runner_checkpoint(case.base, case.family, head or case.head, size, args=args)
    return saved(tmp_path / "states.ckpt", checkpoint)


def test_a_task_with_no_transformers_head_is_refused_naming_it(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    path = with_args(case, tmp_path, downstream="asr")
    with pytest.raises(ConversionError) as refusal:
        derive(read(path), case.base)
    assert str(refusal.value) == (
        f"{path} was trained for s3prl task 'asr' (Args.downstream), which has no transformers head; supported "
        f"tasks: {', '.join(TASK_HEADS)}"
    )


@pytest.mark.parametrize("head", list(Head), ids=lambda head: head.name)
def test_without_args_the_head_is_read_off_the_downstream_keys(
    head: Head, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, head)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, head, TINY)
    del checkpoint["Args"]
    derived = derive(read(saved(tmp_path / "states.ckpt", checkpoint)), case.base)
    assert derived.config.architectures == [WAV2VEC2.model_class(head)]
    assert derived.field("architectures").source.startswith("Downstream.")


def test_a_task_whose_keys_are_another_heads_is_refused(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    path = with_args(case, tmp_path, downstream="emotion")
    cause = "Args.downstream 'emotion' trains a sequence head, but its Downstream holds connector.weight, a xvector "
    cause += "head's"
    with pytest.raises(ConversionError, match=re.escape(cause)):
        derive(read(path), case.base)


def test_a_head_the_family_lacks_is_refused(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    hubert = s3prl_case(HUBERT, Head.SEQUENCE)
    xvector = s3prl_case(WAV2VEC2, Head.XVECTOR)
    with pytest.raises(ConversionError, match=r"^transformers has no HubertForXVector: Hubert has only "
                                              r"HubertForSequenceClassification"):  # fmt: skip
        derive(read(xvector.checkpoint), hubert.base)


@pytest.mark.parametrize(
    ("head", "change", "cause"),
    [
        (Head.SEQUENCE, {"UtteranceLevel": {"pooling": "AttentivePooling"}},
         "modelrc UtteranceLevel.pooling = 'AttentivePooling'; transformers' sequence head mean-pools"),
        (Head.SEQUENCE, {"select": "DeepModel"}, "modelrc select = 'DeepModel'"),
        (Head.XVECTOR, {"ObjectiveLoss": "AAMSoftmaxLoss"},
         "modelrc ObjectiveLoss = 'AAMSoftmaxLoss'; transformers' x-vector objective is AMSoftmaxLoss"),
        (Head.SEQUENCE, {"projector_dim": 256},
         "its Config declares modelrc projector_dim = 256, but Downstream.projector.weight has shape (8, 32)"),
    ],
    ids=["pooling", "select", "objective", "declared-size"],
)  # fmt: skip
def test_modelrc_settings_transformers_cannot_compute_are_refused(
    head: Head, change: dict[str, Any], cause: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, head)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, head, TINY)
    checkpoint["Config"]["downstream_expert"]["modelrc"].update(change)
    path = saved(tmp_path / "states.ckpt", checkpoint)
    with pytest.raises(ConversionError) as refusal:
        derive(read(path), case.base)
    assert cause in str(refusal.value) and str(path) in str(refusal.value)


TWELVE = Size("twelve", TINY.base, projector=8, tdnn=(16, 24), labels=12)


def test_speech_commands_heads_take_s3prls_class_list(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    path = with_args(case, tmp_path, size=TWELVE)
    derived = derive(read(path), case.base)
    assert derived.config.id2label == dict(enumerate(STATIC_CLASSES["speech_commands"]))
    assert derived.config.label2id == {label: i for i, label in enumerate(STATIC_CLASSES["speech_commands"])}


def test_a_labels_file_names_the_outputs(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    labels = tmp_path / "labels.txt"
    labels.write_text("neutral\nhappy\nangry\nsad\nother\n")
    derived = derive(read(with_args(case, tmp_path, downstream="emotion")), case.base, labels)
    assert derived.config.id2label == dict(enumerate(["neutral", "happy", "angry", "sad", "other"]))
    assert derived.field("id2label").source == f"--labels {labels}"


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("a\nb\nc\n", "has 3 labels, but the checkpoint's head has 5 outputs"),
        ("a\nb\n\nc\nd\ne\n", "line 3 is empty (one label per line)"),
        ("a\nb\nc\nb\ne\n", "line 4 repeats 'b' from line 2"),
    ],
    ids=["count", "empty", "repeated"],
)
def test_a_labels_file_that_does_not_fit_is_refused(
    text: str, cause: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    with pytest.raises(ConversionError, match=f"^labels file {labels}"):
        derive(read(with_args(case, tmp_path, downstream="emotion")), case.base, labels)
    with pytest.raises(ConversionError) as refusal:
        derive(read(with_args(case, tmp_path, downstream="emotion")), case.base, labels)
    assert cause in str(refusal.value)


def test_labels_in_another_order_than_s3prls_list_are_refused(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(sorted(STATIC_CLASSES["speech_commands"])))
    with pytest.raises(ConversionError, match="disagrees with s3prl's speech_commands class list"):
        derive(read(with_args(case, tmp_path, size=TWELVE)), case.base, labels)


def test_a_labels_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=f"^labels file {tmp_path / 'absent.txt'} cannot be read"):
        read_labels(tmp_path / "absent.txt")


def s3prl_source(module: str) -> str:
    """An s3prl module's source, read without importing it (its datasets import torchaudio)."""
    spec = importlib.util.find_spec("s3prl")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0], *module.split(".")).with_suffix(".py").read_text()


def test_the_static_class_list_is_s3prls() -> None:
    tree = ast.parse(s3prl_source("downstream.speech_commands.dataset"))
    (classes,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                  and [getattr(t, "id", None) for t in node.targets] == ["CLASSES"]]  # fmt: skip
    assert tuple(ast.literal_eval(classes)) == STATIC_CLASSES["speech_commands"]


@pytest.mark.parametrize("task", UTTERANCE_TASKS)
def test_each_utterance_task_builds_the_projector_and_model_cls_head(task: str) -> None:
    """Read as code, whatever its formatting (ESPnet's fork reformats s3prl's)."""
    source = ast.unparse(ast.parse(s3prl_source(f"downstream.{task}.expert")))
    assert "self.projector = nn.Linear(upstream_dim, self.modelrc['projector_dim'])" in source
    assert "self.model = model_cls(input_dim=self.modelrc['projector_dim'], output_dim=" in source


def test_no_featurizer_weights_where_args_ask_for_a_weighted_sum_is_a_missing_tensor(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """Not a one-layer head: s3prl's runner would not load it either."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    del checkpoint["Featurizer"]["weights"]
    path = saved(tmp_path / "states.ckpt", checkpoint)
    with pytest.raises(ConversionError, match=rf"^Featurizer.weights is missing in {re.escape(str(path))}: its Args"):
        derive(read(path), case.base)


def test_without_args_or_featurizer_weights_the_layer_is_the_given_configs(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, weighted=False)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY, weighted=False)
    del checkpoint["Args"]
    path = saved(tmp_path / "states.ckpt", checkpoint)
    with pytest.raises(ConversionError, match=r"has neither Featurizer\.weights nor Args: .* pass --config_path"):
        derive(read(path), case.base)
    assert target_for(read(path), case.base, case.config).config.use_weighted_layer_sum is False
