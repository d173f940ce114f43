"""Synthetic full-size inputs for the benchmark, built through the same code paths as the test fixtures.

AST: the 10-10 variant on tiny, base (DeiT-base: 88M parameters, the published size) and large
(1024 wide, 24 blocks) backbones. S3PRL: an XVector head on a wav2vec2 base model of tiny, base
(wav2vec2-base, 95M) and large (wav2vec2-large, 317M) size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from converters.ast.config import Backbone
from converters.ast.variants import BY_NAME
from converters.s3prl.families import FAMILIES, Head
from fixtures import ast_checkpoints, s3prl_checkpoints

AST_VARIANT = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
AST_SIZES = {
    "tiny": ast_checkpoints.TINY,
    "base": ast_checkpoints.FULL,
    "large": Backbone(hidden_size=1024, num_layers=24, intermediate_size=4096),
}
WAV2VEC2 = FAMILIES[0]
S3PRL_SIZES = {
    "tiny": s3prl_checkpoints.TINY,
    "base": s3prl_checkpoints.SUPERB,
    "large": s3prl_checkpoints.LARGE,
}


@dataclass(frozen=True)
class Case:
    format: str  # "ast" or "s3prl"
    size: str

    @property
    def name(self) -> str:
        return f"{self.format}-{self.size}"


CASES = [Case(kind, size) for kind in ("ast", "s3prl") for size in ("tiny", "base", "large")]


def build(case: Case, directory: Path) -> Path:
    """Write the case's inputs and ``case.json`` into ``directory`` (once: an existing case is kept)."""
    if (directory / "case.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    if case.format == "ast":
        checkpoint = directory / "audioset_10_10_0.4593.pth"
        ast_checkpoints.write_checkpoint(checkpoint, AST_VARIANT, AST_SIZES[case.size])
        files = {"checkpoint": checkpoint.name}
        extra = {"variant": AST_VARIANT.name}
    else:
        size = S3PRL_SIZES[case.size]
        base = s3prl_checkpoints.write_base_model(directory / "base", WAV2VEC2, size)
        s3prl_checkpoints.write_classifier_config(directory / "config.json", WAV2VEC2, Head.XVECTOR, size)
        s3prl_checkpoints.write_runner_checkpoint(directory / "states.ckpt", base, WAV2VEC2, Head.XVECTOR, size)
        files = {"base": "base", "config": "config.json", "checkpoint": "states.ckpt"}
        extra = {}
    (directory / "case.json").write_text(json.dumps({"format": case.format, "files": files, **extra}))
    return directory


def parameters(directory: Path) -> int:
    """How many numbers the conversion moves: every tensor of the checkpoint (and of the base model)."""
    import torch
    from safetensors import safe_open

    case = json.loads((directory / "case.json").read_text())
    state = torch.load(directory / case["files"]["checkpoint"], mmap=True, weights_only=False, map_location="cpu")
    if case["format"] == "ast":
        return sum(t.numel() for t in state.values())
    count = sum(t.numel() for t in state["Downstream"].values()) + state["Featurizer"]["weights"].numel()
    with safe_open(directory / "base" / "model.safetensors", "pt") as base:
        count += sum(math.prod(base.get_slice(key).get_shape()) for key in base.keys())  # noqa: SIM118
    return count
