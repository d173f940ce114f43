"""The AST converter's record: original Audio Spectrogram Transformer checkpoints (YuanGongND/ast) to
transformers' ``ASTForAudioClassification``. Cheap to import: the conversion itself is ``conversion.py``."""

from __future__ import annotations

from typing import Any

from converters.ast.variants import BY_NAME, variant
from converters.contract import Converter, Option, Requirement, Role


def validate(options: dict[str, Any]) -> None:
    """An unknown model name is refused before any check, listing the supported ones."""
    if options.get("model_name") is not None:
        variant(options["model_name"])


CONVERTER = Converter(
    name="ast",
    command="convert-ast-checkpoint",
    description="Convert an original Audio Spectrogram Transformer checkpoint (YuanGongND/ast) to transformers' "
    "ASTForAudioClassification, writing the output only if every check passes.",
    options=(
        Option(
            "--model_name",
            f"the published variant the checkpoint is of: {', '.join(BY_NAME)} (default: read off the "
            "checkpoint's shapes where only one variant has them; the four 10-10 AudioSet variants share theirs)",
            metavar="NAME",
        ),
        Option(
            "--checkpoint_path",
            "the original .pth file (see README for each variant's download address)",
            Role.SOURCE,
            required=True,
            key="checkpoint",
        ),
        Option("--pytorch_dump_folder_path", "output directory", Role.OUTPUT, required=True),
        Option(
            "--sample_audio",
            "the 16 kHz recording the published logits were measured on; checks them when given (default: the "
            "AudioSet sample if your local Hugging Face cache holds it, else none)",
            Role.INPUT,
        ),
    ),
    conversion="converters.ast.conversion:ASTConversion",
    files=frozenset({"config.json", "model.safetensors", "preprocessor_config.json"}),
    checks=("converters.ast.checks",),
    requires=(Requirement("timm", "pip install timm (with torchvision for the installed torch)"),),
    # transformers' kaldi mel bank warns about an empty filter on every 128-bin extractor
    ignore_warnings=("ignore:At least one mel filter has all zero values:UserWarning",),
    validate="converters.ast.converter:validate",
    example="converters.ast.example:EXAMPLE",
)
main = CONVERTER.main
script = CONVERTER.script
