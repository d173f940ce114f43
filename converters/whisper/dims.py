"""What an original checkpoint's ``dims`` fix: transformers' ``WhisperConfig``, the special tokens' ids, and the
generation config; and what its tensors say of the same numbers (a checkpoint whose ``dims`` disagree with its
tensors is refused before anything is written).

openai-whisper's ``ModelDimensions`` (``whisper/model.py``): ``n_mels, n_audio_ctx, n_audio_state, n_audio_head,
n_audio_layer, n_vocab, n_text_ctx, n_text_state, n_text_head, n_text_layer``. The special tokens follow the base
encoding, in the order of openai-whisper's ``tokenizer.get_encoding``: ``<|endoftext|>``, ``<|startoftranscript|>``,
one token per language, ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``,
``<|nospeech|>``, ``<|notimestamps|>``, then 1501 timestamps; a model's ``n_vocab`` is that encoding's length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from converters.derivation import Field
from converters.errors import ConversionError

TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>
CONTROL = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>")
SMALLEST_VOCAB = 51864  # English-only: the GPT-2 encoding (50256 tokens) and its specials, 99 languages' among them
MULTILINGUAL_VOCAB = 51865  # whisper.model.Whisper.is_multilingual: n_vocab >= 51865


@dataclass(frozen=True)
class Dims:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @classmethod
    def of(cls, dims: Any, where: str) -> Dims:
        """A checkpoint's ``dims`` entry (a dict of ints), or a refusal naming what is missing or not a count."""
        if not isinstance(dims, Mapping):
            raise ConversionError(f"{where} has no 'dims' entry of openai-whisper's ModelDimensions (found "
                                  f"{type(dims).__name__})")  # fmt: skip
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in dims]
        if missing:
            raise ConversionError(f"{where}: dims lacks {', '.join(missing)}")
        wrong = [name for name in names if not isinstance(dims[name], int) or dims[name] <= 0]
        if wrong:
            raise ConversionError(f"{where}: dims {wrong[0]} is {dims[wrong[0]]!r}, not a positive count")
        return cls(**{name: int(dims[name]) for name in names})

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= MULTILINGUAL_VOCAB

    @property
    def num_languages(self) -> int:
        """As ``whisper.model.Whisper.num_languages`` counts them."""
        return self.n_vocab - 51765 - int(self.multilingual)

    @property
    def end_of_text(self) -> int:
        """``<|endoftext|>``: the first special token, after the base encoding."""
        return self.n_vocab - (2 + self.num_languages + len(CONTROL) + TIMESTAMPS)

    def special(self, token: str) -> int:
        """A special token's id (``<|startoftranscript|>``, ``<|en|>``, ``<|transcribe|>``, ...)."""
        from transformers.models.whisper.tokenization_whisper import LANGUAGES  # openai-whisper's, in its order

        languages = [f"<|{code}|>" for code in list(LANGUAGES)[: self.num_languages]]
        order = ["<|endoftext|>", "<|startoftranscript|>", *languages, *CONTROL]
        return self.end_of_text + order.index(token)


def check_supported(dims: Dims, where: str) -> None:
    """What transformers' Whisper cannot hold: one width for encoder and decoder; a vocabulary smaller than an
    encoding with its special tokens."""
    if dims.n_audio_state != dims.n_text_state:
        raise ConversionError(
            f"{where}: dims n_audio_state {dims.n_audio_state} and n_text_state {dims.n_text_state} differ; "
            "transformers' WhisperConfig has one d_model for encoder and decoder"
        )
    if dims.n_vocab < SMALLEST_VOCAB:
        raise ConversionError(
            f"{where}: dims n_vocab {dims.n_vocab} is smaller than any openai-whisper encoding with its special "
            f"tokens ({SMALLEST_VOCAB}): their ids cannot be derived"
        )


def declared(dims: Dims, tensors: Mapping[str, Any]) -> dict[str, tuple[int, int | None]]:
    """Each number ``dims`` declares that the tensors also fix: name -> (declared, found in the tensors; None where
    the tensor is missing, which the key checks name)."""

    def rows(key: str, axis: int = 0) -> int | None:
        tensor = tensors.get(key)
        return int(tensor.shape[axis]) if tensor is not None and tensor.dim() > axis else None

    def count(prefix: str) -> int | None:
        found = {int(m.group(1)) for key in tensors if (m := re.match(re.escape(prefix) + r"(\d+)\.", key))}
        return max(found) + 1 if found else None

    return {
        "n_mels": (dims.n_mels, rows("encoder.conv1.weight", 1)),
        "n_audio_ctx": (dims.n_audio_ctx, rows("encoder.positional_embedding")),
        "n_audio_state": (dims.n_audio_state, rows("encoder.conv1.weight")),
        "n_audio_layer": (dims.n_audio_layer, count("encoder.blocks.")),
        "n_vocab": (dims.n_vocab, rows("decoder.token_embedding.weight")),
        "n_text_ctx": (dims.n_text_ctx, rows("decoder.positional_embedding")),
        "n_text_state": (dims.n_text_state, rows("decoder.token_embedding.weight", 1)),
        "n_text_layer": (dims.n_text_layer, count("decoder.blocks.")),
    }


def hf_config(dims: Dims, dtype: Any) -> Any:
    """transformers' ``WhisperConfig`` for ``dims``; the MLPs are 4 x the width (openai-whisper's ``n_mlp``)."""
    from transformers import WhisperConfig

    eot = dims.end_of_text
    return WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        encoder_ffn_dim=4 * dims.n_audio_state,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=dims.special("<|startoftranscript|>"),
        tie_word_embeddings=True,  # openai-whisper's logits are against the token embedding
        architectures=["WhisperForConditionalGeneration"],
        dtype=dtype,  # the checkpoint's own: published checkpoints are float16, written as they are
    )


def generation_config(dims: Dims) -> Any:
    """What ``generate`` needs that ``dims`` fix: the special tokens, the languages and tasks, the length. Not
    written (they need openai-whisper's tokenizer files, or are known for its published models only):
    ``suppress_tokens`` and ``alignment_heads``."""
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    eot = dims.end_of_text
    found: dict[str, Any] = {
        "decoder_start_token_id": dims.special("<|startoftranscript|>"),
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": dims.n_text_ctx,
        "begin_suppress_tokens": [220, eot],  # openai-whisper's SuppressBlank: " " and <|endoftext|>
        "no_timestamps_token_id": dims.special("<|notimestamps|>"),
        "prev_sot_token_id": dims.special("<|startofprev|>"),
        "is_multilingual": dims.multilingual,
    }
    if dims.multilingual:
        found["lang_to_id"] = {
            f"<|{code}|>": dims.special(f"<|{code}|>") for code in list(LANGUAGES)[: dims.num_languages]
        }
        found["task_to_id"] = {task: dims.special(f"<|{task}|>") for task in ("transcribe", "translate")}
    return GenerationConfig(**found)


def dims_fields(dims: Dims) -> tuple[Field, ...]:
    """Where the config's numbers came from, as the report lists them."""
    said = "the checkpoint's dims"
    return (
        Field("d_model", dims.n_audio_state, f"{said}: n_audio_state"),
        Field("encoder_layers", dims.n_audio_layer, f"{said}: n_audio_layer"),
        Field("decoder_layers", dims.n_text_layer, f"{said}: n_text_layer"),
        Field("encoder_attention_heads", dims.n_audio_head, f"{said}: n_audio_head"),
        Field("decoder_attention_heads", dims.n_text_head, f"{said}: n_text_head"),
        Field("vocab_size", dims.n_vocab, f"{said}: n_vocab ({'multilingual' if dims.multilingual else 'English'})"),
        Field("eos_token_id", dims.end_of_text, "<|endoftext|>: after the base encoding, from n_vocab"),
        Field("decoder_start_token_id", dims.special("<|startoftranscript|>"), "<|startoftranscript|>"),
    )
