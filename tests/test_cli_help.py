"""What each command tells its user before converting anything: its help, and the options it requires."""

from __future__ import annotations

import pytest

from converters.ast.cli import main as convert_ast
from converters.ast.variants import BY_NAME
from converters.s3prl.cli import main as convert_s3prl

SHARED = [
    ("--overwrite", "replace a non-empty output directory as a whole"),
    ("--push_to_hub REPO_ID", "upload the output to this hub repository once written"),
    ("--junitxml PATH", "also write the checks' results as JUnit XML (for CI), whether or not they pass"),
]
COMMANDS = {
    "convert-ast-checkpoint": (
        convert_ast,
        "Convert an original Audio Spectrogram Transformer checkpoint (YuanGongND/ast) to transformers' "
        "ASTForAudioClassification, writing the output only if every check passes.",
        [
            ("--model_name NAME", f"the published variant the checkpoint is of: {', '.join(BY_NAME)}"),
            ("--checkpoint_path CHECKPOINT_PATH",
             "the original .pth file (see README for each variant's download address)"),
            ("--pytorch_dump_folder_path PYTORCH_DUMP_FOLDER_PATH", "output directory"),
            ("--sample_audio SAMPLE_AUDIO",
             "the 16 kHz recording the published logits were measured on; checks them when given"),
            *SHARED,
        ],
        ["--checkpoint_path", "--pytorch_dump_folder_path"],
    ),
    "convert-s3prl-checkpoint": (
        convert_s3prl,
        "Convert an s3prl downstream checkpoint (SUPERB head) onto a transformers wav2vec2-family model, "
        "writing the output only if every check passes.",
        [
            ("--base_model_name BASE_MODEL_NAME",
             "a local transformers model directory, or a hub name found in the local cache"),
            ("--config_path CONFIG_PATH",
             "a hand-written classifier config.json, checked against what the checkpoint implies (default: none; "
             "the config is derived from the checkpoint and the base model)"),
            ("--labels FILE", "class names, one per line in output order (default: s3prl's own list where it fixes "
                              "one, else LABEL_i)"),
            ("--checkpoint_path CHECKPOINT_PATH", "the s3prl runner checkpoint"),
            ("--model_dump_path MODEL_DUMP_PATH", "output directory"),
            *SHARED,
        ],
        ["--base_model_name", "--checkpoint_path", "--model_dump_path"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_the_help_names_the_command_what_it_does_and_every_option(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a text: each is compared whole
    main, description, options, _ = COMMANDS[command]
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: {command} ")
    assert f"\n\n{description}\n\n" in help_text
    flowing = " ".join(help_text.split())  # argparse puts a long option's help on the next line
    for option, explanation in options:
        assert f" {option} {explanation} " in flowing + " ", option


@pytest.mark.parametrize(
    ("command", "left_out"), [(command, option) for command, spec in COMMANDS.items() for option in spec[3]]
)
def test_a_required_option_left_out_stops_the_command_naming_it(
    command: str, left_out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main, _, _, required = COMMANDS[command]
    arguments = [part for option in required if option != left_out for part in (option, "x")]
    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == 2
    assert f"the following arguments are required: {left_out}" in capsys.readouterr().err
