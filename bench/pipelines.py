"""The pipelines the benchmark times, each run in a fresh process: ``python -m bench.pipelines NAME CASE OUT``.

``CASE`` is a case directory made by ``bench.cases`` (its ``case.json`` says the format and the files).
- ``command``: the project's command end to end, every check on (the installed console script).
- ``seed``: the seed scripts' way: full ``torch.load``, rename, a randomly initialised model,
  ``load_state_dict``, one forward, ``save_pretrained``.
- ``core``: the project's conversion core alone: safe read, map, write; no checks.
- ``floor``: the I/O floor: a memory-mapped read of the checkpoint, a safetensors write of its tensors.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def case_of(directory: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads((directory / "case.json").read_text())
    return {**case, **{key: directory / value for key, value in case["files"].items()}}


def command(case: dict[str, Any], output: Path) -> None:
    scripts = Path(sys.executable).parent
    if case["format"] == "ast":
        arguments = [str(scripts / "convert-ast-checkpoint"), "--model_name", case["variant"], "--checkpoint_path",
                     str(case["checkpoint"]), "--pytorch_dump_folder_path", str(output)]  # fmt: skip
    else:
        arguments = [str(scripts / "convert-s3prl-checkpoint"), "--base_model_name", str(case["base"]),
                     "--config_path", str(case["config"]), "--checkpoint_path", str(case["checkpoint"]),
                     "--model_dump_path", str(output)]  # fmt: skip
    # exec, not a child: the figures measured for this process are the command's own
    sys.stdout.flush()
    os.execv(arguments[0], arguments)


@torch.no_grad()
def seed(case: dict[str, Any], output: Path) -> None:
    if case["format"] == "ast":
        from transformers import ASTForAudioClassification

        from converters.ast.config import backbone_of, feature_extractor, hf_config
        from converters.ast.mapping import AST_MAPPING
        from converters.ast.variants import variant
        from converters.hub_layout import load_serialized

        state = torch.load(case["checkpoint"], map_location="cpu", weights_only=True)
        chosen = variant(case["variant"])
        config = hf_config(chosen, backbone_of(state))
        renamed = AST_MAPPING.apply(state)
        model = ASTForAudioClassification(config).eval()
        load_serialized(model, renamed)  # load_state_dict under the serialized names, on transformers 4 and 5
        extractor = feature_extractor(chosen)
        inputs = extractor(torch.randn(16000 * 2).numpy(), sampling_rate=16000, return_tensors="pt")
        model(**inputs)
        model.save_pretrained(output)
        extractor.save_pretrained(output)
        return
    import transformers

    # as the seed loaded it (the runner pickles an argparse.Namespace); the benchmark's own synthetic file
    checkpoint = torch.load(case["checkpoint"], map_location="cpu", weights_only=False)
    downstream = checkpoint["Downstream"]
    config = transformers.AutoConfig.from_pretrained(case["config"])
    s3prl_extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(
        case["base"], return_attention_mask=True, do_normalize=False
    )
    model = getattr(transformers, config.architectures[0]).from_pretrained(case["base"], config=config).eval()
    model.projector.weight.data = downstream["connector.weight"]
    model.projector.bias.data = downstream["connector.bias"]
    for i in range(len(config.tdnn_kernel)):
        model.tdnn[i].kernel.weight.data = downstream[f"model.framelevel_feature_extractor.module.{i}.kernel.weight"]
        model.tdnn[i].kernel.bias.data = downstream[f"model.framelevel_feature_extractor.module.{i}.kernel.bias"]
    model.feature_extractor.weight.data = downstream["model.utterancelevel_feature_extractor.linear1.weight"]
    model.feature_extractor.bias.data = downstream["model.utterancelevel_feature_extractor.linear1.bias"]
    model.classifier.weight.data = downstream["model.utterancelevel_feature_extractor.linear2.weight"]
    model.classifier.bias.data = downstream["model.utterancelevel_feature_extractor.linear2.bias"]
    model.objective.weight.data = downstream["objective.W"]
    model.layer_weights.data = checkpoint["Featurizer"]["weights"]
    inputs = s3prl_extractor(torch.randn(16000 * 2).numpy(), sampling_rate=16000, return_tensors="pt")
    model(**inputs)
    s3prl_extractor.save_pretrained(output)
    model.save_pretrained(output)


def core(case: dict[str, Any], output: Path) -> None:
    output.mkdir()
    if case["format"] == "ast":
        from converters.ast.convert import convert, write
        from converters.ast.variants import variant
        from converters.safe_load import as_state_dict, load_checkpoint

        path = case["checkpoint"]
        write(convert(as_state_dict(load_checkpoint(path), str(path)), variant(case["variant"])), output)
        return
    from converters.s3prl.checkpoint import read
    from converters.s3prl.convert import build_model, convert_head, feature_extractor, read_config

    target = read_config(case["config"])
    model = build_model(case["base"], target, convert_head(read(case["checkpoint"]), target))
    model.save_pretrained(output)
    feature_extractor(case["base"]).save_pretrained(output)


def floor(case: dict[str, Any], output: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    output.mkdir()
    # no allowlist: the floor is bare I/O, and the benchmark reads only the synthetic files it built
    state = torch.load(case["checkpoint"], map_location="cpu", weights_only=False, mmap=True)
    if case["format"] == "ast":
        tensors = dict(state)
    else:
        tensors = {f"head.{key}": value for key, value in state["Downstream"].items()}
        with safe_open(case["base"] / "model.safetensors", "pt") as base:
            tensors.update({key: base.get_tensor(key) for key in base.keys()})  # noqa: SIM118
    save_file(tensors, str(output / "model.safetensors"))


PIPELINES: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "command": command,
    "seed": seed,
    "core": core,
    "floor": floor,
}


def main() -> None:
    name, case_dir, output = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    PIPELINES[name](case_of(case_dir), output)


if __name__ == "__main__":
    main()
