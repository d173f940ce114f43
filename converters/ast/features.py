"""The original AST repository's input pipeline: what its model was fed for a recording.

YuanGongND/ast ``src/dataloader.py`` (``_wav2fbank``) and ``egs/audioset/inference.py``: torchaudio's kaldi fbank
(``htk_compat=True, sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins, dither=0.0,
frame_shift=10``), padded with zero frames or cut to the model's length, then ``(fbank - mean) / (2 * std)``.
(Training also subtracts the waveform's mean first; inference does not, and neither does transformers.)

The fbank is the original's own code, torchaudio's, where torchaudio loads beside the installed torch. Where
it does not (no torchaudio release loads beside torch 2.14), the fbank of each built-in recording is read from
``converters/data/recordings.npz``, computed by that same code (``tools/recordings.py``, ``tox -e recordings``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from converters.recordings import SAMPLING_RATE, Recording, metadata

KALDI = {"htk_compat": True, "sample_frequency": SAMPLING_RATE, "use_energy": False, "window_type": "hanning",
         "dither": 0.0, "frame_shift": 10}  # fmt: skip


@functools.cache
def torchaudio_fbank() -> Callable[..., torch.Tensor] | None:
    """``torchaudio.compliance.kaldi.fbank``, or None where torchaudio is not installed or does not load."""
    try:
        from torchaudio.compliance import kaldi
    except Exception:  # not installed, or built for another torch (its compiled extension fails to load)
        return None
    return kaldi.fbank  # type: ignore[no-any-return]


def torchaudio_version() -> str | None:
    from importlib import metadata as distributions

    try:
        return distributions.version("torchaudio")
    except distributions.PackageNotFoundError:
        return None


def transformers_fbank() -> str:
    """Which fbank transformers' ASTFeatureExtractor computes here: torchaudio's when it finds the package
    (``is_speech_available``), else its numpy implementation."""
    from transformers.utils import is_speech_available

    return "torchaudio's kaldi fbank" if is_speech_available() else "its numpy fbank (torchaudio is not installed)"


@torch.no_grad()
def original_fbank(waveform: np.ndarray, num_mel_bins: int, recording: Recording | None = None) -> tuple[Any, str]:
    """The original's fbank of ``waveform`` (frames x bins) and where it came from; ``(None, why)`` where it
    cannot be had: torchaudio does not load and the recording is not a built-in one (or not at that many bins)."""
    fbank = torchaudio_fbank()
    if fbank is not None:
        computed = fbank(torch.from_numpy(np.asarray(waveform, dtype=np.float32))[None], num_mel_bins=num_mel_bins,
                         **KALDI)  # fmt: skip
        return computed, f"torchaudio {torchaudio_version()}"
    stored = recording.fbank(num_mel_bins) if recording is not None else None
    if stored is None:
        what = f"{num_mel_bins} mel bins of {recording.name}" if recording is not None else "this recording"
        return None, f"torchaudio does not load here and no stored fbank holds {what}"
    return torch.from_numpy(stored), f"torchaudio {metadata()['torchaudio']}, stored (tools/recordings.py)"


def original_features(fbank: torch.Tensor, target_length: int, mean: float, std: float) -> torch.Tensor:
    """(1, target_length, bins): the fbank padded with zero frames or cut, then normalized as the original."""
    frames = fbank.shape[0]
    if frames < target_length:
        fbank = torch.nn.ZeroPad2d((0, 0, 0, target_length - frames))(fbank)
    else:
        fbank = fbank[:target_length, :]
    return ((fbank - mean) / (std * 2))[None].float()


def tolerance(num_mel_bins: int, std: float) -> float:
    """How far transformers' features may be from the original's: twice the float32 rounding of torchaudio's own
    fbank (its largest difference from the same computation in float64 over the built-in recordings, which
    ``tools/recordings.py`` measures), in normalized units. transformers' numpy fbank computes in float64, so it
    sits within that rounding of the exact value, as torchaudio's float32 one does."""
    rounding = metadata()["float32_rounding"]
    raw = rounding.get(str(num_mel_bins), max(rounding.values()))
    return 2 * float(raw) / (2 * std)
