"""The AST converter's record: original Audio Spectrogram Transformer checkpoints (YuanGongND/ast, and SSAST's,
YuanGongND/ssast) to transformers' ``ASTForAudioClassification`` (``ASTModel`` for an SSAST pretraining checkpoint).
Cheap to import: the conversion itself is ``conversion.py``."""

from __future__ import annotations

from typing import Any

from converters.ast.spec import RECIPES
from converters.ast.variants import BY_NAME, variant
from converters.contract import Converter, Option, Requirement, Role


def validate(options: dict[str, Any]) -> None:
    """An unknown model name is refused before any check, suggesting the nearest and listing the supported ones."""
    if options.get("model_name") is not None:
        variant(options["model_name"])


def published_original(options: dict[str, Any]) -> str | None:
    """Where a published model's original checkpoint is fetched from, when no --checkpoint_path is given."""
    name = options.get("model_name")
    return variant(name).url if name is not None else None


RUN = "the training run's (src/run.py)"
CONVERTER = Converter(
    name="ast",
    command="convert-ast-checkpoint",
    description="Convert an original Audio Spectrogram Transformer checkpoint (YuanGongND/ast, or an SSAST one) to "
    "transformers' ASTForAudioClassification, writing the output only if every check passes. What the weights do "
    "not fix (strides, input length, normalization) comes from the training run's options, a --recipe or a "
    "published --model_name.",
    options=(
        Option(
            "--model_name",
            f"a published model: {', '.join(BY_NAME)} (MIT/<name>, as the hub names them, too) (default: read off "
            "the checkpoint's shapes where only one published model has them and no other option is given)",
            metavar="NAME",
        ),
        Option(
            "--checkpoint_path",
            "the original .pth file, or an http(s) address to fetch it from (cached as torch.hub caches: "
            "torch.hub.get_dir()/checkpoints) (default: with --model_name, the published model's original, fetched "
            "likewise)",
            Role.SOURCE,
            metavar="FILE|URL",
            key="checkpoint",
        ),
        Option("--pytorch_dump_folder_path", "output directory", Role.OUTPUT, required=True),
        Option(
            "--recipe",
            "the original repository's recipe the checkpoint was trained with: its strides (10/10), input length "
            "(audioset 1024, esc50 512, speechcommands 128 frames), normalization statistics and labels; an option "
            "given beside it decides over it (default: none)",
            metavar="{" + ",".join(RECIPES) + "}",
            choices=tuple(RECIPES),
        ),
        Option(
            "--fstride",
            f"the frequency stride of the patch split, {RUN} (default: derived where the position "
            "rows leave one choice)",
            metavar="N",
            type=int,
        ),
        Option(
            "--tstride", f"the time stride of the patch split, {RUN} (default: derived likewise)", metavar="N", type=int
        ),
        Option(
            "--audio_length",
            f"the input length in frames (the original's input_tdim), {RUN} (default: derived likewise)",
            metavar="FRAMES",
            type=int,
        ),
        Option(
            "--num_mel_bins",
            "mel bins per frame (the original's input_fdim) (default: 128, every recipe's)",
            metavar="N",
            type=int,
        ),
        Option(
            "--dataset_mean",
            f"the fbank mean the run normalized with, {RUN} (default: none; required unless --recipe or a published "
            "model says)",
            metavar="X",
            type=float,
        ),
        Option(
            "--dataset_std",
            f"the fbank standard deviation, {RUN} (default: none; required likewise)",
            metavar="X",
            type=float,
        ),
        Option(
            "--label_csv",
            "the run's class_labels_indices.csv (index,mid,display_name, in index order) "
            "(default: the recipe's labels, else LABEL_i)",
            Role.INPUT,
            metavar="FILE",
            aliases=("--label-csv",),
        ),
        Option(
            "--n_class",
            "the run's number of classes: checked against the checkpoint's head (default: none)",
            metavar="N",
            type=int,
        ),
        Option(
            "--pooling",
            "how the run pooled the tokens: cls (AST, SSAST's ft_cls: the mean of the class and "
            "distillation tokens) or mean (SSAST's ft_avgtok: refused, transformers' AST cannot compute it) "
            "(default: cls)",
            metavar="{cls,mean}",
            choices=("cls", "mean"),
        ),
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
    requires=(
        Requirement("timm", "pip install timm (with torchvision for the installed torch)", pip=(("timm>=1.0",),)),
    ),
    # transformers' kaldi mel bank warns about an empty filter on every 128-bin extractor
    ignore_warnings=("ignore:At least one mel filter has all zero values:UserWarning",),
    validate="converters.ast.converter:validate",
    default_source="converters.ast.converter:published_original",
    default_source_option="--model_name",
    example="converters.ast.example:EXAMPLE",
)
