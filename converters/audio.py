"""Audio in: reading a recording, and the feature extractor a user loads from a converted directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionError, first_line

SAMPLING_RATE = 16000


def read_audio(path: Path) -> np.ndarray:
    """A mono 16 kHz waveform as float32 in [-1, 1]; other rates are refused rather than resampled."""
    import soundfile

    try:
        waveform, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own LibsndfileError, RuntimeError, OSError
        raise ConversionError(f"sample audio {path} cannot be read: {first_line(error)}") from None
    if rate != SAMPLING_RATE:
        raise ConversionError(f"sample audio {path} is sampled at {rate} Hz; the models expect {SAMPLING_RATE} Hz")
    if waveform.shape[1] != 1:
        raise ConversionError(f"sample audio {path} has {waveform.shape[1]} channels; expected mono")
    return np.ascontiguousarray(waveform[:, 0])


def probe_signal(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal: a gliding harmonic tone in noise, 16 kHz.

    Used as model input where no recording is given, so that the equivalence check sees a spectrogram
    with structure rather than only flat noise.
    """
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    pitch = 120.0 + 80.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    noise = np.random.default_rng(seed).normal(0.0, 0.02, t.shape)
    return (0.2 * voice + noise).astype(np.float32)


def directory_extractor(directory: Path) -> Any:
    """The directory's feature extractor, loaded as a user loads it (``AutoFeatureExtractor.from_pretrained``):
    the first half of the function a user calls."""
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(directory)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConversionError(
            f"{directory}: its feature extractor (preprocessor_config.json) cannot be loaded: {first_line(error)}"
        ) from None
