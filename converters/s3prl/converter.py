"""The S3PRL converter's record: s3prl downstream checkpoints (SUPERB heads) onto transformers' wav2vec2-family
heads. Cheap to import: the conversion itself is ``conversion.py``."""

from __future__ import annotations

from typing import Any

from converters.contract import Converter, Option, Requirement, Role

# s3prl 0.4.18 and ESPnet's fork install the same s3prl package: either is the reference, and the report says
# which ran. Only the checks import it: --help, argument errors and the conversion core work without it.
INSTALL = (
    "pip install --no-deps s3prl==0.4.18 (or ESPnet's fork: pip install --no-deps espnet-s3prl); --no-deps because "
    "s3prl declares torchaudio, which would pull in another build of torch, and its heads need only torch and numpy"
)


def validate(options: dict[str, Any]) -> None:
    """A given config that cannot be read, or a labels file that cannot, is refused before any check."""
    from converters.s3prl.convert import read_config
    from converters.s3prl.derive import read_labels

    if options.get("config_path") is not None:
        read_config(options["config_path"])
    if options.get("labels") is not None:
        read_labels(options["labels"])


CONVERTER = Converter(
    name="s3prl",
    command="convert-s3prl-checkpoint",
    description="Convert an s3prl downstream checkpoint (SUPERB head) onto a transformers wav2vec2-family model, "
    "writing the output only if every check passes.",
    options=(
        Option(
            "--base_model_name",
            "a local transformers model directory, or a hub name found in the local cache",
            Role.MODEL,
            required=True,
            key="base_model",
        ),
        Option(
            "--config_path",
            "a hand-written classifier config.json, checked against what the checkpoint implies (default: none; "
            "the config is derived from the checkpoint and the base model)",
            Role.INPUT,
            key="config",
        ),
        Option(
            "--labels",
            "class names, one per line in output order (default: s3prl's own list where it fixes one, else LABEL_i)",
            Role.INPUT,
            metavar="FILE",
        ),
        Option(
            "--normalize_waveform",
            "whether s3prl's upstream layer-normalized each waveform (the written extractor's do_normalize) (default: "
            "as s3prl's upstream named by the checkpoint's Args.upstream does; for a name s3prl's table lacks, as the "
            "base model's feature encoder implies: layer norm, yes)",
            metavar="{yes,no}",
            choices=("yes", "no"),
        ),
        Option("--checkpoint_path", "the s3prl runner checkpoint", Role.SOURCE, required=True, key="checkpoint"),
        Option("--model_dump_path", "output directory", Role.OUTPUT, required=True),
    ),
    conversion="converters.s3prl.conversion:S3PRLConversion",
    files=frozenset({"config.json", "model.safetensors", "preprocessor_config.json"}),
    checks=("converters.s3prl.checks",),
    # s3prl declares torchaudio, which would pull in another torch; its heads need torch and numpy only
    requires=(
        Requirement("s3prl", INSTALL, distributions=("s3prl", "espnet-s3prl"), pip=(("--no-deps", "s3prl==0.4.18"),)),
    ),
    ignore_warnings=(
        # torch's attention warns when transformers passes a float mask beside a bool one (WavLM)
        "ignore:Support for mismatched key_padding_mask and attn_mask:UserWarning",
    ),
    validate="converters.s3prl.converter:validate",
    example="converters.s3prl.example:EXAMPLE",
)
