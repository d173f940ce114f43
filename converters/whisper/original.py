"""The original: the openai-whisper package's own model and input pipeline, the independent reference a
conversion is checked against. Nothing here is shared with the transformers side (the harness's float32 widening
aside, which ``tests/test_whisper.py`` holds to ``whisper.load_model``'s own float32 model, bit for bit).

- the model: ``whisper.model.Whisper`` built from the checkpoint's ``dims``, holding the checkpoint's own tensors,
  computing in float32 as ``whisper.load_model`` builds it on a CPU (``in_float32``: one block widened at a time, so
  that a float16 checkpoint is not held twice; the comparison is of functions, not of rounding);
- its input: ``whisper.audio.log_mel_spectrogram`` of the recording padded or cut to 30 s (``pad_or_trim``), as
  ``whisper.transcribe`` hands a 30-second window to the encoder;
- its outputs: the decoder's logits under teacher forcing (``Whisper.forward(mel, tokens)``), on the token
  sequence ``prompt`` makes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from converters.locator import widened_in_turn
from converters.whisper.dims import Dims

TEXT_TOKENS = 12  # beside the prompt: text tokens drawn (seeded) below <|endoftext|>


def prompt(dims: Dims, seed: int = 0) -> torch.Tensor:
    """The decoder's input: the start of a transcription (multilingual: English, transcribe; no timestamps), then
    seeded text tokens, (1, tokens)."""
    start = [dims.special("<|startoftranscript|>")]
    if dims.multilingual:
        start += [dims.special("<|en|>"), dims.special("<|transcribe|>")]
    start.append(dims.special("<|notimestamps|>"))
    text = torch.randint(0, dims.end_of_text, (TEXT_TOKENS,), generator=torch.Generator().manual_seed(seed))
    tokens = torch.tensor(start + text.tolist())[: dims.n_text_ctx]
    return tokens[None, :]


def load_original(tensors: Mapping[str, torch.Tensor], dims: Dims) -> Any:
    """openai-whisper's model of ``dims`` holding the checkpoint's own tensors (run it ``in_float32``).

    ``Whisper.__init__`` builds its encoder and decoder and a sparse buffer of alignment heads, which the meta
    device (no memory for weights about to be replaced) cannot hold: the two are built there by the package's own
    classes, as ``__init__`` builds them, and the buffer beside them on the CPU, as ``__init__`` makes it."""
    from whisper.model import AudioEncoder, ModelDimensions, TextDecoder, Whisper

    model = Whisper.__new__(Whisper)
    torch.nn.Module.__init__(model)
    model.dims = ModelDimensions(**asdict(dims))
    with torch.device("meta"):
        model.encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head,
                                     dims.n_audio_layer)  # fmt: skip
        model.decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head,
                                    dims.n_text_layer)  # fmt: skip
    heads = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    heads[dims.n_text_layer // 2 :] = True
    model.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
    model.load_state_dict(dict(tensors), strict=True, assign=True)
    # the decoder's causal mask is no saved buffer: made as TextDecoder makes it
    mask = torch.empty(dims.n_text_ctx, dims.n_text_ctx).fill_(-np.inf).triu_(1)
    model.decoder.register_buffer("mask", mask, persistent=False)
    return model.eval()


def in_float32(model: Any) -> contextlib.AbstractContextManager[Any]:
    """openai-whisper's model computing in float32, as ``whisper.load_model`` makes it on a CPU (its ``Whisper`` is
    built in float32 and the checkpoint copied in); its blocks widened in turn. Widening matters beyond the blocks'
    own casts: its decoder adds token and position embeddings in their own dtype."""
    return widened_in_turn(model, [*model.encoder.blocks, *model.decoder.blocks], torch.float32)


def original_features(waveform: np.ndarray, n_mels: int) -> torch.Tensor:
    """openai-whisper's input for a recording: the log-Mel spectrogram of its 30-second window, (1, mels, 3000)."""
    from whisper.audio import log_mel_spectrogram, pad_or_trim

    audio = pad_or_trim(torch.from_numpy(np.asarray(waveform, dtype=np.float32)))
    return log_mel_spectrogram(audio, n_mels)[None]


def original_logits(model: Any, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), in_float32(model):
        return model(features, tokens)
