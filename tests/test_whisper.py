"""The Whisper converter beyond the contract every converter passes (tests/test_converters.py): its special
tokens against openai-whisper's own tokenizer, its key mapping (hypothesis: exactly transformers' keys at any
depths, an exact round trip), a checkpoint whose dims disagree with its tensors, a mapping that computes otherwise
located, a published name fetched from a stand-in host, and a directory written the way transformers' own script
writes it verified."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.mapping import KeyMapping, Rename
from converters.whisper.dims import generation_config
from converters.whisper.example import EXAMPLE, TINY, original_model, write_checkpoint
from converters.whisper.mapping import WHISPER_MAPPING
from fixtures import commands
from fixtures.commands import assert_refused, check_result, final_message

WHISPER = "convert-whisper-checkpoint"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("whisper") / "tiny.pt")


@pytest.mark.parametrize("n_vocab", [51864, 51865, 51866])  # English-only; multilingual v1/v2; v3 (100 languages)
def test_the_special_tokens_are_openai_whispers_own(n_vocab: int) -> None:
    """Derived from the vocabulary's size alone, every id is what openai-whisper's tokenizer gives it."""
    from whisper.tokenizer import get_tokenizer

    dims = dataclasses.replace(TINY, n_vocab=n_vocab)
    theirs = get_tokenizer(dims.multilingual, num_languages=dims.num_languages)
    assert dims.end_of_text == theirs.eot and dims.special("<|startoftranscript|>") == theirs.sot
    assert dims.special("<|notimestamps|>") == theirs.no_timestamps
    assert dims.special("<|startofprev|>") == theirs.sot_prev
    found = generation_config(dims)
    if dims.multilingual:
        assert found.task_to_id == {"transcribe": theirs.transcribe, "translate": theirs.translate}
        assert len(found.lang_to_id) == dims.num_languages == len(theirs.all_language_tokens)
        assert sorted(found.lang_to_id.values()) == sorted(theirs.all_language_tokens)
    assert found.decoder_start_token_id == theirs.sot and found.eos_token_id == theirs.eot


depths = st.fixed_dictionaries({"e": st.integers(1, 5), "d": st.integers(1, 5)})


@settings(deadline=None, max_examples=20)
@given(depths=depths)
def test_mapped_keys_are_exactly_the_serialized_hf_keys(depths: dict[str, int]) -> None:
    from transformers import WhisperForConditionalGeneration

    from converters.hub_layout import serialized_state
    from converters.whisper.dims import hf_config

    dims = dataclasses.replace(TINY, n_audio_layer=depths["e"], n_text_layer=depths["d"])
    with torch.device("meta"):
        expected = serialized_state(WhisperForConditionalGeneration(hf_config(dims, torch.float32)))
    assert set(WHISPER_MAPPING.target_keys(depths)) == set(expected)


@settings(deadline=None, max_examples=10)
@given(depths=depths, seed=st.integers(0, 2**31))
def test_original_to_hf_to_original_is_exact(depths: dict[str, int], seed: int) -> None:
    dims = dataclasses.replace(TINY, n_audio_layer=depths["e"], n_text_layer=depths["d"], n_vocab=51864)
    source = original_model(dims, seed).state_dict()
    back = WHISPER_MAPPING.inverse().apply(WHISPER_MAPPING.apply(source))
    assert back.keys() == source.keys() and all(torch.equal(back[key], source[key]) for key in back)


def test_the_original_held_in_float16_computes_what_whisper_load_model_builds_on_a_cpu() -> None:
    """The reference keeps a float16 checkpoint's own tensors and widens a block at a time; openai-whisper's
    ``load_model`` builds a float32 ``Whisper`` and copies the checkpoint in: the logits are the same, bit for bit."""
    from whisper.model import ModelDimensions, Whisper

    from converters.whisper.original import load_original, original_logits, prompt

    state = original_model(TINY, seed=3).half().state_dict()
    theirs = Whisper(ModelDimensions(**dataclasses.asdict(TINY)))
    theirs.load_state_dict(state)
    features, tokens = torch.randn(1, TINY.n_mels, 3000), prompt(TINY)
    with torch.no_grad():
        expected = theirs.eval()(features, tokens)
    ours = load_original(state, TINY)
    assert torch.equal(original_logits(ours, features, tokens), expected)
    assert all(tensor.dtype == torch.float16 for tensor in ours.state_dict().values())


def test_dims_that_disagree_with_the_tensors_are_refused_before_anything_is_written(
    checkpoint: Path, tmp_path: Path
) -> None:
    edited = torch.load(checkpoint, weights_only=True)
    edited["dims"] = {**edited["dims"], "n_text_layer": 3, "n_audio_state": 32}
    torch.save(edited, tmp_path / "edited.pt")
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--checkpoint_path", str(tmp_path / "edited.pt"), "--pytorch_dump_folder_path",
                          str(output))  # fmt: skip
    assert_refused(result, output, "check test_the_checkpoints_metadata_fits_its_tensors failed",
                   "declares n_audio_state 32, its tensors hold 16; n_text_layer 3, its tensors hold 2")  # fmt: skip


@pytest.mark.parametrize(
    ("dims", "said"),
    [
        ({"n_mels": 80}, "dims lacks n_audio_ctx"),
        ({**dataclasses.asdict(TINY), "n_vocab": -3}, "dims n_vocab is -3, not a positive count"),
    ],
)
def test_dims_transformers_cannot_hold_are_refused_naming_the_field(
    checkpoint: Path, tmp_path: Path, dims: dict[str, Any], said: str
) -> None:
    edited = torch.load(checkpoint, weights_only=True)
    edited["dims"] = dims
    torch.save(edited, tmp_path / "edited.pt")
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--checkpoint_path", str(tmp_path / "edited.pt"), "--pytorch_dump_folder_path",
                          str(output))  # fmt: skip
    assert_refused(result, output, said)


def test_a_vocabulary_too_small_for_the_special_tokens_is_refused(tmp_path: Path) -> None:
    """Consistent dims and tensors, but no openai-whisper encoding fits 1000 tokens: their ids cannot be derived."""
    small = write_checkpoint(tmp_path / "small-vocab.pt", dataclasses.replace(TINY, n_vocab=1000))
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--checkpoint_path", str(small), "--pytorch_dump_folder_path", str(output))
    assert_refused(result, output, "dims n_vocab 1000 is smaller than any openai-whisper encoding")


def test_a_state_dict_without_dims_is_named_no_whisper_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    torch.save(torch.load(checkpoint, weights_only=True)["model_state_dict"], tmp_path / "bare.pt")
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--checkpoint_path", str(tmp_path / "bare.pt"), "--pytorch_dump_folder_path",
                          str(output))  # fmt: skip
    assert_refused(result, output, "is no openai-whisper checkpoint: it has no 'model_state_dict' beside 'dims'")


def swapped_mapping() -> KeyMapping:
    """The mapping with decoder block 1's self-attention query and key weights swapped (their shapes agree)."""
    swap = {"decoder.blocks.{d}.attn.query.weight": "model.decoder.layers.{d}.self_attn.k_proj.weight",
            "decoder.blocks.{d}.attn.key.weight": "model.decoder.layers.{d}.self_attn.q_proj.weight"}  # fmt: skip
    rules = tuple(Rename(rule.sources[0], swap[rule.sources[0]]) if rule.sources[0] in swap else rule
                  for rule in WHISPER_MAPPING.rules)  # fmt: skip
    return KeyMapping(rules, WHISPER_MAPPING.ties)


def test_a_mapping_that_computes_otherwise_is_located_at_the_first_decoder_block(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """q and k swapped in every decoder block (a bias of q's stays with q): the encoder agrees stage by stage, the
    decoder's input too, and the first decoder block is where the two part."""
    from converters.whisper import conversion

    monkeypatch.setattr(conversion, "WHISPER_MAPPING", swapped_mapping())
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--pytorch_dump_folder_path", str(output))
    assert_refused(result, output, "logits differ from openai-whisper's by", "first divergence at decoder block 0:")
    table = result.stdout[result.stdout.index("stage") :]
    assert "encoder norm" in table and "decoder input" in table


def test_a_published_name_fetches_the_original(
    checkpoint: Path, online: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model_name tiny`` fetches the address openai-whisper lists (a stand-in host here) into torch.hub's cache."""
    from converters.whisper import converter, published

    url = online.add_file("tiny.pt", checkpoint.read_bytes())
    monkeypatch.setattr(converter, "address", lambda name: url)
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--model_name", "tiny", "--pytorch_dump_folder_path", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"fetched {url} into " in " ".join(result.stdout.split())
    assert "tiny" in published.PUBLISHED


def test_an_unknown_published_name_is_refused_suggesting_the_nearest(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = commands.run(WHISPER, "--model_name", "smal", "--pytorch_dump_folder_path", str(output))
    assert_refused(result, output, "unknown model name 'smal'; did you mean 'small'?")


def test_a_directory_written_as_transformers_script_writes_it_verifies_and_says_what_it_lacks(
    checkpoint: Path, tmp_path: Path
) -> None:
    """The script's way: a random model, load_state_dict, save_pretrained, and the feature extractor its
    --convert_preprocessor writes. --verify holds it to openai-whisper's model from the recording."""
    written = tmp_path / "script"
    EXAMPLE.unchecked({"checkpoint_path": checkpoint}, written)
    result = commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--verify", str(written))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert final_message(result.stdout).endswith("it computes what the original computes")
    assert "not written: the tokenizer" in " ".join(result.stdout.split())


def test_the_written_generation_config_is_what_transformers_generate_reads(checkpoint: Path, tmp_path: Path) -> None:
    """generate() with a language and a task finds them in the written generation config (without its lang_to_id,
    it refuses them)."""
    from transformers import WhisperForConditionalGeneration

    output = tmp_path / "out"
    assert commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--pytorch_dump_folder_path",
                        str(output)).returncode == 0  # fmt: skip
    model = WhisperForConditionalGeneration.from_pretrained(output).float().eval()
    features = torch.zeros(1, TINY.n_mels, 3000)
    assert model.generate(features, language="en", task="transcribe", max_new_tokens=2).shape[0] == 1
    del model.generation_config.lang_to_id
    with pytest.raises((ValueError, AttributeError)):
        model.generate(features, language="en", task="transcribe", max_new_tokens=2)


def test_a_directory_without_a_feature_extractor_is_told_which_fields_and_fixed(
    checkpoint: Path, tmp_path: Path
) -> None:
    """transformers' script without --convert_preprocessor writes no preprocessor_config.json: --verify names every
    field it lacks, and --fix-config writes a copy holding them, which verifies."""
    written = tmp_path / "script"
    EXAMPLE.unchecked({"checkpoint_path": checkpoint}, written)
    (written / "preprocessor_config.json").unlink()
    refused = commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--verify", str(written))
    said = final_message(refused.stderr)
    assert (
        refused.returncode == 1
        and "preprocessor_config.json feature_size absent, the original computes with 80" in said
    )
    fixed = tmp_path / "fixed"
    done = commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--verify", str(written), "--fix-config",
                        str(fixed))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--verify", str(fixed)).returncode == 0


def test_special_tokens_one_below_openai_whispers_are_named(checkpoint: Path, tmp_path: Path) -> None:
    """As transformers' own script writes them for a multilingual v1/v2 vocabulary (``50257 if n_vocab > 51865 else
    50256``): <|endoftext|> one below openai-whisper's tokenizer, the transcription started with it."""
    written = tmp_path / "script"
    EXAMPLE.unchecked({"checkpoint_path": checkpoint}, written)
    config = json.loads((written / "config.json").read_text())
    (written / "config.json").write_text(json.dumps({**config, "eos_token_id": 50256, "decoder_start_token_id": 50257}))
    refused = commands.run(WHISPER, "--checkpoint_path", str(checkpoint), "--verify", str(written))
    said = final_message(refused.stderr)
    assert "decoder_start_token_id 50257, the original computes with 50258" in said
    assert "eos_token_id 50256, the original computes with 50257" in said
