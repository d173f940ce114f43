"""Reading sample audio: 16 kHz mono as float32 in [-1, 1], anything else refused with its cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from converters.audio import SAMPLING_RATE, probe_signal, read_audio
from converters.errors import ConversionError


def test_integer_samples_are_read_as_floats_in_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "int16.wav"
    soundfile.write(path, np.array([0, 16384, -32768], dtype=np.int16), SAMPLING_RATE, subtype="PCM_16")
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and waveform.tolist() == [0.0, 0.5, -1.0]


def test_another_sampling_rate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "8k.wav"
    soundfile.write(path, np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(ConversionError) as refused:
        read_audio(path)
    assert str(refused.value) == f"sample audio {path} is sampled at 8000 Hz; the models expect 16000 Hz"


def test_more_than_one_channel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.zeros((1600, 3), dtype=np.float32), SAMPLING_RATE)
    with pytest.raises(ConversionError) as refused:
        read_audio(path)
    assert str(refused.value) == f"sample audio {path} has 3 channels; expected mono"


def test_a_file_that_is_not_audio_is_refused_with_the_readers_reason(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ConversionError, match=rf"^sample audio {path} cannot be read: .*[Ff]ormat not recogni[sz]ed"):
        read_audio(path)


def test_the_probe_signal_is_deterministic_speech_like_and_as_long_as_asked() -> None:
    probe = probe_signal(0.5, seed=3)
    assert probe.dtype == np.float32 and probe.shape == (8000,)
    assert np.array_equal(probe, probe_signal(0.5, seed=3)) and not np.array_equal(probe, probe_signal(0.5, seed=4))
    assert 0.05 < float(np.abs(probe).max()) < 1.0
