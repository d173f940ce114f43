"""AST checkpoints as users have them: their own fine-tunes of the original recipes, any model size, any input,
either key layout, SSAST's; through the command, from the options a user copies from the training run.

Every checkpoint is built through the original construction (``converters.ast.example``: timm's DeiT of the size,
the original's patch embedding, position rows and head, every tensor drawn anew) and saved as the recipes save it
(through DataParallel) or as a training loop of one's own does (without ``module.``). Each conversion is checked
against the original model rebuilt from the checkpoint and the options, from the recordings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from converters.ast.derive import grids, listed
from converters.ast.example import MODEL_SIZES, TINY, write_checkpoint, write_ssast_pretraining
from converters.ast.labels import id2label
from converters.ast.spec import ESC50, Spec
from converters.ast.variants import BY_NAME
from fixtures import commands
from fixtures.commands import assert_refused, check_result, final_message

AST = "convert-ast-checkpoint"
TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
ESC = Spec(10, 10, 512, ESC50.feature_mean, ESC50.feature_std, labels=tuple(id2label(ESC50).values()))
# an own data set's fine-tune: 5 labels, 400 frames, its own statistics
OWN_LABELS = ("cat", "dog", "bird", "rain", "car")
OWN = Spec(10, 10, 400, -5.1, 4.2, labels=OWN_LABELS)
# what a user copies from egs/esc50/run_esc.sh
RUN_ESC = ("--fstride", "10", "--tstride", "10", "--dataset_mean", "-6.6268077", "--dataset_std", "5.358466",
           "--audio_length", "512", "--label-csv", str(Path(__file__).parents[1] / "converters" / "data" / "ast" /
           "esc_class_labels_indices.csv"), "--n_class", "50")  # fmt: skip
OWN_OPTIONS = ("--audio_length", "400", "--dataset_mean", "-5.1", "--dataset_std", "4.2")


def convert(checkpoint: Path, output: Path, *options: str) -> commands.Result:
    return commands.run(AST, "--checkpoint_path", str(checkpoint), "--pytorch_dump_folder_path", str(output),
                        *options)  # fmt: skip


def verify(checkpoint: Path, directory: Path, *options: str) -> commands.Result:
    return commands.run(AST, "--checkpoint_path", str(checkpoint), "--verify", str(directory), *options)


def passed(result: commands.Result, output: Path) -> dict[str, object]:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert final_message(result.stdout) == f"{AST}: wrote {output}"
    config: dict[str, object] = json.loads((output / "config.json").read_text())
    return config


def refused_at_derivation(result: commands.Result, output: Path, *words: str) -> None:
    """Refused by the stage that derives the target, its cause the last message, nothing written."""
    assert_refused(result, output, "check test_deriving_the_target failed: ", *words)
    assert check_result(result.stdout, "test_deriving_the_target") == "failed"
    assert not output.exists()


@pytest.fixture(scope="session")
def own_checkpoint(artifacts: object) -> Callable[..., Path]:
    """``own_checkpoint(name, spec, backbone=TINY, prefix=True)``: built once per run."""

    def get(name: str, spec: Spec, backbone: object = TINY, prefix: bool = True) -> Path:
        seed = 3000 + sum(map(ord, name))
        return artifacts.get(  # type: ignore[attr-defined,no-any-return]
            f"ast-own-{name}.pth",
            lambda path: write_checkpoint(path, spec, backbone, seed, prefix),  # type: ignore[arg-type]
        )

    return get


def test_an_esc50_fine_tune_converts_from_the_options_of_its_run_script(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    config = passed(convert(own_checkpoint("esc50", ESC), output, *RUN_ESC), output)
    assert (config["frequency_stride"], config["time_stride"], config["max_length"]) == (10, 10, 512)
    assert config["id2label"]["0"] == "dog" and len(config["id2label"]) == 50  # type: ignore[index,arg-type]
    extractor = json.loads((output / "preprocessor_config.json").read_text())
    assert (extractor["mean"], extractor["std"], extractor["max_length"]) == (-6.6268077, 5.358466, 512)


def test_the_report_says_where_each_field_came_from(own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    result = convert(own_checkpoint("esc50", ESC), tmp_path / "out", "--audio_length", "512", "--recipe", "esc50")
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    assert "  max_length = 512  <- --audio_length 512" in lines
    assert "  frequency_stride = 10  <- --recipe esc50 (egs/esc50)" in lines
    assert "  mean = -6.6268077  <- --recipe esc50 (egs/esc50)" in lines
    assert "  num_mel_bins = 128  <- --recipe esc50 (egs/esc50)" in lines
    assert "  num_attention_heads = 2  <- the width / 64, as in every DeiT size" in lines


@pytest.mark.parametrize("recipe", ["audioset", "esc50", "speechcommands"])
def test_each_recipe_alone_says_what_the_weights_do_not(
    recipe: str, own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from converters.ast.spec import RECIPES

    chosen = RECIPES[recipe]
    labels = tuple(id2label(chosen).values())
    spec = Spec(10, 10, chosen.max_length, chosen.feature_mean, chosen.feature_std, labels=labels)
    output = tmp_path / "out"
    config = passed(convert(own_checkpoint(f"recipe-{recipe}", spec), output, "--recipe", recipe), output)
    assert config["max_length"] == chosen.max_length and list(config["id2label"].values()) == list(labels)  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", ["tiny224", "small224", pytest.param("base384", marks=pytest.mark.slow)])
def test_each_model_size_converts_exactly(size: str, own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    output = tmp_path / "out"
    backbone = MODEL_SIZES[size]
    result = convert(own_checkpoint(f"size-{size}", ESC, backbone), output, "--recipe", "esc50")
    config = passed(result, output)
    assert (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]) == (
        backbone.hidden_size, backbone.hidden_size // 64, 12)  # fmt: skip
    assert f"{size}" in " ".join(result.stdout.split()) or size == "base384"


def test_a_checkpoint_saved_without_dataparallel_converts(own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    checkpoint = own_checkpoint("own-plain", OWN, prefix=False)
    assert not any(key.startswith("module.") for key in torch.load(checkpoint, weights_only=True))
    output = tmp_path / "out"
    config = passed(convert(checkpoint, output, *OWN_OPTIONS), output)
    assert config["max_length"] == 400 and config["id2label"] == {str(i): f"LABEL_{i}" for i in range(5)}
    again = convert(checkpoint, tmp_path / "again", *OWN_OPTIONS).stdout
    assert "hidden_size = 128 <- v.cls_token's width" in " ".join(again.split())


@pytest.mark.parametrize("bins", [64, 128])
def test_any_number_of_mel_bins(bins: int, own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    spec = Spec(10, 10, 512, -6.0, 5.0, num_mel_bins=bins, labels=tuple(f"c{i}" for i in range(10)))
    output = tmp_path / "out"
    options = ("--num_mel_bins", str(bins), "--fstride", "10", "--tstride", "10", "--audio_length", "512",
               "--dataset_mean", "-6", "--dataset_std", "5")  # fmt: skip
    config = passed(convert(own_checkpoint(f"mel{bins}", spec), output, *options), output)
    assert config["num_mel_bins"] == bins
    assert json.loads((output / "preprocessor_config.json").read_text())["num_mel_bins"] == bins


def test_the_strides_are_derived_where_the_length_leaves_one_choice(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """602 position rows at 512 frames: only 10/10."""
    assert [(g.fstride, g.tstride) for g in grids(602, 128, length=512)] == [(10, 10)]
    output = tmp_path / "out"
    result = convert(own_checkpoint("esc50", ESC), output, "--audio_length", "512", "--dataset_mean", "-6.6268077",
                     "--dataset_std", "5.358466")  # fmt: skip
    passed(result, output)
    text = " ".join(result.stdout.split())
    assert "frequency_stride = 10 <- derived: the only one that fits the 602 position rows with --audio_length" in text


def test_an_ambiguous_checkpoint_is_refused_listing_the_choices_and_what_decides(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = convert(own_checkpoint("esc50", ESC), output)
    refused_at_derivation(
        result, output, "module.v.pos_embed has 602 position rows, which fit 8/8 at 328-335 frames, 10/10 at 506-515 "
        "frames, 12/12 at 724-735 frames, 15/15 at 1126-1140 frames, 16/16 at 1200-1215 frames (and 75 more with "
        "unequal strides) at 128 mel bins: give --audio_length, or --fstride and --tstride",
        "give --dataset_mean and --dataset_std (or --recipe); an AudioSet default would change the function",
    )  # fmt: skip
    assert listed(grids(602, 128, fstride=10, tstride=10)) == "10/10 at 506-515 frames"
    result = convert(own_checkpoint("esc50", ESC), output, "--fstride", "10", "--tstride", "10", "--dataset_mean",
                     "-6.6", "--dataset_std", "5.4")  # fmt: skip
    refused_at_derivation(result, output, "which fit 10/10 at 506-515 frames at 128 mel bins: give --audio_length")


def test_options_that_no_grid_fits_are_refused_naming_the_rows(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = convert(own_checkpoint("esc50", ESC), output, "--recipe", "audioset")
    refused_at_derivation(
        result, output, "module.v.pos_embed has 602 position rows, which no strides fit at 128 mel bins with --fstride "
        "10, --tstride 10, --audio_length 1024; they fit 8/8 at 328-335",
    )  # fmt: skip


@pytest.mark.parametrize(("rows", "words"), [
    ("index,mid,display_name\n0,/m/a,\"a\"\n1,/m/b,\"b\"\n", "lists 2 labels, but the model has 5 outputs"),
    ("index,mid,display_name\n0,/m/a,a\n2,/m/c,c\n", "line 3: index 2 where 1 is due"),
    ("index,mid,display_name\n0,/m/a,a\n0,/m/b,b\n", "line 3: index 0 repeats (it was given to 'a')"),
    ("id,name\n0,a\n", "has no index and no display_name column"),
    ("index,mid,display_name\nx,/m/a,a\n", "line 2: index 'x' is not a number"),
])  # fmt: skip
def test_a_bad_label_file_is_refused_naming_the_row(
    rows: str, words: str, own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text(rows)
    output = tmp_path / "out"
    result = convert(own_checkpoint("own", OWN), output, *OWN_OPTIONS, "--label_csv", str(labels))
    refused_at_derivation(result, output, f"{labels}", words)


def test_a_good_label_file_names_the_outputs(own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text("index,mid,display_name\n" + "".join(f'{i},/m/x{i},"{n}"\n' for i, n in enumerate(OWN_LABELS)))
    output = tmp_path / "out"
    config = passed(convert(own_checkpoint("own", OWN), output, *OWN_OPTIONS, "--label_csv", str(labels)), output)
    assert list(config["id2label"].values()) == list(OWN_LABELS)  # type: ignore[attr-defined]


def test_n_class_that_is_not_the_heads_is_refused(own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = convert(own_checkpoint("own", OWN), output, *OWN_OPTIONS, "--n_class", "7")
    refused_at_derivation(result, output, "--n_class 7, but", "has 5 outputs")


def test_a_published_model_by_its_hub_name_and_a_wrong_name_suggested(
    ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    passed(convert(ast_checkpoint(TENTEN), output, "--model_name", f"MIT/{TENTEN.name}"), output)
    result = convert(ast_checkpoint(TENTEN), tmp_path / "other", "--model_name", "ast-finetuned-audioset-10-10-0.459")
    assert_refused(result, tmp_path / "other", "unknown model name 'ast-finetuned-audioset-10-10-0.459'; did you "
                   f"mean {TENTEN.name!r}?")  # fmt: skip


def test_an_option_a_published_model_contradicts_is_refused(
    ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = convert(ast_checkpoint(TENTEN), output, "--model_name", TENTEN.name, "--audio_length", "512")
    refused_at_derivation(result, output, f"--audio_length 512, but {TENTEN.name} was trained with 1024")


def test_an_ssast_patch_fine_tune_converts_with_cls_pooling_and_mean_pooling_is_refused(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """SSAST fine-tunes have AST's keys: the pooling they were trained with is not in the file."""
    checkpoint = own_checkpoint("esc50", ESC)
    output = tmp_path / "out"
    passed(convert(checkpoint, output, "--recipe", "esc50", "--pooling", "cls"), output)
    result = convert(checkpoint, tmp_path / "mean", "--recipe", "esc50", "--pooling", "mean")
    refused_at_derivation(result, tmp_path / "mean", "--pooling mean (SSAST's ft_avgtok", "cannot be converted: "
                          "transformers' AST pools the class and distillation tokens")  # fmt: skip


def test_an_ssast_frame_model_is_refused_naming_the_patch_shape(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    state = torch.load(own_checkpoint("esc50", ESC), weights_only=True)
    state["module.v.patch_embed.proj.weight"] = torch.randn(128, 1, 128, 2)
    checkpoint = tmp_path / "frame.pth"
    torch.save(state, checkpoint)
    output = tmp_path / "out"
    result = convert(checkpoint, output, "--recipe", "esc50")
    refused_at_derivation(
        result, output, "module.v.patch_embed.proj.weight in", "has 128x2 patches (an SSAST frame model, say); "
        "transformers' AST splits the spectrogram into square 16x16 patches",
    )  # fmt: skip


def test_a_one_token_model_is_refused(own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    state = torch.load(own_checkpoint("esc50", ESC), weights_only=True)
    del state["module.v.dist_token"]
    checkpoint = tmp_path / "nokd.pth"
    torch.save(state, checkpoint)
    result = convert(checkpoint, tmp_path / "out", "--recipe", "esc50")
    refused_at_derivation(result, tmp_path / "out", "has no module.v.dist_token", "transformers' AST computes with two")


def test_an_ssast_pretraining_checkpoint_converts_its_encoder(artifacts: object, tmp_path: Path) -> None:
    checkpoint = artifacts.get(  # type: ignore[attr-defined]
        "ssast-pretraining.pth", lambda path: write_ssast_pretraining(path, TINY, 128, 1024)
    )
    output = tmp_path / "out"
    result = convert(checkpoint, output, "--dataset_mean", "-4.27", "--dataset_std", "4.57")
    config = passed(result, output)
    assert config["architectures"] == ["ASTModel"] and (config["time_stride"], config["max_length"]) == (16, 1024)
    text = " ".join(result.stdout.split())
    assert "its pretext heads dropped (module.cpredlayer, module.gpredlayer, module.mask_embed" in text
    from safetensors import safe_open

    with safe_open(output / "model.safetensors", "pt") as written:
        keys = set(written.keys())
    assert "embeddings.cls_token" in keys and not any("pred" in key or "classifier" in key for key in keys)
    result = convert(checkpoint, tmp_path / "other", "--dataset_mean", "-4", "--dataset_std", "4", "--tstride", "10")
    refused_at_derivation(result, tmp_path / "other", "--tstride 10, but the SSAST pretraining checkpoint was "
                          "trained with 16")  # fmt: skip


def test_an_own_fine_tune_verifies_and_one_with_another_mean_is_named(
    own_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    checkpoint = own_checkpoint("own", OWN)
    output = tmp_path / "out"
    passed(convert(checkpoint, output, *OWN_OPTIONS), output)
    result = verify(checkpoint, output, *OWN_OPTIONS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    extractor = json.loads((output / "preprocessor_config.json").read_text())
    (output / "preprocessor_config.json").write_text(json.dumps({**extractor, "mean": -4.2677393}))
    result = verify(checkpoint, output, *OWN_OPTIONS)
    assert_refused(result, tmp_path / "none", "preprocessor_config.json mean -4.2677393, the original computes with "
                   "-5.1")  # fmt: skip
    assert "first divergence at input features" in " ".join(result.stdout.split())


@pytest.mark.parametrize(("damage", "words"), [
    (lambda s: {k.removeprefix("module."): v for k, v in s.items()} | {"module.v.norm.bias": s["module.v.norm.bias"]},
     "mixes keys with and without DataParallel's 'module.' prefix"),
    (lambda s: {k: v for k, v in s.items() if not k.startswith("module.mlp_head")},
     "has no module.mlp_head.1.weight (a fine-tuned model's head) and no module.cpredlayer"),
    (lambda s: {"state_dict." + k: v for k, v in s.items()}, "is no original AST model's state dict"),
])  # fmt: skip
def test_a_checkpoint_of_another_layout_is_refused_by_the_derivation(
    damage: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], words: str,
    own_checkpoint: Callable[..., Path], tmp_path: Path,
) -> None:  # fmt: skip
    checkpoint = tmp_path / "damaged.pth"
    torch.save(damage(torch.load(own_checkpoint("esc50", ESC), weights_only=True)), checkpoint)
    output = tmp_path / "out"
    refused_at_derivation(convert(checkpoint, output, "--recipe", "esc50"), output, words)


def test_every_refusal_here_names_the_stage_in_junit(own_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    junit = tmp_path / "checks.xml"
    result = convert(own_checkpoint("esc50", ESC), tmp_path / "out", "--junitxml", str(junit))
    assert result.returncode == 1
    cases = dict(re.findall(r'<testcase [^>]*name="(\w+)"[^>]*>\s*<(failure|error|skipped)', junit.read_text()))
    assert [name for name, kind in cases.items() if kind != "skipped"] == ["test_deriving_the_target"]
    assert "test_outputs_match_the_original_implementation" in cases  # not run: skipped, saying what it needs
