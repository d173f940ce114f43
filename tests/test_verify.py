"""``--verify DIR``: a directory written before, checked against the original under the installed transformers.

The directories are written the seed scripts' way (``fixtures/seed_style.py``: renames and the qkv split by
hand, ``save_pretrained``), independently of the converters, and broken where a test says.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from converters.ast.variants import BY_NAME
from converters.s3prl.example import S3PRLCase
from converters.s3prl.families import FAMILIES, Head
from fixtures import commands
from fixtures.commands import assert_refused, check_result, final_message
from fixtures.seed_style import ast_directory, s3prl_directory
from fixtures.transformers_versions import MAJOR

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
AST, S3PRL = "convert-ast-checkpoint", "convert-s3prl-checkpoint"


def verify_ast(checkpoint: Path, directory: Path | str, *extra: str, hub_cache: Path | None = None) -> commands.Result:
    return commands.run(AST, "--model_name", TENTEN.name, "--checkpoint_path", str(checkpoint), "--verify",
                        str(directory), *extra, hub_cache=hub_cache)  # fmt: skip


@pytest.fixture
def checkpoint(ast_checkpoint: Callable[..., Path]) -> Path:
    return ast_checkpoint(TENTEN)


def seed_written(checkpoint: Path, tmp_path: Path, name: str = "seed", **changes: Any) -> Path:
    return ast_directory(checkpoint, TENTEN, tmp_path / name, **changes)


def state_of(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file's digest and modification time: what verifying must leave as it was."""
    return {p.name: (xxhash.xxh3_128_hexdigest(p.read_bytes()), p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_a_seed_style_directory_with_the_originals_eps_verifies(checkpoint: Path, tmp_path: Path) -> None:
    directory = seed_written(checkpoint, tmp_path, eps=1e-6)
    result = verify_ast(checkpoint, directory)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert final_message(result.stdout) == f"{AST}: verified {directory}: it computes what the original computes"
    for check in ("test_every_key_in_the_directory_is_expected", "test_every_tensor_is_what_the_converter_writes",
                  "test_the_config_computes_what_the_original_computes",
                  "test_outputs_match_the_original_implementation"):  # fmt: skip
        assert check_result(result.stdout, check) == "passed"


def test_the_hub_configs_eps_is_named_and_fixed_by_a_copy(checkpoint: Path, tmp_path: Path) -> None:
    """The seed wrote transformers' default eps, 1e-12, where the original's backbone computes with 1e-6: only
    the config differs, so --fix-config writes a copy (weights hard-linked) that verifies."""
    directory = seed_written(checkpoint, tmp_path)
    before = state_of(directory)
    last = assert_refused(verify_ast(checkpoint, directory), tmp_path / "none", "test_the_config_computes_what_the_"
                          "original_computes", "layer_norm_eps 1e-12, the original computes with 1e-06",
                          "--fix-config OUT")  # fmt: skip
    assert "weights are the converter's" in last
    fixed = tmp_path / "fixed"
    result = verify_ast(checkpoint, directory, "--fix-config", str(fixed))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "with layer_norm_eps set as the original computes; verified" in final_message(result.stdout)
    assert json.loads((fixed / "config.json").read_text())["layer_norm_eps"] == 1e-6
    assert (fixed / "model.safetensors").stat().st_ino == (directory / "model.safetensors").stat().st_ino
    assert state_of(directory) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed", "seed"]
    assert verify_ast(checkpoint, fixed).returncode == 0


def test_a_fixed_copy_is_refused_where_the_weights_differ_too(checkpoint: Path, tmp_path: Path) -> None:
    directory = seed_written(checkpoint, tmp_path, swap_query_and_key_in=1)
    fixed = tmp_path / "fixed"
    assert_refused(verify_ast(checkpoint, directory, "--fix-config", str(fixed)), fixed, "differs from what the "
                   "converter writes")  # fmt: skip
    assert not fixed.exists()


def test_query_and_key_swapped_in_one_block_are_located_there(checkpoint: Path, tmp_path: Path) -> None:
    directory = seed_written(checkpoint, tmp_path, eps=1e-6, swap_query_and_key_in=1)
    result = verify_ast(checkpoint, directory)
    key = "audio_spectrogram_transformer.encoder.layer.1.attention.attention.query.weight"
    assert_refused(result, tmp_path / "none", f"{key} differs from what the converter writes by", "and 3 more")
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "failed"
    assert "first divergence at block 1 attention" in result.stdout
    assert "block 1 attention" in result.stdout and "<- first divergence" in result.stdout


def test_a_missing_tensor_is_named(checkpoint: Path, tmp_path: Path) -> None:
    dropped = "audio_spectrogram_transformer.encoder.layer.0.output.dense.bias"
    directory = seed_written(checkpoint, tmp_path, eps=1e-6, drop=dropped)
    assert_refused(verify_ast(checkpoint, directory), tmp_path / "none", f"holds missing ['{dropped}'] keys")


def test_verifying_writes_nothing_even_into_a_read_only_directory(checkpoint: Path, tmp_path: Path) -> None:
    directory = seed_written(checkpoint, tmp_path, eps=1e-6)
    before = state_of(directory)
    for path in [directory, *directory.iterdir()]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        result = verify_ast(checkpoint, directory, "--junitxml", str(tmp_path / "checks.xml"))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        assert state_of(directory) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checks.xml", "seed"]
    finally:
        directory.chmod(0o755)


def test_a_hub_name_is_verified_from_the_local_cache(
    checkpoint: Path, tmp_path: Path, hub_cache: Callable[..., Path]
) -> None:
    directory = seed_written(checkpoint, tmp_path, eps=1e-6)
    for item in directory.iterdir():
        cache = hub_cache("example/ast-seed", item.name, item.read_bytes(), repo_type="model")
    result = verify_ast(checkpoint, "example/ast-seed", hub_cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert_refused(verify_ast(checkpoint, "example/not-cached"), tmp_path / "none", "--verify 'example/not-cached'",
                   "local Hugging Face cache")  # fmt: skip


def test_verify_and_an_output_directory_do_not_go_together(checkpoint: Path, tmp_path: Path) -> None:
    result = commands.run(AST, "--checkpoint_path", str(checkpoint), "--verify", str(tmp_path), "--pytorch_dump_"
                          "folder_path", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2 and "--verify checks a directory and writes nothing" in result.stderr
    result = commands.run(AST, "--checkpoint_path", str(checkpoint), "--fix-config", str(tmp_path / "x"))
    assert result.returncode == 2 and "the following arguments are required: --pytorch_dump_folder_path" in (
        result.stderr
    )


@pytest.fixture
def large_upstream(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> tuple[S3PRLCase, Path]:
    """A weighted-sum head on a stable-layer-norm Wav2Vec2, written the seed's way: its hand-written config has
    no tie flag, which transformers 5 needs to compute the head's function."""
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE, stable=True)
    directory = s3prl_directory(case.base, case.checkpoint, case.config, tmp_path / "seed")
    assert "tie_last_hidden_states" not in json.loads((directory / "config.json").read_text())
    return case, directory


def verify_s3prl(case: S3PRLCase, directory: Path, *extra: str) -> commands.Result:
    return commands.run(S3PRL, "--base_model_name", str(case.base), "--checkpoint_path", str(case.checkpoint),
                        "--verify", str(directory), *extra)  # fmt: skip


def test_a_seed_style_large_upstream_head_is_named_at_the_input_and_fixed(
    large_upstream: tuple[S3PRLCase, Path], tmp_path: Path
) -> None:
    """The seed wrote do_normalize false for every upstream, and no tie flag: on a normalizing upstream
    (wav2vec2_large_ll60k) the directory's extractor hands the model raw waveforms, where s3prl's upstream hands it
    normalized ones; the locator names the input, not the model. Both fields are named, and --fix-config's copy
    verifies under both majors."""
    case, directory = large_upstream
    result = verify_s3prl(case, directory)
    assert_refused(result, tmp_path / "none", "preprocessor_config.json do_normalize False, the original computes "
                   "with True", "tie_last_hidden_states absent, the original computes with True")  # fmt: skip
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "failed"
    assert "first divergence at input waveform" in " ".join(result.stdout.split())
    fixed = tmp_path / "fixed"
    result = verify_s3prl(case, directory, "--fix-config", str(fixed))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert json.loads((fixed / "config.json").read_text())["tie_last_hidden_states"] is True
    assert json.loads((fixed / "preprocessor_config.json").read_text())["do_normalize"] is True
    assert verify_s3prl(case, fixed).returncode == 0


def test_a_large_upstream_head_without_the_tie_flag_alone_is_named_at_the_weighted_sum(
    large_upstream: tuple[S3PRLCase, Path], tmp_path: Path
) -> None:
    """Its extractor set right by hand: under transformers 5 it computes another weighted sum (the locator says so);
    under 4.57 it computes the right one, but the config still lacks what 5.x needs."""
    case, directory = large_upstream
    extractor = json.loads((directory / "preprocessor_config.json").read_text())
    (directory / "preprocessor_config.json").write_text(json.dumps({**extractor, "do_normalize": True}))
    result = verify_s3prl(case, directory)
    assert_refused(result, tmp_path / "none", "tie_last_hidden_states absent, the original computes with True")
    assert "do_normalize" not in final_message(result.stderr)
    outputs = check_result(result.stdout, "test_outputs_match_the_original_implementation")
    if MAJOR >= 5:
        assert outputs == "failed" and "first divergence at weighted sum" in result.stdout
    else:
        assert outputs == "passed"


def test_a_seed_style_base_upstream_head_verifies(s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    """do_normalize false is right for a base-size upstream (wav2vec2_base_960): s3prl fed it raw waveforms."""
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    directory = s3prl_directory(case.base, case.checkpoint, case.config, tmp_path / "seed")
    result = verify_s3prl(case, directory)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_a_report_of_a_verification(checkpoint: Path, tmp_path: Path) -> None:
    directory = seed_written(checkpoint, tmp_path)
    verify_ast(checkpoint, directory, "--report", str(tmp_path / "report"))
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (document["result"], document["exit_code"], document["output"]) == ("not verified", 1, None)
    assert any("layer_norm_eps 1e-12" in c["cause"] for c in document["checks"])
    assert os.path.getsize(tmp_path / "report" / "divergence.png") > 10_000
