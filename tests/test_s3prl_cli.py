"""``convert-s3prl-checkpoint`` end to end: a good conversion, and every refusal, through the command.

The command runs in this process (its ``main``, as the console script calls it), except for one
conversion through the installed console script with the hub cache given as users give it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from converters import cli
from converters.errors import ConversionError
from converters.s3prl import convert as s3prl_convert
from converters.s3prl.checkpoint import read
from converters.s3prl.convert import (
    check_representable,
    convert_head,
    read_config,
    resolve_base,
    target_for,
)
from converters.s3prl.converter import CONVERTER
from converters.s3prl.converter import validate as validate_up_front
from converters.s3prl.derive import base_config
from converters.s3prl.example import (
    ALL_CASES,
    STABLE_CASES,
    TINY,
    S3PRLCase,
    runner_checkpoint,
    write_classifier_config,
)
from converters.s3prl.families import FAMILIES, Head
from fixtures import commands
from fixtures.commands import OUTPUT_FILES, CodeCarrier, assert_refused, check_result

WAV2VEC2, WAVLM = FAMILIES[0], FAMILIES[1]


def arguments(case: S3PRLCase, output: Path, *, checkpoint: Path | None = None, config: Path | None = None,
              base: str | None = None) -> list[str]:  # fmt: skip
    """The command's arguments; ``--config_path`` only where a test gives one (else the config is derived)."""
    given = ["--config_path", str(config)] if config is not None else []
    return ["--base_model_name", base or str(case.base), *given, "--checkpoint_path",
            str(checkpoint or case.checkpoint), "--model_dump_path", str(output)]  # fmt: skip


def run(case: S3PRLCase, output: Path, *, checkpoint: Path | None = None, config: Path | None = None,
        base: str | None = None, hub_cache: Path | None = None) -> commands.Result:  # fmt: skip
    chosen = arguments(case, output, checkpoint=checkpoint, config=config, base=base)
    return commands.run("convert-s3prl-checkpoint", *chosen, hub_cache=hub_cache)


def refused(result: commands.Result, output: Path, *words: str) -> None:
    assert_refused(result, output, *words)
    assert not output.exists()


def saved(path: Path, checkpoint: dict[str, Any]) -> Path:
    torch.save(checkpoint, path)
    return path


def test_architectures_after_the_first_are_not_read(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.FRAME)
    config = json.loads(case.config.read_text())
    config["architectures"] = ["Wav2Vec2ForAudioFrameClassification", "Wav2Vec2ForCTC"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    output = tmp_path / "out"
    result = run(case, output, config=tmp_path / "config.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert json.loads((output / "config.json").read_text())["architectures"] == ["Wav2Vec2ForAudioFrameClassification"]


@pytest.mark.parametrize("given", [False, True], ids=["derived-config", "given-config"])
@pytest.mark.parametrize(("family", "head"), [(WAVLM, Head.XVECTOR), (WAV2VEC2, Head.SEQUENCE)])
def test_a_good_checkpoint_converts_with_a_passing_report(
    family: Any, head: Head, given: bool, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    case = s3prl_case(family, head)
    result = run(case, output, config=case.config if given else None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert {p.name for p in output.iterdir()} == OUTPUT_FILES["s3prl"]
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    extractor = json.loads((output / "preprocessor_config.json").read_text())
    assert extractor["return_attention_mask"] is True and extractor["do_normalize"] is False
    assert json.loads((output / "config.json").read_text())["architectures"] == [family.model_class(head)]


def without_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """As a checkpoint trimmed to its weights: no Config (nor Optimizer); its keys decide alone."""
    return {key: value for key, value in checkpoint.items() if key not in ("Config", "Optimizer")}


@pytest.mark.parametrize(("trimmed", "words"), [(False, ("modelrc rnn_layers = 1", "without an RNN")),
                                                (True, ("Downstream.model.rnn.", "rnn_layers: 0"))],
                         ids=["with-config", "keys-only"])  # fmt: skip
def test_a_diarization_head_with_rnn_layers_is_refused(
    trimmed: bool, words: tuple[str, ...], s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.FRAME)
    rnn = runner_checkpoint(case.base, WAV2VEC2, Head.FRAME, TINY, expert_options={"rnn_layers": 1, "hidden_size": 16})
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "rnn.ckpt", without_config(rnn) if trimmed else rnn))
    refused(result, output, *words)


@pytest.mark.parametrize(
    ("trimmed", "words"),
    [(False, ("batch_norm = True", "no batch norm")), (True, (".bn.", "batch norm"))],
    ids=["with-config", "keys-only"],
)
def test_tdnn_batch_norm_is_refused(
    trimmed: bool, words: tuple[str, ...], s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    bn = runner_checkpoint(case.base, WAV2VEC2, Head.XVECTOR, TINY, expert_options={"batch_norm": True})
    output = tmp_path / "out"
    refused(run(case, output, checkpoint=saved(tmp_path / "bn.ckpt", without_config(bn) if trimmed else bn)), output,
            *words)  # fmt: skip


@pytest.mark.parametrize(
    ("kernels", "dilations"), [((5, 3, 3, 1, 3), (1, 2, 3, 1, 1)), ((5, 3, 3, 1, 1), (1, 2, 2, 1, 1))], ids=str
)
def test_an_xvector_config_with_other_tdnn_layers_is_refused(
    kernels: tuple[int, ...], dilations: tuple[int, ...], s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """s3prl's XVector has fixed kernels and dilations; a config with any other would compute something else."""
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    config = changed_config(case, tmp_path, tdnn_kernel=list(kernels), tdnn_dilation=list(dilations))
    found = [f"{name} is {value}, but {fixed} from s3prl's XVector (fixed)" for name, value, fixed in
             (("tdnn_kernel", list(kernels), [5, 3, 3, 1, 1]), ("tdnn_dilation", list(dilations), [1, 2, 3, 1, 1]))
             if value != fixed]  # fmt: skip
    with pytest.raises(ConversionError) as refusal:
        target_for(read(case.checkpoint), case.base, config)
    assert str(refusal.value) == disagreement(config, *found)


def changed_config(case: S3PRLCase, tmp_path: Path, **changes: Any) -> Path:
    """The case's hand-written classifier config with ``changes``."""
    config = json.loads(case.config.read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def disagreement(config: Path, *found: str) -> str:
    return f"config {config} disagrees with what the checkpoint and the base model imply: " + "; ".join(found)


def test_tdnn_settings_do_not_matter_to_other_heads(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    config = changed_config(case, tmp_path, tdnn_kernel=[3, 3], tdnn_dilation=[2, 2])
    target_for(read(case.checkpoint), case.base, config)  # no refusal


def test_a_checkpoint_lacking_its_last_tdnn_layer_is_refused_naming_the_weights(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """The mapping takes any number of layers; s3prl's XVector's five are what must be there. The key-coverage
    check names the first missing key (with a config taken as given); deriving the config names the tensor
    tdnn_dim is read from."""
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.XVECTOR, TINY)
    checkpoint["Downstream"] = {k: v for k, v in checkpoint["Downstream"].items() if ".module.4." not in k}
    path = saved(tmp_path / "four.ckpt", checkpoint)
    with pytest.raises(ConversionError) as refusal:
        convert_head(read(path), read_config(case.config))
    key = "Downstream.model.framelevel_feature_extractor.module.4.kernel"
    assert str(refusal.value) == f"missing key '{key}.weight' in {path} (and 1 more)"
    output = tmp_path / "out"
    refused(run(case, output, checkpoint=path), output, f"{key}.weight is missing in {path}; tdnn_dim is read from it")


def test_a_head_parameter_no_rule_knows_is_named(
    s3prl_case: Callable[..., S3PRLCase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a transformers release add a parameter to a head, the conversion names it instead of leaving
    it at its random initialization."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    real_spec = s3prl_convert.head_spec
    added = {"projector.scale": torch.empty(1, device="meta")}
    monkeypatch.setattr(s3prl_convert, "head_spec", lambda target: {**real_spec(target), **added})
    with pytest.raises(ConversionError) as refusal:
        convert_head(read(case.checkpoint), read_config(case.config))
    assert str(refusal.value) == (
        "unexpected key 'projector.scale' in transformers' Wav2Vec2ForSequenceClassification head: "
        "no mapping rule consumes it"
    )


def test_upstream_feature_normalize_is_refused(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    normed = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY, args={"upstream_feature_normalize": True})
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "norm.ckpt", normed))
    refused(result, output, "upstream_feature_normalize=True")


@pytest.mark.parametrize("selection", ["hidden_states", "last_hidden_state", None], ids=str)
def test_hidden_state_features_are_representable(
    selection: str | None, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """s3prl's default feature (the key absent from Args) is ``hidden_states``."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(
        case.base, WAV2VEC2, Head.SEQUENCE, TINY, args={"upstream_feature_selection": selection}
    )
    if selection is None:
        del checkpoint["Args"].upstream_feature_selection
    check_representable(read(saved(tmp_path / "features.ckpt", checkpoint)), read_config(case.config))  # no refusal


def test_another_upstream_feature_is_refused_naming_it(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    logits = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY, args={"upstream_feature_selection": "logits"})
    path = saved(tmp_path / "logits.ckpt", logits)
    with pytest.raises(ConversionError) as refusal:
        check_representable(read(path), read_config(case.config))
    assert str(refusal.value) == (
        f"{path} was trained on upstream feature 'logits'; transformers' heads read hidden states"
    )
    output = tmp_path / "out"
    refused(run(case, output, checkpoint=path), output, "upstream feature 'logits'")


def test_a_weighted_sum_without_featurizer_weights_is_refused(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    one_layer = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY, weighted=False)
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "layer.ckpt", one_layer), config=case.config)
    layer = TINY.base["num_hidden_layers"]
    refused(result, output, "use_weighted_layer_sum is True, but False from no Featurizer.weights",
            f"Args.upstream_layer_selection {layer})")  # fmt: skip


def test_featurizer_weights_without_a_weighted_sum_are_refused(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    config = write_classifier_config(tmp_path / "config.json", WAV2VEC2, Head.SEQUENCE, TINY, weighted=False)
    output = tmp_path / "out"
    refused(run(case, output, config=config), output,
            "use_weighted_layer_sum is False, but True from Featurizer.weights (3 layer weights)")  # fmt: skip


def test_a_head_trained_on_the_last_hidden_state_converts_without_a_weighted_sum(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """``-l`` naming the last layer is what transformers reads when use_weighted_layer_sum is off."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    config = write_classifier_config(tmp_path / "config.json", WAV2VEC2, Head.SEQUENCE, TINY, weighted=False)
    last_layer = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY, weighted=False)
    for given in (config, None):  # the hand-written config, and the one derived from the checkpoint
        output = tmp_path / f"out-{given is None}"
        result = run(case, output, checkpoint=saved(tmp_path / "last.ckpt", last_layer), config=given)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
        assert json.loads((output / "config.json").read_text())["use_weighted_layer_sum"] is False


@pytest.mark.parametrize(("layer", "accepted"), [(-1, True), (None, True), (TINY.base["num_hidden_layers"], True),
                                                 (1, False), (0, False)])  # fmt: skip
def test_one_layer_heads_are_representable_only_on_the_last_layer(
    layer: int | None, accepted: bool, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    config = write_classifier_config(tmp_path / "config.json", WAV2VEC2, Head.SEQUENCE, TINY, weighted=False)
    checkpoint = runner_checkpoint(
        case.base, WAV2VEC2, Head.SEQUENCE, TINY, weighted=False, args={"upstream_layer_selection": layer}
    )
    path = saved(tmp_path / "layer.ckpt", checkpoint)
    if accepted:
        check_representable(read(path), read_config(config))  # no refusal
        return
    with pytest.raises(ConversionError) as refusal:
        check_representable(read(path), read_config(config))
    last = TINY.base["num_hidden_layers"]
    assert str(refusal.value) == (
        f"{path} was trained on hidden state {layer}; without a weighted sum transformers reads the last one ({last})"
    )


def test_layer_weights_of_the_wrong_length_are_refused(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    checkpoint["Featurizer"]["weights"] = torch.randn(TINY.base["num_hidden_layers"] + 2)
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "weights.ckpt", checkpoint))
    refused(result, output, "Featurizer.weights", "(4,)", "(3,)")


def test_an_unused_downstream_key_is_named(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    checkpoint["Downstream"]["model.post_net.extra.weight"] = torch.randn(3)
    path = saved(tmp_path / "extra.ckpt", checkpoint)
    output = tmp_path / "out"
    refused(
        run(case, output, checkpoint=path),
        output,
        "unexpected key",
        "Downstream.model.post_net.extra.weight",
        str(path),
    )
    cause = f"unexpected key 'Downstream.model.post_net.extra.weight' in {path}: no mapping rule consumes it"
    with pytest.raises(ConversionError, match=f"^{re.escape(cause)}$"):  # the library function says the same
        convert_head(read(path), read_config(case.config))


@pytest.mark.parametrize(("trimmed", "cause"), [
    (False, "its Config declares modelrc input_dim = 16, but Downstream.connector.weight has shape (32, 16)"),
    (True, "Downstream.connector.weight in {path} has shape (32, 16), but the config needs (16, 32)"),
], ids=["with-config", "keys-only"])  # fmt: skip
def test_a_head_weight_of_the_wrong_shape_is_named(
    trimmed: bool, cause: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.XVECTOR, TINY)
    checkpoint["Downstream"]["connector.weight"] = checkpoint["Downstream"]["connector.weight"].T.contiguous()
    output = tmp_path / "out"
    path = saved(tmp_path / "shape.ckpt", without_config(checkpoint) if trimmed else checkpoint)
    refused(run(case, output, checkpoint=path), output, cause.format(path=path))


def test_a_trained_upstream_is_refused(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    checkpoint["Upstream"] = {"model.encoder.weight": torch.randn(2)}
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "upstream.ckpt", checkpoint))
    refused(result, output, "'Upstream'")


def test_args_carrying_code_are_refused_without_running_it(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    checkpoint["Args"].upstream_ckpt = CodeCarrier(tmp_path / "code-ran")
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "hostile.ckpt", checkpoint))
    refused_line = assert_refused(result, output, "weights-only")
    assert not output.exists() and not (tmp_path / "code-ran").exists()
    # the refusal names what the allowlist lacks, not argparse.Namespace, which it maps to a stand-in
    assert re.search(r"it references posix\.system, which a weights-only load does not allow", refused_line), (
        refused_line
    )


@pytest.mark.parametrize("architecture", ["HubertForAudioFrameClassification", "Wav2Vec2ForCTC"])
def test_an_architecture_without_an_s3prl_head_is_refused(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path, architecture: str
) -> None:
    case = s3prl_case(WAV2VEC2, Head.FRAME)
    config = json.loads(case.config.read_text())
    config["architectures"] = [architecture]
    (tmp_path / "config.json").write_text(json.dumps(config))
    output = tmp_path / "out"
    result = run(case, output, config=tmp_path / "config.json")
    last = assert_refused(result, output, f"architectures[0] is {architecture!r}, which no s3prl downstream converts")
    supported = last.removesuffix("; nothing was written").split("; supported: ")[1].split(", ")
    assert supported == [family.model_class(head) for family, head in ALL_CASES]


def test_a_config_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"architectures": ["Wav2Vec2ForXVector"],')
    with pytest.raises(ConversionError) as refusal:
        read_config(config)
    assert str(refusal.value) == (
        f"config {config} cannot be read as JSON: Expecting property name enclosed in double quotes: line 1 column 42 "
        "(char 41)"
    )


def test_a_base_model_that_is_not_local_is_refused(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = run(s3prl_case(WAV2VEC2, Head.SEQUENCE), output, base="facebook/wav2vec2-base")
    refused(result, output, "facebook/wav2vec2-base", "local")


@pytest.mark.parametrize(
    "where", ["in-process", pytest.param("installed", marks=[pytest.mark.process, pytest.mark.interpreter])]
)
def test_a_hub_name_resolves_from_the_local_cache(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path, hub_cache: Callable[..., Path], where: str
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    for item in case.base.iterdir():
        cache = hub_cache("example/wav2vec2-tiny", item.name, item.read_bytes(), repo_type="model")
    output = tmp_path / "out"
    chosen = arguments(case, output, base="example/wav2vec2-tiny")
    result: commands.Result | subprocess.CompletedProcess[str]
    if where == "in-process":
        result = run(case, output, base="example/wav2vec2-tiny", hub_cache=cache)
    else:
        result = commands.run_process("convert-s3prl-checkpoint", *chosen, env={"HF_HUB_CACHE": str(cache)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert {p.name for p in output.iterdir()} == OUTPUT_FILES["s3prl"]


def infinite_bias(checkpoint: dict[str, Any]) -> None:
    checkpoint["Downstream"]["model.post_net.linear.bias"][2] = float("inf")


def double_precision(checkpoint: dict[str, Any]) -> None:
    for entry in ("Downstream", "Featurizer"):
        checkpoint[entry] = {key: tensor.double() for key, tensor in checkpoint[entry].items()}


def one_double(checkpoint: dict[str, Any]) -> None:
    checkpoint["Downstream"]["projector.weight"] = checkpoint["Downstream"]["projector.weight"].double()


def transposed_weight(checkpoint: dict[str, Any]) -> None:
    checkpoint["Downstream"]["projector.weight"] = checkpoint["Downstream"]["projector.weight"].T.contiguous()


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (infinite_bias, "{path}: Downstream.model.post_net.linear.bias holds 1 non-finite value (NaN or inf)"),
        (double_precision, "{path}: the head's weights are torch.float64, which float32 cannot hold exactly"),
        (one_double, "{path} mixes dtypes: Downstream.projector.weight is torch.float64, "
                     "Downstream.projector.bias is torch.float32; convert it to one first"),
        (transposed_weight, "Downstream.projector.weight in {path} has shape (32, 8), but the config needs (8, 32)"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)  # fmt: skip
def test_convert_head_refuses_naming_the_checkpoint(
    fault: Callable[[dict[str, Any]], None], cause: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """The library function refuses on its own, as the command's checks do, each cause naming the file."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    fault(checkpoint)
    path = saved(tmp_path / "faulty.ckpt", checkpoint)
    with pytest.raises(ConversionError) as refusal:
        convert_head(read(path), read_config(case.config))
    assert str(refusal.value) == cause.format(path=path)


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (infinite_bias, "{path}: Downstream.model.post_net.linear.bias holds 1 non-finite value"),
        (double_precision, "torch.float64, which float32 cannot hold exactly"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_a_faulty_head_is_refused_by_the_command_naming_the_cause(
    fault: Callable[[dict[str, Any]], None], cause: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY)
    fault(checkpoint)
    path = saved(tmp_path / "faulty.ckpt", checkpoint)
    output = tmp_path / "out"
    refused(run(case, output, checkpoint=path), output, cause.format(path=path))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_head_converts_exactly_widened(
    dtype: torch.dtype, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """A head saved in float16 or bfloat16 joins the float32 base model widened, which is exact: the written
    weights are the checkpoint's values, and s3prl's head holding the same values agrees at ATOL."""
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.XVECTOR, TINY)
    for part in ("Downstream", "Featurizer"):
        checkpoint[part] = {key: value.to(dtype) for key, value in checkpoint[part].items()}
    half = saved(tmp_path / "half.ckpt", checkpoint)
    output = tmp_path / "out"
    result = run(case, output, checkpoint=half)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    written = load_file(output / "model.safetensors")
    expected = convert_head(read(half), read_config(case.config))
    assert {t.dtype for t in expected.values()} == {dtype}
    for key, tensor in expected.items():
        assert written[key].dtype == torch.float32 and torch.equal(written[key], tensor.float()), key


def base_copy(case: S3PRLCase, tmp_path: Path, **changes: object) -> Path:
    """The case's base model directory, its config.json changed (a value of None removes the field)."""
    base = tmp_path / "base"
    shutil.copytree(case.base, base)
    config = json.loads((base / "config.json").read_text())
    config.update(changes)
    (base / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return base


def base_with_changed_weights(
    case: S3PRLCase, tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
) -> Path:
    """The case's base model with its weights replaced by ``change(weights)``."""
    base = base_copy(case, tmp_path)
    weights = load_file(base / "model.safetensors")
    save_file(change(weights), base / "model.safetensors", metadata={"format": "pt"})
    return base


def block_0_attention(weights: dict[str, torch.Tensor], pattern: str) -> list[str]:
    """The keys of block 0's attention weights whose names end in ``pattern`` (a regex), sorted."""
    return sorted(k for k in weights if re.search(rf"encoder\.layers\.0\.attention\.{pattern}$", k))


@pytest.mark.parametrize(("field", "value"), [("hidden_size", 48), ("num_hidden_layers", 3), ("conv_dim", [16, 16, 16]),
                                            ("do_stable_layer_norm", True)])  # fmt: skip
def test_a_base_model_of_another_kind_than_the_config_is_refused_naming_the_field(
    field: str, value: object, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    base = base_copy(case, tmp_path, **{field: value})
    ours = json.loads(case.config.read_text())[field]
    with pytest.raises(ConversionError) as refused:
        target_for(read(case.checkpoint), base, case.config)
    assert str(refused.value) == disagreement(case.config, f"{field} is {ours!r}, but base model {base} has {value!r}")


def test_a_field_the_base_config_leaves_out_is_its_config_class_default(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """transformers reads an absent field as its config class's default: so does the comparison."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    base = base_copy(case, tmp_path, hidden_size=None)
    with pytest.raises(ConversionError) as refused:
        target_for(read(case.checkpoint), base, case.config)
    assert str(refused.value) == disagreement(case.config, f"hidden_size is 32, but base model {base} has 768")


def test_a_field_held_as_a_tuple_equals_the_base_configs_list(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """Config classes default sequences to tuples; config.json holds lists. Equal values are equal."""
    from converters.s3prl.derive import derive, disagreements

    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    target = read_config(case.config)
    target.config.conv_dim = tuple(target.config.conv_dim)
    derived = derive(read(case.checkpoint), case.base)
    assert disagreements(derived, target.config, {}, case.base) == []


def test_a_base_model_without_a_readable_config_is_refused(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    base = base_copy(case, tmp_path)
    (base / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match=rf"^base model {re.escape(str(base))} has no readable config.json: "):
        base_config(base)
    output = tmp_path / "out"
    refused(run(case, output, base=str(base)), output, "has no readable config.json")


def test_a_base_weight_of_the_wrong_shape_is_refused_naming_it(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)

    def narrower(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        (key,) = block_0_attention(weights, r"k_proj\.weight")
        return {**weights, key: weights[key][:, :-1].contiguous()}

    base = base_with_changed_weights(case, tmp_path, narrower)
    output = tmp_path / "out"
    refused(run(case, output, base=str(base)), output, "does not fit the config", "k_proj.weight")


def test_a_base_model_lacking_a_weight_is_refused_naming_it(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    dropped = block_0_attention(load_file(case.base / "model.safetensors"), r"[a-z_]+\.bias")
    assert len(dropped) == 4
    base = base_with_changed_weights(
        case, tmp_path, lambda weights: {k: v for k, v in weights.items() if k not in dropped}
    )
    output = tmp_path / "out"
    result = run(case, output, base=str(base))
    named = ", ".join(f"wav2vec2.{key}" for key in dropped[:3])  # the first three, as the model names them
    refused(result, output, f"base model {base} lacks {named}; nothing was written")


def test_a_hub_name_is_looked_up_in_the_local_cache_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The converter never downloads: a hub name must already be in the cache."""
    import huggingface_hub

    asked: list[dict[str, object]] = []

    def snapshot_download(name: str, **options: object) -> str:
        asked.append({"name": name, **options})
        return "/cached/snapshot"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_base("example/not-a-directory") == Path("/cached/snapshot")
    assert asked == [{"name": "example/not-a-directory", "local_files_only": True}]


def test_overwrite_and_junit_xml_reach_the_conversion(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.FRAME)
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.bin").write_text("from an older conversion")
    report = tmp_path / "checks.xml"
    chosen = arguments(case, output)
    result = commands.run("convert-s3prl-checkpoint", *chosen, "--overwrite", "--junitxml", str(report))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in output.iterdir()} == OUTPUT_FILES["s3prl"]
    assert 'name="test_outputs_match_the_original_implementation"' in report.read_text()


def test_the_command_passes_its_arguments_on(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths arrive as Paths, the hub repository as given, and the up-front validation reads the config."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    passed: dict[str, Any] = {}
    monkeypatch.setattr(
        cli, "convert", lambda converter, options, argv: passed.update(options, converter=converter) or 0
    )
    bad_config = tmp_path / "bad.json"
    bad_config.write_text("{}")
    chosen = arguments(case, tmp_path / "out", config=bad_config)
    assert cli.run(CONVERTER, [*chosen, "--push_to_hub", "someone/s3prl-converted"]) == 0
    assert passed["converter"] is CONVERTER and passed["push_to_hub"] == "someone/s3prl-converted"
    assert passed["model_dump_path"] == tmp_path / "out"
    assert (passed["config_path"], passed["checkpoint_path"]) == (bad_config, case.checkpoint)  # Paths, not strings
    with pytest.raises(ConversionError, match="architectures"):
        validate_up_front(passed)


def test_a_checkpoint_without_best_score_converts(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    """best_score is training bookkeeping; checkpoints trimmed to their weights leave it out."""
    case = s3prl_case(WAV2VEC2, Head.XVECTOR)
    trimmed = runner_checkpoint(case.base, WAV2VEC2, Head.XVECTOR, TINY, best_score=False)
    assert "best_score" not in trimmed["Downstream"]
    output = tmp_path / "out"
    result = run(case, output, checkpoint=saved(tmp_path / "trimmed.ckpt", trimmed))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"


def test_a_key_s3prls_head_needs_is_named_by_the_key_coverage_check(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """Never discovered first inside the reference (s3prl's strict load_state_dict)."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    checkpoint = runner_checkpoint(case.base, WAV2VEC2, Head.SEQUENCE, TINY, best_score=False)
    del checkpoint["Downstream"]["projector.bias"]
    path = saved(tmp_path / "lacking.ckpt", checkpoint)
    output = tmp_path / "out"
    cause = f"missing key 'Downstream.projector.bias' in {path}"
    refused(run(case, output, checkpoint=path), output, f"check test_every_source_key_is_consumed failed: {cause}")


@pytest.mark.parametrize(
    "family", [family for family, head in STABLE_CASES if head is Head.SEQUENCE], ids=lambda family: family.name
)
def test_a_large_form_converts_with_the_tie_flag_written(
    family: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(family, Head.SEQUENCE, stable=True)
    output = tmp_path / "out"
    result = run(case, output)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_the_installed_transformers_can_represent_the_head") == "passed"
    written = json.loads((output / "config.json").read_text())
    assert written["tie_last_hidden_states"] is True and written["do_stable_layer_norm"] is True


def test_the_report_says_where_each_derived_field_came_from_and_which_reference_ran(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    result = run(case, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "classifier config: what the checkpoint and base model imply:" in lines
    assert "  num_labels = 5  <- Downstream.model.post_net.linear.weight (5 rows)" in lines
    assert "  classifier_proj_size = 8  <- Downstream.projector.weight (8 rows)" in lines
    # tox's s3prl-fork environment runs this suite against ESPnet's fork
    distribution = os.environ.get("EXPECTED_S3PRL_DISTRIBUTION", "s3prl")
    reference = [line for line in lines if line.startswith("reference: ")]
    assert reference == [f"reference: {distribution} {importlib.metadata.version(distribution)}"]


def test_a_labels_file_reaches_the_written_config(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(WAV2VEC2, Head.FRAME)
    labels = tmp_path / "speakers.txt"
    labels.write_text("".join(f"speaker {i}\n" for i in range(5)))
    output = tmp_path / "out"
    result = commands.run("convert-s3prl-checkpoint", *arguments(case, output), "--labels", str(labels))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((output / "config.json").read_text())["id2label"]["4"] == "speaker 4"


@pytest.fixture
def without_s3prl(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment where ``import s3prl`` fails, as where it was never installed."""
    for name in [name for name in sys.modules if name == "s3prl" or name.startswith("s3prl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "s3prl", None)  # type: ignore[arg-type]


@pytest.mark.usefixtures("without_s3prl")
def test_without_s3prl_the_help_works_and_a_conversion_says_how_to_install_it(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.run(CONVERTER, ["--help"])
    assert exit_.value.code == 0 and "--base_model_name" in capsys.readouterr().out
    output = tmp_path / "out"
    result = run(s3prl_case(WAV2VEC2, Head.SEQUENCE), output)
    last = assert_refused(result, output, "s3prl is not installed", "pip install --no-deps s3prl==0.4.18",
                          "espnet-s3prl", "torchaudio")  # fmt: skip
    assert all(line.startswith("    ") for line in result.stderr.strip().splitlines()[1:]), result.stderr  # one message
    assert "check " not in last  # refused before any check ran


def test_a_base_models_config_given_as_the_classifier_config_says_to_leave_it_out(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    output = tmp_path / "out"
    result = run(case, output, config=case.base / "config.json")
    refused(
        result, output, f"config {case.base / 'config.json'} is a base model's config (architectures "
        "['Wav2Vec2Model']), not a classifier's: leave --config_path out; the classifier config is derived",
    )  # fmt: skip
